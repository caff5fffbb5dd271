//! Webhook notifications of escalations, against local servers that record what they
//! are sent and answer as told: the JSON and Slack bodies, the HMAC signature, which
//! answers are retried and how often, what is recorded for each delivery, and that
//! neither the webhook URL nor its secret shows anywhere runwarden reports.

use crate::pipeline::{Setup, incident, setup, start};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use runwarden_control::{
    Caller, ControlError, Controller, Decision, Escalation, Format, GuardrailConfig, Incident,
    NotificationView, Scope, SlaConfig, WebhookConfig,
};
use serde_json::Value;
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Distinctive, so that a leak would be found.
const SECRET: &str = "whsec-Kp9-must-never-show-3e1";
/// The URL's path is the secret part of a Slack webhook URL.
const PATH: &str = "/hooks/T0SECRETPATH/B0/x9";
const TENANT: &str = "clinic-a";

/// One answer, in turn.
#[derive(Clone)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    delay: Duration,
}

fn status(status: u16) -> Reply {
    Reply {
        status,
        retry_after: None,
        delay: Duration::ZERO,
    }
}

/// A request as received.
#[derive(Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone)]
struct Shared {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    then: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A webhook endpoint on 127.0.0.1:0: the queued replies, then `then` for ever.
struct Endpoint {
    addr: std::net::SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(replies: Vec<Reply>, then: Reply) -> Endpoint {
        let shared = Shared {
            replies: Arc::new(Mutex::new(replies.into())),
            then,
            seen: Arc::default(),
        };
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Endpoint { addr, shared, task }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    s.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers,
        body,
        at: Instant::now(),
    });
    let r = s
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.then.clone());
    tokio::time::sleep(r.delay).await;
    let mut resp = StatusCode::from_u16(r.status).unwrap().into_response();
    if let Some(v) = r.retry_after {
        resp.headers_mut().insert("retry-after", v.parse().unwrap());
    }
    resp
}

fn webhook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        format: Format::Json,
        secret: None,
        timeout_secs: 5,
        max_attempts: 4,
        backoff_ms: 20,
    }
}

async fn controller(s: &Setup, webhooks: Vec<WebhookConfig>) -> Controller {
    with_sla(
        s,
        SlaConfig {
            webhooks,
            ..SlaConfig::default()
        },
    )
    .await
}

/// A controller with no rule set and escalation settings `sla`.
async fn with_sla(s: &Setup, sla: SlaConfig) -> Controller {
    match start(
        s,
        GuardrailConfig::default(),
        Vec::new(),
        None,
        Default::default(),
        sla,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// No rule set, and nothing the offline planner is sure of: it escalates.
fn printer_jam() -> Incident {
    incident(
        r#"{"host":"clinic-demo-01","type":"printer-jam","severity":"high","service":"cups.service"}"#,
    )
}

fn human() -> Caller {
    Caller {
        token_id: "tok_alice".into(),
        tenant: TENANT.into(),
        scope: Scope::Operate,
    }
}

/// `f` until it answers, polling every 50 ms for at most 10 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The escalation once `n` deliveries of it are recorded.
async fn recorded(c: &Controller, id: &str, n: usize) -> Escalation {
    eventually(&format!("{n} recorded deliveries of {id}"), async || {
        let e = c.escalation(TENANT, id).await.unwrap().unwrap();
        (e.notifications.len() >= n).then_some(e)
    })
    .await
}

fn by_name<'a>(e: &'a Escalation, webhook: &str, event: &str) -> &'a NotificationView {
    e.notifications
        .iter()
        .find(|n| n.webhook == webhook && n.event == event)
        .unwrap_or_else(|| panic!("no {event} delivery to {webhook}: {e:?}"))
}

/// Nothing runwarden reports holds the secret or the URL (its path, or the endpoint).
fn no_leak(text: &str, endpoints: &[&Endpoint]) {
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    assert!(!text.contains("SECRETPATH"), "the URL path leaked: {text}");
    for ep in endpoints {
        assert!(
            !text.contains(&ep.addr.to_string()),
            "the URL leaked: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_is_sent_signed_as_json_and_to_slack_and_its_decision_too() {
    let s = setup();
    let json = Endpoint::start(vec![], status(200)).await;
    let slack = Endpoint::start(vec![], status(200)).await;
    let hooks = vec![
        WebhookConfig {
            secret: Some(SECRET.into()),
            ..webhook("ops-json", json.url())
        },
        WebhookConfig {
            format: Format::Slack,
            ..webhook("ops-slack", slack.url())
        },
    ];
    let debug = format!("{hooks:?}");
    no_leak(&debug, &[]);
    assert!(debug.contains("http://127.0.0.1/…"), "{debug}");
    let c = controller(&s, hooks).await;

    let r = c.submit(TENANT, printer_jam()).await.unwrap();
    assert_eq!((r.tier.as_str(), r.status.as_str()), ("L3", "escalated"));
    let id = r.escalation.clone().unwrap();

    // JSON: the event, the escalation, signed with the secret.
    let got = eventually("the JSON webhook", async || json.seen().pop()).await;
    assert_eq!(got.path, PATH);
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-runwarden-event"), "escalation.opened");
    let sig = got
        .header("x-runwarden-signature")
        .strip_prefix("sha256=")
        .expect("signed: sha256=<hex>");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&got.body);
    mac.verify_slice(&hex::decode(sig).unwrap())
        .expect("the signature verifies over the body as sent");
    let body = got.json();
    assert_eq!(body["event"], "escalation.opened");
    let e = &body["escalation"];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["incident_id"], r.id.as_str());
    assert_eq!(
        (&e["tenant"], &e["host"], &e["severity"], &e["state"]),
        (
            &Value::from(TENANT),
            &Value::from("clinic-demo-01"),
            &Value::from("high"),
            &Value::from("open")
        )
    );
    assert_eq!(e["reason"], r.reason.as_str());
    assert!(runwarden_control::parse_rfc3339_ms(e["sla_deadline"].as_str().unwrap()).is_some());
    assert_eq!(body["incident"]["type"], "printer-jam");
    assert_eq!(body["incident"]["service"], "cups.service");
    assert_eq!(body["url_path"], format!("/v1/escalations/{id}"));
    assert!(runwarden_control::parse_rfc3339_ms(body["sent_at"].as_str().unwrap()).is_some());
    no_leak(&String::from_utf8_lossy(&got.body), &[&json, &slack]);

    // Slack: what an incoming webhook takes, unsigned (no secret set).
    let got = eventually("the Slack webhook", async || slack.seen().pop()).await;
    let body = got.json();
    let text = body["text"].as_str().expect("a text");
    assert!(text.contains(&id) && !text.contains('\n'), "{text}");
    let block = &body["blocks"][0];
    assert_eq!(block["type"], "section");
    assert_eq!(block["text"]["type"], "mrkdwn");
    assert!(
        block["text"]["text"]
            .as_str()
            .unwrap()
            .contains("printer-jam"),
        "{block}"
    );
    assert_eq!(got.header("x-runwarden-signature"), "");

    // Both recorded with the escalation.
    let esc = recorded(&c, &id, 2).await;
    for name in ["ops-json", "ops-slack"] {
        let n = by_name(&esc, name, "escalation.opened");
        assert_eq!((n.status.as_str(), n.attempts), ("delivered", 1), "{n:?}");
    }

    // A human denies it: the decision goes out too.
    let (decided, _) = c.decide(&human(), &id, Decision::Deny, "").await.unwrap();
    assert_eq!(decided.state, "denied");
    let got = eventually("the decision", async || {
        json.seen()
            .into_iter()
            .find(|s| s.header("x-runwarden-event") == "escalation.decided")
    })
    .await;
    let body = got.json();
    assert_eq!(body["event"], "escalation.decided");
    assert_eq!(body["escalation"]["id"], id.as_str());
    assert_eq!(body["escalation"]["state"], "denied");
    let esc = recorded(&c, &id, 4).await;
    assert_eq!(
        by_name(&esc, "ops-slack", "escalation.decided").status,
        "delivered"
    );
    no_leak(&serde_json::to_string(&esc).unwrap(), &[&json, &slack]);
    let metrics = c.metrics("clinic-a");
    assert!(
        metrics.contains("# TYPE runwarden_webhook_deliveries_total counter")
            && metrics.contains("runwarden_webhook_deliveries_total{status=\"delivered\"} 4")
            && metrics.contains("runwarden_webhook_deliveries_total{status=\"failed\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_failures_are_recorded_and_the_incident_never_waits() {
    let s = setup();
    let flaky = Endpoint::start(vec![status(500), status(500)], status(200)).await;
    let limited = Endpoint::start(
        vec![Reply {
            retry_after: Some("1"),
            ..status(429)
        }],
        status(200),
    )
    .await;
    let down = Endpoint::start(vec![], status(500)).await;
    let refusing = Endpoint::start(vec![], status(400)).await;
    let slow = Endpoint::start(
        vec![],
        Reply {
            delay: Duration::from_secs(3),
            ..status(200)
        },
    )
    .await;
    // A port nothing listens on.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let hooks = vec![
        webhook("flaky", flaky.url()),
        webhook("limited", limited.url()),
        WebhookConfig {
            max_attempts: 3,
            secret: Some(SECRET.into()),
            ..webhook("down", down.url())
        },
        webhook("refusing", refusing.url()),
        WebhookConfig {
            max_attempts: 2,
            ..webhook("closed", format!("http://{closed}{PATH}"))
        },
        WebhookConfig {
            timeout_secs: 1,
            max_attempts: 2,
            ..webhook("slow", slow.url())
        },
    ];
    let c = controller(&s, hooks).await;

    let started = Instant::now();
    let r = c.submit(TENANT, printer_jam()).await.unwrap();
    assert!(
        // Waiting on the webhooks would take 2 s at least ("slow" alone).
        started.elapsed() < Duration::from_millis(1500),
        "the incident waited on a webhook: {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, "escalated", "{r:?}");
    let id = r.escalation.clone().unwrap();

    let esc = recorded(&c, &id, 6).await;
    let n = by_name(&esc, "flaky", "escalation.opened");
    assert_eq!((n.status.as_str(), n.attempts), ("delivered", 3), "{n:?}");
    assert_eq!(flaky.seen().len(), 3);
    let n = by_name(&esc, "limited", "escalation.opened");
    assert_eq!((n.status.as_str(), n.attempts), ("delivered", 2), "{n:?}");
    let seen = limited.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 is honoured, not the 20 ms backoff: {gap:?}"
    );
    let n = by_name(&esc, "down", "escalation.opened");
    assert_eq!(
        (n.status.as_str(), n.attempts, n.last_error.as_str()),
        ("failed", 3, "HTTP 500"),
        "{n:?}"
    );
    assert_eq!(down.seen().len(), 3, "no more than max_attempts");
    let n = by_name(&esc, "refusing", "escalation.opened");
    assert_eq!(
        (n.status.as_str(), n.attempts, n.last_error.as_str()),
        ("failed", 1, "HTTP 400"),
        "a 4xx is final: {n:?}"
    );
    assert_eq!(refusing.seen().len(), 1);
    let n = by_name(&esc, "closed", "escalation.opened");
    assert_eq!((n.status.as_str(), n.attempts), ("failed", 2), "{n:?}");
    assert!(
        n.last_error.starts_with("connection failed"),
        "{}",
        n.last_error
    );
    let n = by_name(&esc, "slow", "escalation.opened");
    assert_eq!(
        (n.status.as_str(), n.attempts, n.last_error.as_str()),
        ("failed", 2, "no answer within 1 s"),
        "{n:?}"
    );

    // The incident is as it ended, whatever the webhooks did.
    let stored = c.incident(TENANT, &r.id).await.unwrap().unwrap();
    assert_eq!(stored, r);
    assert_eq!(esc.state, "open");
    no_leak(
        &serde_json::to_string(&esc).unwrap(),
        &[&flaky, &limited, &down, &refusing, &slow],
    );
    assert!(
        !serde_json::to_string(&esc)
            .unwrap()
            .contains(&closed.to_string())
    );
    let metrics = c.metrics("clinic-a");
    assert!(
        metrics.contains("runwarden_webhook_deliveries_total{status=\"delivered\"} 2")
            && metrics.contains("runwarden_webhook_deliveries_total{status=\"failed\"} 4")
            && metrics.contains("runwarden_webhook_deliveries_total{status=\"dropped\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_delivery_in_flight_finish() {
    let s = setup();
    let slow = Endpoint::start(
        vec![],
        Reply {
            delay: Duration::from_millis(1500),
            ..status(200)
        },
    )
    .await;
    let c = controller(&s, vec![webhook("slow", slow.url())]).await;
    let r = c.submit(TENANT, printer_jam()).await.unwrap();
    let id = r.escalation.unwrap();
    eventually("the request", async || slow.seen().pop()).await;
    let started = Instant::now();
    c.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let esc = c.escalation(TENANT, &id).await.unwrap().unwrap();
    let n = by_name(&esc, "slow", "escalation.opened");
    assert_eq!((n.status.as_str(), n.attempts), ("delivered", 1), "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_webhook_stops_the_start_and_says_which() {
    let s = setup();
    let url = format!("ftp://hooks.example{PATH}");
    let cases = [
        (webhook("ops", url), "\"ops\": url"),
        (
            WebhookConfig {
                max_attempts: 0,
                ..webhook("ops", format!("https://hooks.example{PATH}"))
            },
            "\"ops\": max_attempts",
        ),
        (
            webhook("", format!("https://hooks.example{PATH}")),
            "#1: name",
        ),
    ];
    for (hook, want) in cases {
        let err = match start(
            &s,
            GuardrailConfig::default(),
            Vec::new(),
            None,
            Default::default(),
            SlaConfig {
                webhooks: vec![hook],
                ..SlaConfig::default()
            },
        )
        .await
        {
            Ok(_) => panic!("started with a bad webhook ({want})"),
            Err(e @ ControlError::Setup(_)) => e.to_string(),
            Err(e) => panic!("{e}"),
        };
        assert!(err.contains(want), "{err}");
        assert!(err.contains("[[escalations.webhooks]]"), "{err}");
        no_leak(&err, &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_past_its_deadline_is_announced_as_breached_once() {
    let s = setup();
    let ep = Endpoint::start(Vec::new(), status(200)).await;
    // High incidents must be decided at once: every escalation is breached as it opens.
    let overdue = SlaConfig {
        high_secs: 0,
        webhooks: vec![webhook("ops", ep.url())],
        ..SlaConfig::default()
    };
    let c = with_sla(&s, overdue.clone()).await;
    let r = c.submit(TENANT, printer_jam()).await.unwrap();
    let id = r.escalation.clone().unwrap();
    // A second one, decided before its breach is looked for: not announced.
    let decided = c
        .submit(TENANT, printer_jam())
        .await
        .unwrap()
        .escalation
        .unwrap();
    c.decide(&human(), &decided, Decision::Deny, "seen")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(c.announce_breaches().await.unwrap(), 1);
    let e = recorded(&c, &id, 2).await;
    assert!(e.breached, "{e:?}");
    assert_eq!(
        by_name(&e, "ops", "escalation.breached").status,
        "delivered"
    );
    let bodies: Vec<Value> = ep
        .seen()
        .iter()
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    let breach = bodies
        .iter()
        .find(|b| b["event"] == "escalation.breached")
        .unwrap();
    assert_eq!(breach["escalation"]["id"], id.as_str());
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b["event"] == "escalation.breached")
            .count(),
        1,
        "only the undecided one"
    );
    assert_eq!(breach["escalation"]["state"], "open");
    // Once: not again, in this process or the next.
    assert_eq!(c.announce_breaches().await.unwrap(), 0);
    c.shutdown().await;
    let c = with_sla(&s, overdue.clone()).await;
    assert_eq!(c.announce_breaches().await.unwrap(), 0);
}
