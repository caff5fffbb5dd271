//! `runwarden report monthly`: a tenant's month for its clinic owner, as HTML and PDF,
//! with the figures signed and the evidence checkpoint they were taken at.

use anyhow::Context;
use clap::Subcommand;
use runwarden_control::store::{ControlStore, MonthEscalation, MonthIncident, MonthRun};
use runwarden_evidence as ev;
use runwarden_report::{self as report, Figures, tz::Zone};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// DSSE payload type of the signed figures.
pub const FIGURES_PAYLOAD_TYPE: &str = "application/vnd.runwarden.monthly-report+json";

#[derive(Subcommand)]
pub enum ReportCommand {
    /// A tenant's month: incidents by tier, share healed automatically, time to heal,
    /// escalations and SLA kept, recurring problems, hosts needing attention, rules the
    /// flywheel promoted. Writes DIR/report.html, DIR/report.pdf (the same bytes for the
    /// same figures), DIR/figures.json and DIR/figures.dsse.json (the figures and the
    /// evidence checkpoint they were taken at, signed by the log's key).
    Monthly {
        /// The tenant (clinic).
        #[arg(long)]
        tenant: String,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The clinic's time zone (IANA name, e.g. Europe/Berlin): the month's bounds
        /// and every time shown are in it.
        #[arg(long, env = "RUNWARDEN_TIME_ZONE", default_value = "UTC")]
        time_zone: String,
        /// Key that signs the figures and the checkpoint: as for `evidence export`.
        #[arg(long, env = "RUNWARDEN_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
    },
}

pub fn run(
    cmd: ReportCommand,
    data_dir: &Path,
    log: &crate::evidence::LogArgs,
) -> anyhow::Result<ExitCode> {
    let ReportCommand::Monthly {
        tenant,
        month,
        out,
        time_zone,
        signing_key,
    } = cmd;
    let zone = Zone::load(&time_zone)?;
    let (from_ms, to_ms) = zone.month_bounds(&month)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (figures, key) = rt.block_on(async {
        let database = match &log.evidence_db {
            Some(t) => t.clone(),
            None => data_dir.join("evidence.db").display().to_string(),
        };
        if !database.contains("://") && !Path::new(&database).exists() {
            anyhow::bail!(
                "no database at {database}: run the report where runwarden up or server keeps its state (--data-dir, --database)"
            );
        }
        let store = crate::evidence::open_store(data_dir, log).await?;
        let control = ControlStore::open(&database).await?;
        let key = crate::evidence::export_key(data_dir, signing_key.as_deref(), &store).await?;
        // The checkpoint first: the figures are of what the log held by then.
        let size = store.size().await?;
        let cp = ev::Checkpoint {
            origin: ev::log_origin(key.name()),
            size,
            root: store.root_at(size).await?,
        };
        let note = cp.sign(&key)?;
        store.put_checkpoint(size, &cp.root, &note).await?;
        let mut month_data = Month::new(&zone, &month, from_ms, to_ms)?;
        control
            .month_incidents(&tenant, from_ms, to_ms, |i| month_data.incident(i))
            .await?;
        // Runs that healed an incident of the month may end after it: a week's grace.
        // Until the grace is over the figures are provisional, taken as of now; after it
        // they are final, taken as of its end, and the same log gives the same report
        // (the same PDF, byte for byte) whenever it is made.
        let closed_at = to_ms + GRACE_MS;
        let as_of = now_ms().min(closed_at);
        let runs = control.month_runs(&tenant, from_ms, closed_at).await?;
        let escalations = control.month_escalations(&tenant, from_ms, to_ms).await?;
        let promoted = store
            .list(&ev::Filter {
                since_ms: Some(from_ms),
                until_ms: Some(to_ms),
                status: Some("promoted".into()),
                tenant: Some(tenant.clone()),
                ..Default::default()
            })
            .await?;
        let mut figures = month_data.finish(&runs, &escalations, as_of);
        figures.tenant = tenant.clone();
        figures.time_zone = time_zone.clone();
        figures.as_of = zone.local(as_of);
        figures.provisional = as_of < closed_at;
        figures.promoted_rules = promoted
            .iter()
            .map(|r| report::Promotion {
                rule: r.runbook.strip_prefix("rule:").unwrap_or(&r.runbook).to_string(),
                at: zone.local(r.started_at_ms),
            })
            .collect();
        figures.checkpoint = report::CheckpointRef {
            origin: cp.origin.clone(),
            tree_size: size,
            root: ev::hash_hex(&cp.root),
            note,
        };
        anyhow::Ok((figures, key))
    })?;
    ev::create_private_dir(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_vec_pretty(&figures)?;
    let signed = ev::Envelope::sign(FIGURES_PAYLOAD_TYPE, &json, &key);
    for (name, bytes) in [
        ("figures.json", json.clone()),
        ("figures.dsse.json", signed.to_json().into_bytes()),
        ("report.html", report::html::render(&figures).into_bytes()),
        ("report.pdf", report::pdf::render(&figures)),
    ] {
        let path = out.join(name);
        ev::write_atomic(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    outln!(
        "report of {} for {} ({}): {} incidents, {} healed automatically; written to {} (report.html, report.pdf, figures.json, figures.dsse.json), at checkpoint {} of {}",
        month,
        tenant,
        time_zone,
        figures.incidents,
        figures.healed_automatically,
        out.display(),
        figures.checkpoint.tree_size,
        figures.checkpoint.origin
    );
    Ok(ExitCode::SUCCESS)
}

/// How long after a month its runs are still counted (a run that healed one of its
/// incidents may end after it); the month's figures are final after that.
const GRACE_MS: i64 = 7 * 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The month's tallies, added to incident by incident.
struct Month<'z> {
    zone: &'z Zone,
    month: String,
    days: BTreeMap<String, report::Day>,
    /// Received at and host, by incident id (for time to heal and hosts).
    incidents: HashMap<String, i64>,
    tiers: BTreeMap<String, report::TierRow>,
    recurring: HashMap<(String, String, String), (u64, u64)>,
    hosts: BTreeMap<String, report::HostRow>,
    count: u64,
    healed: u64,
    healed_automatically: u64,
}

impl<'z> Month<'z> {
    fn new(zone: &'z Zone, month: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<Month<'z>> {
        // Every local day of the month, even a day with nothing on it.
        let mut days = BTreeMap::new();
        let mut t = from_ms;
        while t < to_ms {
            let date = zone.local_date(t);
            if date.starts_with(month) {
                days.entry(date.clone()).or_insert_with(|| report::Day {
                    date,
                    ..Default::default()
                });
            }
            t += 3_600_000;
        }
        Ok(Month {
            zone,
            month: month.to_string(),
            days,
            incidents: HashMap::new(),
            tiers: ["L1", "L2", "L3"]
                .into_iter()
                .map(|t| {
                    (
                        t.to_string(),
                        report::TierRow {
                            tier: t.to_string(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            recurring: HashMap::new(),
            hosts: BTreeMap::new(),
            count: 0,
            healed: 0,
            healed_automatically: 0,
        })
    }

    fn incident(&mut self, i: MonthIncident) {
        self.count += 1;
        let healed = i.status == "healed";
        let failed = i.status == "failed";
        self.healed += u64::from(healed);
        if healed && matches!(i.tier.as_str(), "L1" | "L2") {
            self.healed_automatically += 1;
        }
        let tier = self
            .tiers
            .entry(i.tier.clone())
            .or_insert_with(|| report::TierRow {
                tier: i.tier.clone(),
                ..Default::default()
            });
        tier.incidents += 1;
        tier.healed += u64::from(healed);
        tier.failed += u64::from(failed);
        let date = self.zone.local_date(i.received_at_ms);
        if let Some(d) = self.days.get_mut(&date) {
            match i.tier.as_str() {
                "L1" => d.l1 += 1,
                "L2" => d.l2 += 1,
                _ => d.l3 += 1,
            }
        }
        let r = self
            .recurring
            .entry((i.host.clone(), i.kind, i.service))
            .or_default();
        r.0 += 1;
        r.1 += u64::from(healed);
        let h = self
            .hosts
            .entry(i.host.clone())
            .or_insert_with(|| report::HostRow {
                host: i.host.clone(),
                ..Default::default()
            });
        h.incidents += 1;
        h.healed += u64::from(healed);
        self.incidents.insert(i.id, i.received_at_ms);
    }

    /// The figures as they stood at `as_of`: a decision made later is not yet made.
    fn finish(self, runs: &[MonthRun], escalations: &[MonthEscalation], as_of: i64) -> Figures {
        let Month {
            month,
            days,
            incidents,
            tiers,
            recurring,
            mut hosts,
            count,
            healed,
            healed_automatically,
            ..
        } = self;
        // Time to heal: from arrival to the first real run that healed it.
        let mut healed_at: HashMap<&str, i64> = HashMap::new();
        let mut dry_runs = 0;
        for r in runs {
            if !incidents.contains_key(&r.incident_id) {
                continue;
            }
            if r.dry_run {
                dry_runs += 1;
                continue;
            }
            if r.status == "failed"
                && let Some(h) = hosts.get_mut(&r.host)
            {
                h.failed += 1;
            }
            if r.status == "healed" {
                let at = healed_at.entry(r.incident_id.as_str()).or_insert(r.at_ms);
                *at = (*at).min(r.at_ms);
            }
        }
        let mut heal_s: Vec<f64> = healed_at
            .iter()
            .filter_map(|(id, at)| {
                incidents
                    .get(*id)
                    .map(|rx| ((at - rx).max(0)) as f64 / 1000.0)
            })
            .collect();
        heal_s.sort_by(f64::total_cmp);
        let mean = (!heal_s.is_empty()).then(|| heal_s.iter().sum::<f64>() / heal_s.len() as f64);
        let median = (!heal_s.is_empty()).then(|| {
            let n = heal_s.len();
            if n % 2 == 1 {
                heal_s[n / 2]
            } else {
                (heal_s[n / 2 - 1] + heal_s[n / 2]) / 2.0
            }
        });
        let (mut in_sla, mut breached, mut open) = (0, 0, 0);
        let mut approvers: BTreeMap<String, u64> = BTreeMap::new();
        for e in escalations {
            let decided_at = e.decided_at_ms.filter(|at| *at <= as_of);
            let late = match decided_at {
                Some(at) => at > e.sla_deadline_ms,
                None => as_of > e.sla_deadline_ms,
            };
            let h = hosts
                .entry(e.host.clone())
                .or_insert_with(|| report::HostRow {
                    host: e.host.clone(),
                    ..Default::default()
                });
            if late {
                breached += 1;
                h.breached += 1;
            } else if decided_at.is_some() {
                in_sla += 1;
            } else {
                open += 1;
            }
            if decided_at.is_none() {
                h.open_escalations += 1;
            }
            if decided_at.is_some() && e.state == "approved" && !e.decided_by.is_empty() {
                *approvers.entry(e.decided_by.clone()).or_default() += 1;
            }
        }
        let mut approvals: Vec<report::NameCount> = approvers
            .into_iter()
            .map(|(name, count)| report::NameCount { name, count })
            .collect();
        approvals.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
        let mut recurring: Vec<report::Recurring> = recurring
            .into_iter()
            .filter(|(_, (n, _))| *n >= 3)
            .map(
                |((host, kind, service), (count, healed))| report::Recurring {
                    host,
                    kind,
                    service,
                    count,
                    healed,
                },
            )
            .collect();
        recurring.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.host, &a.kind, &a.service).cmp(&(&b.host, &b.kind, &b.service)))
        });
        recurring.truncate(10);
        let trouble = |h: &report::HostRow| {
            (h.incidents - h.healed.min(h.incidents)) + h.failed + h.open_escalations + h.breached
        };
        let mut hosts_attention: Vec<report::HostRow> =
            hosts.into_values().filter(|h| trouble(h) > 0).collect();
        hosts_attention.sort_by(|a, b| trouble(b).cmp(&trouble(a)).then(a.host.cmp(&b.host)));
        hosts_attention.truncate(10);
        Figures {
            month,
            incidents: count,
            by_tier: tiers.into_values().collect(),
            healed_automatically,
            healed,
            mean_time_to_heal_s: mean,
            median_time_to_heal_s: median,
            dry_runs,
            escalations: escalations.len() as u64,
            escalations_in_sla: in_sla,
            escalations_breached: breached,
            escalations_open: open,
            approvals,
            daily: days.into_values().collect(),
            recurring,
            hosts_attention,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn incident(id: &str, host: &str, tier: &str, status: &str, at: i64) -> MonthIncident {
        MonthIncident {
            id: id.into(),
            host: host.into(),
            kind: "disk-full".into(),
            service: String::new(),
            tier: tier.into(),
            status: status.into(),
            received_at_ms: at,
        }
    }

    fn run(incident: &str, host: &str, status: &str, dry_run: bool, at: i64) -> MonthRun {
        MonthRun {
            incident_id: incident.into(),
            host: host.into(),
            status: status.into(),
            tier: "L1".into(),
            dry_run,
            at_ms: at,
        }
    }

    fn escalation(state: &str, by: &str, decided: Option<i64>, deadline: i64) -> MonthEscalation {
        MonthEscalation {
            host: "h2".into(),
            state: state.into(),
            created_at_ms: 0,
            sla_deadline_ms: deadline,
            decided_by: by.into(),
            decided_at_ms: decided,
        }
    }

    #[test]
    fn a_month_counts_tiers_heal_times_sla_and_recurring_problems() {
        let zone = Zone::utc();
        let (from, to) = zone.month_bounds("2026-11").unwrap();
        let mut m = Month::new(&zone, "2026-11", from, to).unwrap();
        assert_eq!(m.days.len(), 30, "every day of November");
        m.incident(incident("a", "h1", "L1", "healed", from + 1000));
        m.incident(incident("b", "h1", "L1", "healed", from + DAY));
        m.incident(incident("c", "h1", "L2", "failed", from + DAY));
        m.incident(incident("d", "h2", "L3", "escalated", from + 2 * DAY));
        m.incident(incident("e", "h2", "L3", "healed", from + 2 * DAY));
        let runs = [
            // Healed 10 s and 30 s after arrival; a dry run and another incident's run
            // do not count.
            run("a", "h1", "healed", false, from + 11_000),
            run("b", "h1", "healed", false, from + DAY + 30_000),
            run("b", "h1", "healed", true, from + DAY + 1),
            run("c", "h1", "failed", false, from + DAY + 5_000),
            run("e", "h2", "healed", false, from + 2 * DAY + 50_000),
            run("zz", "h9", "healed", false, from),
        ];
        let now = from + 10 * DAY;
        let escalations = [
            escalation("approved", "anna", Some(100), 200),
            escalation("approved", "anna", Some(300), 200),
            escalation("denied", "ben", Some(100), 200),
            escalation("open", "", None, now - 1),
            escalation("open", "", None, now + 1),
            // Decided after the figures were taken: still open then, and not yet due.
            escalation("approved", "carl", Some(now + 5), now + 10),
        ];
        let f = m.finish(&runs, &escalations, now);
        assert_eq!((f.incidents, f.healed, f.healed_automatically), (5, 3, 2));
        assert_eq!(f.dry_runs, 1);
        assert_eq!(f.mean_time_to_heal_s, Some(30.0));
        assert_eq!(f.median_time_to_heal_s, Some(30.0));
        let l1 = &f.by_tier[0];
        assert_eq!((l1.tier.as_str(), l1.incidents, l1.healed), ("L1", 2, 2));
        assert_eq!((f.by_tier[1].failed, f.by_tier[2].incidents), (1, 2));
        assert_eq!(
            (
                f.escalations,
                f.escalations_in_sla,
                f.escalations_breached,
                f.escalations_open
            ),
            (6, 2, 2, 2)
        );
        assert_eq!(f.approvals.len(), 1);
        assert_eq!(
            (f.approvals[0].name.as_str(), f.approvals[0].count),
            ("anna", 2)
        );
        let d1 = &f.daily[0];
        assert_eq!(
            (d1.date.as_str(), d1.l1, d1.l2, d1.l3),
            ("2026-11-01", 1, 0, 0)
        );
        assert_eq!((f.daily[1].l1, f.daily[1].l2), (1, 1));
        // Three disk-full on h1: recurring; two on h2: not.
        assert_eq!(f.recurring.len(), 1);
        assert_eq!(
            (
                f.recurring[0].host.as_str(),
                f.recurring[0].count,
                f.recurring[0].healed
            ),
            ("h1", 3, 2)
        );
        // h2: an unresolved incident, two open escalations (one breached); h1: a failure.
        let hosts: Vec<&str> = f.hosts_attention.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["h2", "h1"]);
        assert_eq!(
            (
                f.hosts_attention[0].open_escalations,
                f.hosts_attention[0].breached
            ),
            (3, 2)
        );
        assert_eq!(f.hosts_attention[1].failed, 1);
    }
}
