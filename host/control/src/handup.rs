//! Handing up: how an agent keeps healing when its link is down, and what it cannot heal
//! alone reaches a human anyway.
//!
//! An agent runs its own control plane ([`ControlConfig::hand_up`](super::ControlConfig)):
//! incidents from the host's local intake go through the same L1 rules and guardrails as
//! at the fleet's control plane — kept on the host and persisted in its store — and a run
//! goes to the host's own executor, signed into the host's log. What L1 cannot finish
//! there (no rule matched, or a guardrail wants a human) is *handed up*: stored as
//! `handed-up` with what it needs ([`HandedUpFor`]) and sent to the fleet's control plane
//! once the link is up ([`Controller::hand_ups`]). Before it is sent, it is re-checked: a
//! later incident of the same kind that a run healed on the host means it is no longer
//! happening, and it is closed on the host instead.
//!
//! The fleet's control plane takes it ([`Controller::take_hand_up`]) as an incident of the
//! host's tenant: one needing a plan goes through its tiers (L1, L2, L3); one a guardrail
//! escalated, or one waiting for an approval, opens the escalation there, where a human
//! decides, and an approved run is dispatched to the host like any other.

use super::{ControlError, Controller, Result, ev_ms, now_ms, parse_record};
use runwarden_proto::bus::HandUp;
use runwarden_proto::{HandedUpFor, IncidentRecord, IncidentStatus as St, Tier, Verdict};

/// What an agent's control plane appends to the reason of what it hands up.
const HANDED_UP: &str = " (handed to the control plane)";

/// Longest incident id taken from an agent.
const MAX_ID: usize = 64;

impl Controller {
    /// Incidents this agent's control plane handed up and has not yet sent, oldest
    /// first, at most `limit`, each re-checked first: one a later run on this host healed
    /// (an incident of the same kind, received after it) is closed here, recorded, and not
    /// sent. Mark each one the fleet's control plane took with
    /// [`Controller::hand_up_sent`].
    pub async fn hand_ups(&self, limit: u32) -> Result<Vec<HandUp>> {
        let now = now_ms();
        let mut out = Vec::new();
        for json in self.store.pending_hand_ups(limit).await? {
            let mut rec = parse_record(&json)?;
            let received = ev_ms(&rec.received_at);
            if let Some(later) = self
                .store
                .healed_since(&rec.tenant, &rec.fingerprint, received)
                .await?
            {
                let tier = rec.tier;
                Self::end(
                    &mut rec,
                    tier,
                    St::NoOp,
                    format!(
                        "not handed up: incident {later}, of the same kind on this host and \
                         received later, was healed while this one waited for the link"
                    ),
                );
                self.record_undecided(&mut rec, "no longer happening: healed since", now)
                    .await?;
                self.save(&mut rec, received).await?;
                continue;
            }
            out.push(HandUp {
                record: rec,
                waited_ms: (now - received).max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Note that the fleet's control plane took hand-up `id`: it is not sent again.
    pub async fn hand_up_sent(&self, id: &str) -> Result<()> {
        Ok(self.store.hand_up_sent(id, now_ms()).await?)
    }

    /// At the fleet's control plane: take an incident `host`'s agent handed up, as an
    /// incident of the host's tenant (same id). Taking one again answers what was made of
    /// it the first time.
    pub async fn take_hand_up(&self, host: &str, up: HandUp) -> Result<IncidentRecord> {
        let theirs = up.record;
        let Some(h) = self.hosts.get(host) else {
            return Err(ControlError::NotFound(format!(
                "host {host} is not enrolled here"
            )));
        };
        let tenant = h.tenant.clone();
        if theirs.tenant != tenant || theirs.incident.host != host {
            return Err(ControlError::BadRequest(format!(
                "host {host} of tenant {tenant} handed up an incident of tenant {:?} on host {:?}",
                theirs.tenant, theirs.incident.host
            )));
        }
        let (St::HandedUp, Some(need)) = (theirs.status, theirs.handed_up) else {
            return Err(ControlError::BadRequest(format!(
                "incident {:?} from host {host} was not handed up (status {})",
                theirs.id, theirs.status
            )));
        };
        if theirs.id.is_empty()
            || theirs.id.len() > MAX_ID
            || !theirs
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ControlError::BadRequest(format!(
                "a handed-up incident id must be up to {MAX_ID} letters, digits and -"
            )));
        }
        // The agent sends again until it hears that this was taken.
        if let Some((t, h)) = self.store.incident_owner(&theirs.id).await? {
            if t == tenant && h == host {
                return self.incident(&tenant, &theirs.id).await?.ok_or_else(|| {
                    ControlError::NotFound(format!("incident {} vanished", theirs.id))
                });
            }
            return Err(ControlError::Conflict(format!(
                "incident id {} is another host's",
                theirs.id
            )));
        }
        let mut rec = self.prepare(&tenant, theirs.incident).await?;
        rec.id = theirs.id;
        rec.handed_up = Some(need);
        let waited = if up.waited_ms >= 60_000 {
            format!(
                "; it waited {} min on the host for the link — check it is still happening",
                up.waited_ms / 60_000
            )
        } else {
            String::new()
        };
        let status = match need {
            // The tiers here decide: rules the host may not have, the planner, a human.
            HandedUpFor::Plan => return self.finish(rec, None).await,
            HandedUpFor::Escalation => St::Escalated,
            HandedUpFor::Approval => St::AwaitingApproval,
        };
        let now = now_ms();
        rec.decision = theirs.decision;
        // The host's verdicts are shown, never trusted: none of them names a person's
        // decision on an escalation (only this control plane's approvals do).
        rec.guardrails = theirs
            .guardrails
            .into_iter()
            .map(|v| Verdict {
                escalation: None,
                ..v
            })
            .collect();
        rec.runs = theirs.runs;
        let reason = theirs
            .reason
            .strip_suffix(HANDED_UP)
            .unwrap_or(&theirs.reason);
        Self::end(
            &mut rec,
            Tier::L3,
            status,
            format!("{reason} (decided on host {host}{waited})"),
        );
        self.record_undecided(&mut rec, "handed up by the host's agent", now)
            .await?;
        self.save(&mut rec, now).await?;
        Ok(rec)
    }
}

/// The reason an agent's control plane gives what it hands up.
pub(crate) fn handed_up(reason: &str) -> String {
    format!("{reason}{HANDED_UP}")
}
