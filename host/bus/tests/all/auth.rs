//! Operator-mode credentials against nats-server 2.15.1: each agent reaches only its own
//! host's subjects and consumer, each tenant only its own account, and the server — not
//! the client — is what refuses.

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::{Client, ConnectOptions, Event, ServerError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use runwarden_bus::nats_auth::{
    Account, AccountSpec, Credentials, Operator, Permissions, claims_update_subject, server_config,
    server_config_full_resolver,
};
use runwarden_testkit::Nats;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long to wait for something that must happen (a violation, a message).
const WAIT: Duration = Duration::from_secs(3);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(400);

/// A server in operator mode with tenants `A` and `B`, and A's command and event streams
/// with a durable consumer for hosts h1 and h2, made by A's control user.
struct Fleet {
    nats: Nats,
    dir: tempfile::TempDir,
    op: Operator,
    a: Account,
    b: Account,
    a_ctl: Client,
}

fn consumer_name(host: &str) -> String {
    format!("agent-{host}")
}

impl Fleet {
    async fn start() -> Fleet {
        let op = Operator::generate("runwarden-test").unwrap();
        let accounts = [op.account("A").unwrap(), op.account("B").unwrap()];
        let nats = Nats::start_with_config(&server_config(&op, &accounts));
        let [a, b] = accounts;
        let dir = tempfile::tempdir().unwrap();
        let ctl = a.user("control", &Permissions::control()).unwrap();
        let (a_ctl, _) =
            connect_creds_text(&nats.url, dir.path(), ctl.to_creds_file().expose(), None)
                .await
                .unwrap();
        let js = jetstream::new(a_ctl.clone());
        js.create_stream(stream::Config {
            name: "RW_CMD".into(),
            subjects: vec!["rw.v1.cmd.A.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
        js.create_stream(stream::Config {
            name: "RW_EVT".into(),
            subjects: vec!["rw.v1.evt.A.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let cmd = js.get_stream("RW_CMD").await.unwrap();
        for host in ["h1", "h2"] {
            cmd.create_consumer(pull::Config {
                durable_name: Some(consumer_name(host)),
                filter_subject: format!("rw.v1.cmd.A.{host}"),
                ..Default::default()
            })
            .await
            .unwrap();
            js.publish(
                format!("rw.v1.cmd.A.{host}"),
                format!("job for {host}").into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        Fleet {
            nats,
            dir,
            op,
            a,
            b,
            a_ctl,
        }
    }

    /// Connect as `creds` (through a `.creds` file), with the inbox prefix if given.
    async fn connect(
        &self,
        creds: &Credentials,
        inbox: Option<&str>,
    ) -> Result<(Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
        self.connect_creds_text(creds.to_creds_file().expose(), inbox)
            .await
    }

    async fn connect_creds_text(
        &self,
        text: &str,
        inbox: Option<&str>,
    ) -> Result<(Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
        connect_creds_text(&self.nats.url, self.dir.path(), text, inbox).await
    }

    /// Agent `host` of tenant A, connected as its agent user with its inbox prefix.
    async fn agent_a(&self, host: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
        let perms = Permissions::agent("A", host, &consumer_name(host)).unwrap();
        let creds = self.a.user(&format!("agent-{host}"), &perms).unwrap();
        self.connect(&creds, perms.inbox_prefix()).await.unwrap()
    }
}

/// Connect to `url` with the `.creds` file text `text` (written under `dir`) and the inbox
/// prefix if given; also returns the server errors (permission violations) the client is
/// told of.
async fn connect_creds_text(
    url: &str,
    dir: &std::path::Path,
    text: &str,
    inbox: Option<&str>,
) -> Result<(Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
    let path = dir.join(format!("{}.creds", rand_name()));
    std::fs::write(&path, text).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut opts = ConnectOptions::new()
        .credentials_file(&path)
        .await
        .unwrap()
        .connection_timeout(WAIT)
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(s)) = e {
                    tx.send(s).ok();
                }
            }
        });
    if let Some(p) = inbox {
        opts = opts.custom_inbox_prefix(p);
    }
    opts.connect(url).await.map(|c| (c, rx))
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("u{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Wait (bounded) for a permission violation of `what` (`publish`, `subscription`) on
/// exactly `subject`.
async fn expect_violation(rx: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    expect_error(
        rx,
        &format!("permissions violation for {what} to \"{subject}\""),
    )
    .await
}

/// Wait (bounded) for a server error containing `needle` (case-insensitive).
async fn expect_error(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) {
    let want = needle.to_lowercase();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if e.to_lowercase().contains(&want) {
            return;
        }
        seen.push(e);
    }
    panic!("no server error {want:?} within {WAIT:?}; got {seen:?}");
}

/// The server refused the connection as an authorization violation.
fn assert_refused<T>(r: Result<T, async_nats::ConnectError>) {
    match r {
        Ok(_) => panic!("connected with credentials the server must refuse"),
        Err(e) => assert_eq!(
            e.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{e}"
        ),
    }
}

/// Nothing arrives on `sub` for a while.
async fn expect_nothing(sub: &mut async_nats::Subscriber) {
    if let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("unexpected message on {}: {:?}", m.subject, m.payload);
    }
}

#[tokio::test]
async fn agent_pulls_and_acks_its_own_command_and_reports_its_events() {
    let fleet = Fleet::start().await;
    let (agent, mut errors) = fleet.agent_a("h1").await;
    let mut js = jetstream::new(agent);
    js.set_timeout(WAIT);

    let consumer: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(consumer_name("h1"), "RW_CMD")
        .await
        .expect("the agent binds to its own consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, batch.next())
        .await
        .expect("a command in time")
        .expect("a command")
        .unwrap();
    assert_eq!(msg.subject.as_str(), "rw.v1.cmd.A.h1");
    assert_eq!(&msg.payload[..], b"job for h1");
    msg.double_ack().await.expect("the server confirms the ack");

    let ack = js
        .publish("rw.v1.evt.A.h1.report", "done".into())
        .await
        .unwrap()
        .await
        .expect("PubAck for the agent's own event");
    assert_eq!(ack.stream, "RW_EVT");

    // The control plane sees the effect: h1's command consumed, h2's still there.
    let ctl = jetstream::new(fleet.a_ctl.clone());
    let mut cmd = ctl.get_stream("RW_CMD").await.unwrap();
    assert_eq!(cmd.info().await.unwrap().state.messages, 1);
    let left = cmd.get_last_raw_message_by_subject("rw.v1.cmd.A.h2").await;
    assert!(left.is_ok(), "h2's command is untouched");
    let evt = ctl.get_stream("RW_EVT").await.unwrap();
    let last = evt
        .get_last_raw_message_by_subject("rw.v1.evt.A.h1.report")
        .await
        .unwrap();
    assert_eq!(&last.payload[..], b"done");

    assert!(
        errors.try_recv().is_err(),
        "no violation on the allowed path"
    );
}

#[tokio::test]
async fn agent_is_refused_other_hosts_subjects_at_the_server() {
    let fleet = Fleet::start().await;
    let (agent, mut errors) = fleet.agent_a("h1").await;

    // Snooping: another host's commands, all events, the shared inbox, h2's inbox.
    let mut subs = Vec::new();
    for subject in [
        "rw.v1.cmd.A.h2",
        "rw.v1.evt.>",
        "_INBOX.>",
        "_INBOX_h2.>",
        ">",
    ] {
        subs.push(agent.subscribe(subject).await.unwrap());
        expect_violation(&mut errors, "subscription", subject).await;
    }
    // Each of them would match one of these (the command also lands in RW_CMD).
    for subject in [
        "rw.v1.cmd.A.h2",
        "rw.v1.evt.A.h2.report",
        "_INBOX_h2.x",
        "_INBOX.x",
    ] {
        fleet.a_ctl.publish(subject, "secret".into()).await.unwrap();
    }
    fleet.a_ctl.flush().await.unwrap();
    for sub in &mut subs {
        expect_nothing(sub).await;
    }

    // Forging: another host's event, a command (even to itself).
    for subject in ["rw.v1.evt.A.h2.report", "rw.v1.cmd.A.h1", "rw.v1.cmd.A.h2"] {
        agent.publish(subject, "forged".into()).await.unwrap();
        agent.flush().await.unwrap();
        expect_violation(&mut errors, "publish", subject).await;
    }
    let ctl = jetstream::new(fleet.a_ctl.clone());
    let evt = ctl.get_stream("RW_EVT").await.unwrap();
    let h2 = evt
        .get_last_raw_message_by_subject("rw.v1.evt.A.h2.report")
        .await
        .unwrap();
    assert_eq!(
        &h2.payload[..],
        b"secret",
        "only the control plane's messages"
    );
    let mut cmd = ctl.get_stream("RW_CMD").await.unwrap();
    assert_eq!(
        cmd.info().await.unwrap().state.messages,
        3,
        "h1's and h2's commands and the control plane's second one for h2: none forged"
    );

    // Pulling from h2's consumer, binding to it, deleting the stream, creating a consumer.
    let mut js = jetstream::new(agent.clone());
    js.set_timeout(Duration::from_secs(1));
    let bound = js
        .get_consumer_from_stream::<pull::Config, _, _>(consumer_name("h2"), "RW_CMD")
        .await;
    assert!(bound.is_err());
    expect_violation(
        &mut errors,
        "publish",
        "$JS.API.CONSUMER.INFO.RW_CMD.agent-h2",
    )
    .await;
    let inbox = agent.new_inbox();
    agent
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.RW_CMD.agent-h2",
            inbox,
            r#"{"batch":1}"#.into(),
        )
        .await
        .unwrap();
    expect_violation(
        &mut errors,
        "publish",
        "$JS.API.CONSUMER.MSG.NEXT.RW_CMD.agent-h2",
    )
    .await;
    assert!(js.delete_stream("RW_CMD").await.is_err());
    expect_violation(&mut errors, "publish", "$JS.API.STREAM.DELETE.RW_CMD").await;
    let own = js.get_stream_no_info("RW_CMD").await.unwrap();
    let made = own
        .create_consumer(pull::Config {
            durable_name: Some("spy".into()),
            filter_subject: "rw.v1.cmd.A.h2".into(),
            ..Default::default()
        })
        .await;
    assert!(made.is_err());
    expect_violation(
        &mut errors,
        "publish",
        "$JS.API.CONSUMER.CREATE.RW_CMD.spy.rw.v1.cmd.A.h2",
    )
    .await;

    // All of it failed at the server: the stream, h2's command and its consumer are intact.
    assert_eq!(cmd.info().await.unwrap().state.messages, 3);
    let h2c = ctl
        .get_consumer_from_stream::<pull::Config, _, _>(consumer_name("h2"), "RW_CMD")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!((h2c.num_pending, h2c.num_ack_pending), (2, 0));
}

#[tokio::test]
async fn agent_reads_its_own_tenants_components_and_no_others() {
    let fleet = Fleet::start().await;
    // RW_BLOB as `ensure_streams` makes it: every tenant's components in one stream of
    // the account, read by direct get per subject.
    let ctl = jetstream::new(fleet.a_ctl.clone());
    ctl.create_stream(stream::Config {
        name: "RW_BLOB".into(),
        subjects: vec!["rw.v1.blob.>".into()],
        max_messages_per_subject: 1,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let sha = "ab".repeat(32);
    for tenant in ["A", "Z"] {
        ctl.publish(
            format!("rw.v1.blob.{tenant}.{sha}.0"),
            format!("component of {tenant}").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let (agent, mut errors) = fleet.agent_a("h1").await;
    let mut js = jetstream::new(agent);
    js.set_timeout(Duration::from_secs(1));
    let blobs = js.get_stream_no_info("RW_BLOB").await.unwrap();

    let own = blobs
        .direct_get_last_for_subject(format!("rw.v1.blob.A.{sha}.0"))
        .await
        .expect("its own tenant's component");
    assert_eq!(&own.payload[..], b"component of A");

    // Another tenant's subject, by sequence (no subject), and the stream's own get.
    let other = blobs
        .direct_get_last_for_subject(format!("rw.v1.blob.Z.{sha}.0"))
        .await;
    assert!(other.is_err());
    expect_violation(
        &mut errors,
        "publish",
        &format!("$JS.API.DIRECT.GET.RW_BLOB.rw.v1.blob.Z.{sha}.0"),
    )
    .await;
    assert!(blobs.direct_get(2).await.is_err());
    expect_violation(&mut errors, "publish", "$JS.API.DIRECT.GET.RW_BLOB").await;
    assert!(blobs.get_raw_message(2).await.is_err());
    expect_violation(&mut errors, "publish", "$JS.API.STREAM.MSG.GET.RW_BLOB").await;
    // Nor can it store one.
    let stored = js
        .publish(format!("rw.v1.blob.A.{sha}.1"), "forged".into())
        .await;
    if let Ok(ack) = stored {
        assert!(ack.await.is_err(), "no PubAck for a forged component");
    }
    expect_violation(&mut errors, "publish", &format!("rw.v1.blob.A.{sha}.1")).await;
}

#[tokio::test]
async fn agent_without_its_inbox_prefix_cannot_even_bind() {
    let fleet = Fleet::start().await;
    let perms = Permissions::agent("A", "h1", &consumer_name("h1")).unwrap();
    let creds = fleet.a.user("agent-h1", &perms).unwrap();
    let (agent, mut errors) = fleet.connect(&creds, None).await.unwrap();
    let mut js = jetstream::new(agent);
    js.set_timeout(Duration::from_secs(1));
    let bound = js
        .get_consumer_from_stream::<pull::Config, _, _>(consumer_name("h1"), "RW_CMD")
        .await;
    assert!(bound.is_err(), "the default _INBOX is not the agent's");
    expect_error(
        &mut errors,
        "permissions violation for subscription to \"_INBOX.",
    )
    .await;
}

#[tokio::test]
async fn tenants_see_nothing_of_each_other() {
    let fleet = Fleet::start().await;
    let b_ctl_creds = fleet.b.user("control", &Permissions::control()).unwrap();
    let (b_ctl, _) = fleet.connect(&b_ctl_creds, None).await.unwrap();
    let b_js = jetstream::new(b_ctl.clone());

    // A's streams do not exist in B's account; B's own stream of the same name is empty.
    let err = b_js.get_stream("RW_CMD").await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("not found"),
        "{err}"
    );
    let mut b_cmd = b_js
        .create_stream(stream::Config {
            name: "RW_CMD".into(),
            subjects: vec!["rw.v1.cmd.B.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(b_cmd.info().await.unwrap().state.messages, 0);

    // B's wide subscribers hear none of A's traffic, while A's own subscriber does.
    let mut b_all = b_ctl.subscribe("rw.>").await.unwrap();
    let mut b_everything = b_ctl.subscribe(">").await.unwrap();
    b_ctl.flush().await.unwrap();
    let mut a_all = fleet.a_ctl.subscribe("rw.>").await.unwrap();
    fleet.a_ctl.flush().await.unwrap();
    for subject in ["rw.v1.cmd.A.h1", "rw.v1.evt.A.h1.report", "rw.v1.cmd.B.h1"] {
        fleet.a_ctl.publish(subject, "a".into()).await.unwrap();
    }
    fleet.a_ctl.flush().await.unwrap();
    let heard = tokio::time::timeout(WAIT, a_all.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.subject.as_str(), "rw.v1.cmd.A.h1");
    expect_nothing(&mut b_all).await;
    expect_nothing(&mut b_everything).await;
    assert_eq!(
        b_cmd.info().await.unwrap().state.messages,
        0,
        "A publishing rw.v1.cmd.B.h1 stays in A's account"
    );

    // B's agent with the same host and consumer names binds to nothing of A's.
    let perms = Permissions::agent("B", "h1", &consumer_name("h1")).unwrap();
    let b_agent = fleet.b.user("agent-h1", &perms).unwrap();
    let (b_agent, _) = fleet.connect(&b_agent, perms.inbox_prefix()).await.unwrap();
    let mut js = jetstream::new(b_agent);
    js.set_timeout(Duration::from_secs(1));
    let bound = js
        .get_consumer_from_stream::<pull::Config, _, _>(consumer_name("h1"), "RW_CMD")
        .await;
    assert!(bound.is_err(), "no consumer agent-h1 in B's account");
}

#[tokio::test]
async fn credentials_from_an_unknown_or_forged_issuer_are_refused_at_connect() {
    let fleet = Fleet::start().await;
    let ok = fleet.a.user("ctl2", &Permissions::control()).unwrap();
    assert!(
        fleet.connect(&ok, None).await.is_ok(),
        "a genuine user connects"
    );

    // An account of the same operator that the server was not given.
    let stray = fleet.op.account("C").unwrap();
    let user = stray.user("ctl", &Permissions::control()).unwrap();
    assert_refused(fleet.connect(&user, None).await);

    // An account named A by another operator.
    let rogue = Operator::generate("rogue").unwrap().account("A").unwrap();
    let user = rogue.user("ctl", &Permissions::control()).unwrap();
    assert_refused(fleet.connect(&user, None).await);

    // A user JWT that claims A as its issuer but is signed by another account's key.
    let jwt = user.jwt();
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = fleet.a.public_key().into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let text = user.to_creds_file().expose().replace(jwt, &forged);
    assert_refused(fleet.connect_creds_text(&text, None).await);
}

#[tokio::test]
async fn the_operator_pushes_a_new_tenant_and_a_revocation_to_the_full_resolver() {
    let op = Operator::generate("runwarden-test").unwrap();
    let jwts = tempfile::tempdir().unwrap();
    let nats = Nats::start_with_config(&server_config_full_resolver(&op, jwts.path(), &[]));
    let dir = tempfile::tempdir().unwrap();
    let connect = |creds: &Credentials, inbox: Option<&str>| {
        let text = creds.to_creds_file().expose().to_string();
        let inbox = inbox.map(str::to_string);
        let (url, dir) = (nats.url.clone(), dir.path().to_path_buf());
        async move { connect_creds_text(&url, &dir, &text, inbox.as_deref()).await }
    };

    // Tenant A is not known yet.
    let a = op.account("A").unwrap();
    let ctl = a.user("control", &Permissions::control()).unwrap();
    assert_refused(connect(&ctl, None).await);

    let perms = Permissions::claims_pusher();
    let pusher = op.system_account().user("pusher", &perms).unwrap();
    let (sys, _) = connect(&pusher, perms.inbox_prefix()).await.unwrap();
    let push = |account: &Account| {
        let (sys, subject, jwt) = (
            sys.clone(),
            claims_update_subject(account),
            account.jwt().to_string(),
        );
        async move { runwarden_bus::jetstream::push_account_jwt(&sys, subject, &jwt).await }
    };
    push(&a).await.expect("the account update is taken");

    // Now A's control user connects, with JetStream as the account JWT allows.
    let (c, _) = connect(&ctl, None)
        .await
        .expect("A is known after the push");
    jetstream::new(c)
        .create_stream(stream::Config {
            name: "RW_CMD".into(),
            subjects: vec!["rw.v1.cmd.A.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    // A compromised host: its user is revoked by pushing A's JWT again; it can no longer
    // connect, while the control user (not revoked) still can.
    let host = a
        .user(
            "agent-h1",
            &Permissions::agent("A", "h1", "agent-h1").unwrap(),
        )
        .unwrap();
    let inbox = Some("_INBOX_h1");
    assert!(connect(&host, inbox).await.is_ok(), "before the revocation");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut spec = AccountSpec::default();
    spec.revoked_users.insert(host.public_key(), now);
    let a = op
        .account_with("A", Some(a.seed().expose()), &spec)
        .unwrap();
    push(&a).await.expect("the account update is taken");
    assert_refused(connect(&host, inbox).await);
    assert!(connect(&ctl, None).await.is_ok(), "others are not revoked");

    // An account signed by another operator is of no use: 2.15.1 stores the pushed JWT
    // (answers 200 "jwt updated") but checks the issuer when the account is used, so its
    // users are refused.
    let rogue = Operator::generate("rogue").unwrap().account("X").unwrap();
    let _ = push(&rogue).await;
    let user = rogue.user("ctl", &Permissions::control()).unwrap();
    assert_refused(connect(&user, None).await);
}

/// Why the control plane pushes its account again after each reconnection: the MEMORY
/// resolver takes an update (revoked users are cut off at once) but forgets it when the
/// NATS server restarts, back to the account it was configured with.
#[tokio::test]
async fn a_revocation_pushed_to_the_memory_resolver_holds_until_the_nats_server_restarts() {
    let mut fleet = Fleet::start().await;
    let perms = Permissions::claims_pusher();
    let pusher = fleet.op.system_account().user("pusher", &perms).unwrap();
    let pusher = pusher.to_creds_file().expose().to_string();
    let host = fleet
        .a
        .user(
            "agent-h1",
            &Permissions::agent("A", "h1", "agent-h1").unwrap(),
        )
        .unwrap();
    let host = host_creds(&host);
    let inbox = Some("_INBOX_h1");
    let (held, _) = connect_creds_text(&fleet.nats.url, fleet.dir.path(), &host.1, inbox)
        .await
        .unwrap();
    let mut spec = AccountSpec::default();
    spec.revoked_users.insert(host.0.clone(), 4_000_000_000);
    let a = fleet
        .op
        .account_with("A", Some(fleet.a.seed().expose()), &spec)
        .unwrap();
    let push = |url: String, dir: std::path::PathBuf| {
        let (pusher, subject, jwt) = (
            pusher.clone(),
            claims_update_subject(&a),
            a.jwt().to_string(),
        );
        let inbox = perms.inbox_prefix().map(str::to_string);
        async move {
            let (sys, _) = connect_creds_text(&url, &dir, &pusher, inbox.as_deref())
                .await
                .unwrap();
            runwarden_bus::jetstream::push_account_jwt(&sys, subject, &jwt).await
        }
    };
    push(fleet.nats.url.clone(), fleet.dir.path().to_path_buf())
        .await
        .expect("the update is taken");
    let deadline = std::time::Instant::now() + WAIT;
    while runwarden_bus::jetstream::is_connected(&held) {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked user's connection stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(connect_creds_text(&fleet.nats.url, fleet.dir.path(), &host.1, inbox).await);

    fleet.nats.kill();
    fleet.nats.restart();
    assert!(
        connect_creds_text(&fleet.nats.url, fleet.dir.path(), &host.1, inbox)
            .await
            .is_ok(),
        "the restarted server forgot the update"
    );
    push(fleet.nats.url.clone(), fleet.dir.path().to_path_buf())
        .await
        .expect("the update is taken again");
    assert_refused(connect_creds_text(&fleet.nats.url, fleet.dir.path(), &host.1, inbox).await);
}

/// A user's public key and `.creds` text.
fn host_creds(user: &Credentials) -> (String, String) {
    (user.public_key(), user.to_creds_file().expose().to_string())
}

/// What `runwarden server --init-nats` configures: the full resolver with the fleet
/// account preloaded. A revocation pushed at run time outlives a restart of the NATS
/// server (the pushed account, newer than the preloaded one, is kept in the resolver's
/// directory).
#[tokio::test]
async fn a_revocation_pushed_to_the_full_resolver_outlives_a_restart() {
    let op = Operator::generate("runwarden-test").unwrap();
    let a = op.account("A").unwrap();
    let jwts = tempfile::tempdir().unwrap();
    let mut nats = Nats::start_with_config(&server_config_full_resolver(
        &op,
        jwts.path(),
        std::slice::from_ref(&a),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (host, inbox) = (
        a.user(
            "agent-h1",
            &Permissions::agent("A", "h1", "agent-h1").unwrap(),
        )
        .unwrap(),
        Some("_INBOX_h1"),
    );
    let (user, text) = host_creds(&host);
    assert!(
        connect_creds_text(&nats.url, dir.path(), &text, inbox)
            .await
            .is_ok()
    );
    // Signed a second later than the preloaded account: the resolver keeps the newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut spec = AccountSpec::default();
    spec.revoked_users.insert(user, 4_000_000_000);
    let revoked = op
        .account_with("A", Some(a.seed().expose()), &spec)
        .unwrap();
    let perms = Permissions::claims_pusher();
    let pusher = op.system_account().user("pusher", &perms).unwrap();
    let (sys, _) = connect_creds_text(
        &nats.url,
        dir.path(),
        pusher.to_creds_file().expose(),
        perms.inbox_prefix(),
    )
    .await
    .unwrap();
    runwarden_bus::jetstream::push_account_jwt(
        &sys,
        claims_update_subject(&revoked),
        revoked.jwt(),
    )
    .await
    .expect("the update is taken");
    assert_refused(connect_creds_text(&nats.url, dir.path(), &text, inbox).await);

    nats.kill();
    nats.restart();
    assert_refused(connect_creds_text(&nats.url, dir.path(), &text, inbox).await);
}
