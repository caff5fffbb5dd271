//! NATS credentials for a fleet: one NATS account per tenant, runwarden as the operator.
//!
//! Tenants are isolated by the NATS server itself, in operator mode (decentralised JWT
//! authentication):
//!
//! - **Operator** ([`Operator`]): `runwarden server` holds the operator nkey. It signs the
//!   operator JWT (self-signed; the nats-server trusts it through its configuration) and
//!   every account JWT. It also holds the **system account** nkey, which the nats-server
//!   needs in operator mode; that key is derived from the operator seed, so the operator
//!   seed is the one secret to keep for both.
//! - **Account** ([`Account`]): one per tenant, named after it, with JetStream enabled under
//!   [`AccountLimits`]. Accounts are separate subject namespaces: nothing published in
//!   tenant A's account is visible in tenant B's, and their streams are separate. The
//!   control plane keeps each account's nkey to sign that tenant's users.
//! - **User** ([`Credentials`]): signed by its account's key. Three kinds, see
//!   [`Permissions`]:
//!   - the control plane's user in a tenant account ([`Permissions::control`]) may do
//!     everything in that account (create streams and consumers, publish commands, read
//!     events);
//!   - an agent's user ([`Permissions::agent`]) may publish only its own host's events,
//!     pull and acknowledge from its own durable consumer of `RW_CMD`, and subscribe only
//!     to its own inbox prefix ([`agent_inbox_prefix`]). Everything else is denied by the
//!     server, so a compromised host can neither read nor forge another host's (or
//!     tenant's) messages. **The agent must connect with that inbox prefix**
//!     (async-nats `ConnectOptions::custom_inbox_prefix`): the default `_INBOX` is not
//!     allowed, since a shared inbox would let one host read another's replies;
//!   - the operator's user in the system account ([`Permissions::claims_pusher`]) may only
//!     push account JWTs to a server with the full resolver. The server stores whatever
//!     it is pushed and checks the issuer only when the account is used, so keep its
//!     credentials on the control plane.
//!
//! The user's seed goes to the host in a `.creds` file ([`Credentials::to_creds_file`],
//! read by clients with `credentials_file`); seeds never appear in `Debug` output or error
//! messages ([`Secret`]).
//!
//! **Names.** A tenant or host name becomes one token of a subject
//! (`rw.v1.cmd.{tenant}.{host}`), so it must be exactly one token: 1 to
//! [`MAX_NAME_LEN`] characters of `[A-Za-z0-9_@:-]`. A `.` is refused, not encoded: host
//! `a` may publish `rw.v1.evt.t.a.>`, which would cover the events of a host named `a.b`;
//! `*`, `>` and whitespace would widen a permission outright. Give hosts with dotted names
//! (FQDNs) an id without dots at enrolment (e.g. `web1-example-com`). See [`check_name`].
//!
//! **Deployment.** [`server_config`] writes the nats-server configuration: the operator
//! JWT, the system account, and `resolver: MEMORY` with every account JWT preloaded — fit
//! for tests: nats-server 2.15 applies an account pushed to it at run time, but forgets it
//! when it restarts. Production (and `runwarden server --init-nats`) uses [`server_config_full_resolver`] (`resolver: { type: full,
//! dir: … }`): the operator pushes a new or changed account JWT at run time as a system
//! account user ([`Permissions::claims_pusher`]) with a request to
//! [`claims_update_subject`]. That is also how a compromised host is cut off: sign the
//! tenant's account again with its user in [`AccountSpec::revoked_users`] and push it. Add `jetstream { store_dir: … }` and the listen address to
//! the generated text.
//!
//! The JWTs follow the NATS v2 format (as the nats-io `jwt` library writes them): header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, claims with `jti` = unpadded base32 of the
//! SHA-512/256 of the standard claims (`aud`, `exp`, `jti`, `iat`, `iss`, `name`, `nbf`,
//! `sub`, empty ones omitted) serialised without `jti`, and the ed25519 signature of the
//! issuer over `header.claims`, all base64url without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::{KeyPair, KeyPairType};
use serde::Serialize;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::fmt;

/// The JetStream stream commands travel on (work queue, one durable consumer per host).
pub const COMMAND_STREAM: &str = "RW_CMD";
/// The stream of components named by deployment jobs (`jetstream::BLOB_STREAM`).
pub const BLOB_STREAM: &str = "RW_BLOB";

/// Longest tenant, host, user or consumer name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// What went wrong while minting credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A name that cannot be used (in a subject, or at all).
    #[error("{kind} name {name:?} is refused: {reason}")]
    BadName {
        /// Which name: `tenant`, `host`, `consumer`, `user`, `operator`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// A seed that is not an nkey seed of the expected kind (the seed itself is never
    /// part of the message).
    #[error(
        "the {kind} seed is not a valid nkey seed of that kind (expected a seed starting with {prefix:?}): check the stored seed"
    )]
    BadSeed {
        /// `operator` or `account`.
        kind: &'static str,
        /// The prefix such a seed starts with.
        prefix: &'static str,
    },
    /// A revoked user that is not a user public key.
    #[error("a revoked user {key} is not a user public key (U…): revoke users by their public key")]
    BadKey {
        /// The key as given if it is a public key of another kind, else `<not a public key>`
        /// (never a seed).
        key: String,
    },
    /// Signing or encoding failed (should not happen with a valid key).
    #[error("could not sign the {0} JWT")]
    Sign(&'static str),
}

/// `Result` with [`AuthError`].
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Key material: a seed, or a `.creds` file holding one. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret text, e.g. to write a `.creds` file (mode 0600) or store a seed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Check that `name` (a tenant, host or consumer name, for the message `kind`) is exactly
/// one subject token: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9_@:-]`. Dots are
/// refused (a dotted host `a.b` would fall under host `a`'s `rw.v1.evt.t.a.>`), and so
/// are wildcards, whitespace and everything else.
pub fn check_name(kind: &'static str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(AuthError::BadName {
            kind,
            name: name.chars().take(2 * MAX_NAME_LEN).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    if name.contains('.') {
        return bad(
            "a '.' would add a subject token (host 'a' could then publish as host 'a.b'): use an id without dots, e.g. '-' for '.'",
        );
    }
    if name.contains(['*', '>']) {
        return bad("'*' and '>' are subject wildcards");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b':' | b'-'))
    {
        return bad("only A-Z, a-z, 0-9, '_', '@', ':' and '-' are allowed");
    }
    Ok(())
}

/// The inbox prefix the agent of `host` must connect with
/// (async-nats `ConnectOptions::custom_inbox_prefix`): `_INBOX_{host}`. Its user may
/// subscribe only below it.
pub fn agent_inbox_prefix(host: &str) -> Result<String> {
    check_name("host", host)?;
    Ok(format!("_INBOX_{host}"))
}

/// The operator: holds the operator key and the system account, signs account JWTs.
pub struct Operator {
    name: String,
    key: KeyPair,
    jwt: String,
    system: Account,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("public_key", &self.key.public_key())
            .field("system_account", &self.system.public_key())
            .finish_non_exhaustive()
    }
}

/// Domain separation of the system account key derived from the operator seed.
const SYSTEM_ACCOUNT_KDF: &[u8] = b"runwarden nats system account v1\0";

impl Operator {
    /// A new operator named `name` with a fresh key (keep [`Operator::seed`]).
    pub fn generate(name: &str) -> Result<Operator> {
        Self::with_key(name, KeyPair::new_operator())
    }

    /// The operator named `name` whose seed (`SO…`) is `seed`.
    pub fn from_seed(name: &str, seed: &str) -> Result<Operator> {
        Self::with_key(name, key_from_seed(seed, KeyPairType::Operator)?)
    }

    fn with_key(name: &str, key: KeyPair) -> Result<Operator> {
        check_label("operator", name)?;
        let system_key = {
            let seed = key.seed().map_err(|_| AuthError::Sign("operator"))?;
            let (_, raw) =
                nkeys::decode_seed(&seed).map_err(|_| AuthError::Sign("system account"))?;
            let mut h = sha2::Sha256::new();
            h.update(SYSTEM_ACCOUNT_KDF);
            h.update(raw);
            KeyPair::new_from_raw(KeyPairType::Account, h.finalize().into())
                .map_err(|_| AuthError::Sign("system account"))?
        };
        let system = Account::signed(&key, "SYS".into(), system_key, None)?;
        let jwt = encode(
            &key,
            "operator",
            &key.public_key(),
            name,
            &OperatorNats {
                system_account: system.public_key(),
                kind: "operator",
                version: 2,
            },
        )?;
        Ok(Operator {
            name: name.to_string(),
            key,
            jwt,
            system,
        })
    }

    /// The operator seed (`SO…`): the secret to store to mint again with this operator.
    pub fn seed(&self) -> Secret {
        Secret(
            self.key
                .seed()
                .expect("a generated or decoded key has its seed"),
        )
    }

    /// The operator public key (`O…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The self-signed operator JWT (the nats-server's `operator`).
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The system account (no JetStream), named `SYS`; its key derives from the operator
    /// seed.
    pub fn system_account(&self) -> &Account {
        &self.system
    }

    /// A new account for `tenant` (fresh key, keep [`Account::seed`]) with default limits.
    pub fn account(&self, tenant: &str) -> Result<Account> {
        self.account_with(tenant, None, &AccountSpec::default())
    }

    /// The account of `tenant`: with the stored seed (`SA…`) if given, else a fresh key;
    /// its JWT signed now as `spec` says. To change a tenant's limits or revoke a user,
    /// sign again with its seed and push the new JWT ([`claims_update_subject`]).
    pub fn account_with(
        &self,
        tenant: &str,
        seed: Option<&str>,
        spec: &AccountSpec,
    ) -> Result<Account> {
        check_name("tenant", tenant)?;
        for user in spec.revoked_users.keys() {
            let ok = KeyPair::from_public_key(user)
                .is_ok_and(|k| k.key_pair_type() == KeyPairType::User);
            if !ok {
                // Echo only what is public: the text may be a seed given by mistake.
                let key = match KeyPair::from_public_key(user) {
                    Ok(k) => k.public_key(),
                    Err(_) => "<not a public key>".into(),
                };
                return Err(AuthError::BadKey { key });
            }
        }
        let key = match seed {
            Some(s) => key_from_seed(s, KeyPairType::Account)?,
            None => KeyPair::new_account(),
        };
        Account::signed(&self.key, tenant.to_string(), key, Some(spec))
    }
}

/// What a tenant's account JWT says: its limits, and the users it no longer trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountSpec {
    /// JetStream quotas and connections.
    pub limits: AccountLimits,
    /// Revoked users: user public key (`U…`) → Unix seconds; that user's JWTs issued at
    /// or before then are refused (e.g. a compromised host's agent user, at "now").
    pub revoked_users: BTreeMap<String, i64>,
}

/// A tenant's JetStream quotas and connection limit (`-1` = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountLimits {
    /// Bytes of memory storage across the account's streams.
    pub memory_bytes: i64,
    /// Bytes of file storage across the account's streams.
    pub disk_bytes: i64,
    /// Number of streams.
    pub streams: i64,
    /// Number of consumers (one per host on `RW_CMD`, plus the control plane's).
    pub consumers: i64,
    /// Concurrent client connections.
    pub connections: i64,
}

impl Default for AccountLimits {
    /// 64 MiB of memory, 1 GiB of disk, 16 streams, 4096 consumers, unlimited connections.
    fn default() -> Self {
        AccountLimits {
            memory_bytes: 64 << 20,
            disk_bytes: 1 << 30,
            streams: 16,
            consumers: 4096,
            connections: -1,
        }
    }
}

/// A NATS account (one per tenant, or the system account) with its key and JWT.
pub struct Account {
    name: String,
    key: KeyPair,
    jwt: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Account {
    fn signed(
        operator: &KeyPair,
        name: String,
        key: KeyPair,
        spec: Option<&AccountSpec>,
    ) -> Result<Account> {
        // Unlimited core NATS, bearer tokens refused; JetStream off unless a spec is given.
        let js = spec.map_or(
            AccountLimits {
                memory_bytes: 0,
                disk_bytes: 0,
                streams: 0,
                consumers: 0,
                connections: -1,
            },
            |s| s.limits,
        );
        let nats = AccountNats {
            limits: OperatorLimits {
                subs: -1,
                data: -1,
                payload: -1,
                imports: -1,
                exports: -1,
                wildcards: true,
                disallow_bearer: true,
                conn: js.connections,
                leaf: -1,
                mem_storage: js.memory_bytes,
                disk_storage: js.disk_bytes,
                streams: js.streams,
                consumer: js.consumers,
            },
            revocations: spec.map(|s| &s.revoked_users).filter(|r| !r.is_empty()),
            kind: "account",
            version: 2,
        };
        let jwt = encode(operator, "account", &key.public_key(), &name, &nats)?;
        Ok(Account { name, key, jwt })
    }

    /// The account's name (the tenant).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account public key (`A…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The account JWT, signed by the operator.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The account seed (`SA…`): the secret to store to sign this tenant's users later.
    pub fn seed(&self) -> Secret {
        Secret(
            self.key
                .seed()
                .expect("a generated or decoded key has its seed"),
        )
    }

    /// A new user `name` of this account (fresh user key) allowed `permissions`.
    pub fn user(&self, name: &str, permissions: &Permissions) -> Result<Credentials> {
        check_label("user", name)?;
        let key = KeyPair::new_user();
        let nats = UserNats {
            publish: permissions.publish.as_slice().into(),
            subscribe: permissions.subscribe.as_slice().into(),
            subs: -1,
            data: -1,
            payload: -1,
            kind: "user",
            version: 2,
        };
        let jwt = encode(&self.key, "user", &key.public_key(), name, &nats)?;
        Ok(Credentials {
            name: name.to_string(),
            key,
            jwt,
        })
    }
}

/// What a user may publish and subscribe to. Deny by default: a subject not allowed is
/// refused by the server (an empty list allows nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    publish: Vec<String>,
    subscribe: Vec<String>,
    inbox_prefix: Option<String>,
}

impl Permissions {
    /// The agent of `host` of `tenant`, pulling commands from its durable consumer
    /// `consumer` of `RW_CMD` (created by the control plane). Publish:
    ///
    /// - `rw.v1.evt.{tenant}.{host}.>` (its events; the PubAck comes to its inbox),
    /// - `$JS.API.CONSUMER.MSG.NEXT.RW_CMD.{consumer}` (pull),
    /// - `$JS.API.CONSUMER.INFO.RW_CMD.{consumer}` (bind to the consumer),
    /// - `$JS.ACK.RW_CMD.{consumer}.>` (ack, nak, in-progress, term),
    /// - `$JS.API.DIRECT.GET.RW_BLOB.rw.v1.blob.{tenant}.>` (read a component its
    ///   tenant's deployment jobs name, by subject: no other tenant's).
    ///
    /// Subscribe: `_INBOX_{host}.>` only ([`agent_inbox_prefix`]): the agent must connect
    /// with that inbox prefix. Bind with `get_stream_no_info` / `get_consumer_from_stream`:
    /// `$JS.API.STREAM.INFO` is not allowed.
    pub fn agent(tenant: &str, host: &str, consumer: &str) -> Result<Permissions> {
        check_name("tenant", tenant)?;
        check_name("host", host)?;
        check_name("consumer", consumer)?;
        let inbox = agent_inbox_prefix(host)?;
        let s = COMMAND_STREAM;
        Ok(Permissions {
            publish: vec![
                format!("rw.v1.evt.{tenant}.{host}.>"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{s}.{consumer}"),
                format!("$JS.API.CONSUMER.INFO.{s}.{consumer}"),
                format!("$JS.ACK.{s}.{consumer}.>"),
                format!("$JS.API.DIRECT.GET.{BLOB_STREAM}.rw.v1.blob.{tenant}.>"),
            ],
            subscribe: vec![format!("{inbox}.>")],
            inbox_prefix: Some(inbox),
        })
    }

    /// The control plane's user in a tenant account: everything in that account (`>`),
    /// and nothing outside it (accounts are separate).
    pub fn control() -> Permissions {
        Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            inbox_prefix: None,
        }
    }

    /// The operator's user in the system account ([`Operator::system_account`]) that
    /// pushes account JWTs: publish `$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE` only, subscribe
    /// `_INBOX_runwarden.>` only (connect with that inbox prefix).
    pub fn claims_pusher() -> Permissions {
        Permissions {
            publish: vec!["$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE".into()],
            subscribe: vec!["_INBOX_runwarden.>".into()],
            inbox_prefix: Some("_INBOX_runwarden".into()),
        }
    }

    /// Subjects the user may publish to.
    pub fn publish(&self) -> &[String] {
        &self.publish
    }

    /// Subjects the user may subscribe to.
    pub fn subscribe(&self) -> &[String] {
        &self.subscribe
    }

    /// The inbox prefix the user must connect with, if not the default `_INBOX`.
    pub fn inbox_prefix(&self) -> Option<&str> {
        self.inbox_prefix.as_deref()
    }
}

/// A user's JWT and seed: what a client connects with.
pub struct Credentials {
    name: String,
    key: KeyPair,
    jwt: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The user public key (`U…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The user JWT, signed by the account.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The user seed (`SU…`).
    pub fn seed(&self) -> Secret {
        Secret(self.key.seed().expect("a generated key has its seed"))
    }

    /// The `.creds` file text (the JWT block, then the seed block) that NATS clients read
    /// with `credentials_file`. Write it with mode 0600: it holds the seed.
    pub fn to_creds_file(&self) -> Secret {
        Secret(format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            jwt = self.jwt,
            seed = self.seed().expose(),
        ))
    }
}

/// The nats-server configuration for operator mode: the operator JWT, its system account,
/// and `resolver: MEMORY` with the system account and `accounts` preloaded (fixed at
/// start: a new tenant means a new configuration). Add the listen address and
/// `jetstream { store_dir: … }`. Production uses [`server_config_full_resolver`].
pub fn server_config(operator: &Operator, accounts: &[Account]) -> String {
    config(operator, "resolver: MEMORY\n", accounts)
}

/// The nats-server configuration for operator mode with the full (`nats`) resolver: the
/// server keeps account JWTs in `dir` and takes new and updated ones from the operator at
/// run time ([`claims_update_subject`], sent by a system account user with
/// [`Permissions::claims_pusher`]); the system account and `accounts` are preloaded.
pub fn server_config_full_resolver(
    operator: &Operator,
    dir: &std::path::Path,
    accounts: &[Account],
) -> String {
    let dir = serde_json::to_string(&dir.to_string_lossy()).expect("a string serialises");
    let resolver = format!(
        "resolver: {{\n  type: full\n  dir: {dir}\n  allow_delete: false\n  \
         interval: \"2m\"\n  timeout: \"1.9s\"\n}}\n"
    );
    config(operator, &resolver, accounts)
}

fn config(operator: &Operator, resolver: &str, accounts: &[Account]) -> String {
    let sys = operator.system_account();
    let mut out = format!(
        "# nats-server in operator mode, written by runwarden (operator {name:?}).\n\
         operator: \"{op}\"\n\
         system_account: {sys_pub}\n\
         {resolver}\
         resolver_preload: {{\n  \
         # SYS\n  {sys_pub}: \"{sys_jwt}\"\n",
        name = operator.name,
        op = operator.jwt(),
        sys_pub = sys.public_key(),
        sys_jwt = sys.jwt(),
    );
    for a in accounts {
        out.push_str(&format!(
            "  # tenant {}\n  {}: \"{}\"\n",
            a.name(),
            a.public_key(),
            a.jwt()
        ));
    }
    out.push_str("}\n");
    out
}

/// The subject a system account user sends `account`'s JWT to (as a request) so that a
/// server with the full resolver stores and applies it: new tenants, changed limits.
/// The answer is JSON with `data` (`code` 200) on success, `error` otherwise.
pub fn claims_update_subject(account: &Account) -> String {
    format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", account.public_key())
}

/// A JWT label (operator or user name): not a subject token, but kept printable and short.
fn check_label(kind: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b':' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadName {
            kind,
            name: name.chars().take(2 * MAX_NAME_LEN).collect(),
            reason: "use 1 to 64 characters of A-Z, a-z, 0-9, '_', '@', ':', '-', '.'",
        })
    }
}

fn key_from_seed(seed: &str, kind: KeyPairType) -> Result<KeyPair> {
    let (name, prefix) = match kind {
        KeyPairType::Operator => ("operator", "SO"),
        _ => ("account", "SA"),
    };
    let bad = AuthError::BadSeed { kind: name, prefix };
    let key = KeyPair::from_seed(seed.trim()).map_err(|_| bad)?;
    if key.key_pair_type() != kind {
        return Err(AuthError::BadSeed { kind: name, prefix });
    }
    Ok(key)
}

/// The standard claims, in the order (and with the omissions) the jti hash is taken over.
#[derive(Serialize)]
struct ClaimsData<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    jti: &'a str,
    iat: i64,
    iss: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    sub: &'a str,
}

#[derive(Serialize)]
struct Claims<'a, T> {
    #[serde(flatten)]
    data: ClaimsData<'a>,
    nats: &'a T,
}

#[derive(Serialize)]
struct OperatorNats {
    system_account: String,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct AccountNats<'a> {
    limits: OperatorLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocations: Option<&'a BTreeMap<String, i64>>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct OperatorLimits {
    subs: i64,
    data: i64,
    payload: i64,
    imports: i64,
    exports: i64,
    wildcards: bool,
    disallow_bearer: bool,
    conn: i64,
    leaf: i64,
    mem_storage: i64,
    disk_storage: i64,
    streams: i64,
    consumer: i64,
}

#[derive(Serialize)]
struct UserNats<'a> {
    #[serde(rename = "pub")]
    publish: Permission<'a>,
    #[serde(rename = "sub")]
    subscribe: Permission<'a>,
    subs: i64,
    data: i64,
    payload: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

/// An allow list; an empty one is written as `deny: [">"]`, since NATS reads an empty
/// permission as "everything".
#[derive(Serialize)]
struct Permission<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    allow: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    deny: &'a [&'static str],
}

impl<'a> From<&'a [String]> for Permission<'a> {
    fn from(allow: &'a [String]) -> Self {
        Permission {
            allow,
            deny: if allow.is_empty() { &[">"] } else { &[] },
        }
    }
}

/// The `jti` of claims: unpadded base32 of SHA-512/256 of the standard claims without it.
fn jti(data: &ClaimsData<'_>) -> String {
    let json = serde_json::to_vec(data).expect("claims serialise");
    data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(json))
}

fn encode<T: Serialize>(
    issuer: &KeyPair,
    what: &'static str,
    subject: &str,
    name: &str,
    nats: &T,
) -> Result<String> {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let iss = issuer.public_key();
    let mut data = ClaimsData {
        jti: "",
        iat,
        iss: &iss,
        name,
        sub: subject,
    };
    let id = jti(&data);
    data.jti = &id;
    let claims = serde_json::to_vec(&Claims { data, nats }).map_err(|_| AuthError::Sign(what))?;
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = issuer
        .sign(token.as_bytes())
        .map_err(|_| AuthError::Sign(what))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Decode a JWT and check its signature with the key in `iss`.
    fn decode(token: &str) -> (Value, Value) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap())
            .expect("header is JSON");
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
            .expect("claims are JSON");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let issuer = KeyPair::from_public_key(claims["iss"].as_str().unwrap()).unwrap();
        issuer
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signed by iss");
        (header, claims)
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn operator_account_and_user_jwts_round_trip() {
        let op = Operator::generate("runwarden").unwrap();
        let (h, c) = decode(op.jwt());
        assert_eq!(h, serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"}));
        assert_eq!(c["iss"], op.public_key());
        assert_eq!(c["sub"], op.public_key(), "self-signed");
        assert!(op.public_key().starts_with('O'));
        assert_eq!(c["name"], "runwarden");
        assert_eq!(c["nats"]["type"], "operator");
        assert_eq!(c["nats"]["version"], 2);
        assert_eq!(
            c["nats"]["system_account"],
            op.system_account().public_key()
        );

        let (_, sys) = decode(op.system_account().jwt());
        assert_eq!(sys["iss"], op.public_key());
        assert_eq!(
            sys["nats"]["limits"]["mem_storage"], 0,
            "no JetStream in SYS"
        );

        let limits = AccountLimits {
            memory_bytes: 1 << 20,
            disk_bytes: 2 << 20,
            streams: 3,
            consumers: 4,
            connections: 5,
        };
        let spec = AccountSpec {
            limits,
            revoked_users: Default::default(),
        };
        let acct = op.account_with("acme", None, &spec).unwrap();
        let (_, a) = decode(acct.jwt());
        assert_eq!(a["iss"], op.public_key());
        assert_eq!(a["sub"], acct.public_key());
        assert!(acct.public_key().starts_with('A'));
        assert_eq!(a["name"], "acme");
        assert_eq!(a["nats"]["type"], "account");
        let l = &a["nats"]["limits"];
        assert_eq!(
            (&l["mem_storage"], &l["disk_storage"], &l["streams"]),
            (&(1 << 20).into(), &(2 << 20).into(), &3.into())
        );
        assert_eq!((&l["consumer"], &l["conn"]), (&4.into(), &5.into()));
        assert_eq!(l["disallow_bearer"], true);
        assert!(a["nats"].get("revocations").is_none());

        let perms = Permissions::agent("acme", "h1", "agent-h1").unwrap();
        let user = acct.user("agent-h1", &perms).unwrap();
        let (_, u) = decode(user.jwt());
        assert_eq!(u["iss"], acct.public_key());
        assert_eq!(u["sub"], user.public_key());
        assert!(user.public_key().starts_with('U'));
        assert_eq!(u["nats"]["type"], "user");
        assert_eq!(u["nats"]["version"], 2);
        assert!(u["nats"].get("issuer_account").is_none(), "no signing keys");
        assert_eq!(strings(&u["nats"]["pub"]["allow"]), perms.publish());
        assert_eq!(strings(&u["nats"]["sub"]["allow"]), ["_INBOX_h1.>"]);
        assert!(u["nats"]["pub"].get("deny").is_none());
    }

    #[test]
    fn revoked_users_go_into_the_account_jwt() {
        let op = Operator::generate("runwarden").unwrap();
        let acct = op.account("acme").unwrap();
        let user = acct.user("agent-h1", &Permissions::control()).unwrap();
        let mut spec = AccountSpec::default();
        spec.revoked_users.insert(user.public_key(), 1_700_000_000);
        let again = op
            .account_with("acme", Some(acct.seed().expose()), &spec)
            .unwrap();
        let (_, a) = decode(again.jwt());
        assert_eq!(
            a["nats"]["revocations"],
            serde_json::json!({ user.public_key(): 1_700_000_000 })
        );
        // Only user keys can be revoked.
        for bad in [
            acct.public_key(),
            "nonsense".to_string(),
            user.seed().expose().to_string(),
        ] {
            let mut spec = AccountSpec::default();
            spec.revoked_users.insert(bad.clone(), 1);
            let e = op.account_with("acme", None, &spec).unwrap_err();
            assert!(matches!(e, AuthError::BadKey { .. }), "{e}");
            if bad.starts_with('S') {
                assert!(!e.to_string().contains(&bad[..12]), "{e}");
            }
        }
    }

    #[test]
    fn a_tampered_jwt_fails_verification() {
        let op = Operator::generate("runwarden").unwrap();
        let acct = op.account("acme").unwrap();
        let parts: Vec<&str> = acct.jwt().split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["nats"]["limits"]["streams"] = (-1).into();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert!(
            op.key
                .verify(format!("{}.{forged}", parts[0]).as_bytes(), &sig)
                .is_err()
        );
    }

    #[test]
    fn jti_is_base32_sha512_256_of_the_standard_claims_without_jti() {
        let op = Operator::generate("runwarden").unwrap();
        let user = op
            .account("acme")
            .unwrap()
            .user("ctl", &Permissions::control())
            .unwrap();
        for token in [op.jwt(), user.jwt()] {
            let (_, c) = decode(token);
            // Recompute independently: the Go library's field order, empty fields omitted.
            let mut fields = serde_json::Map::new();
            for k in ["iat", "iss", "name", "sub"] {
                fields.insert(k.into(), c[k].clone());
            }
            let text = format!(
                r#"{{"iat":{},"iss":{},"name":{},"sub":{}}}"#,
                fields["iat"], fields["iss"], fields["name"], fields["sub"]
            );
            let want = data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(text));
            assert_eq!(c["jti"], want);
            assert_eq!(want.len(), 52);
        }
        // A known vector: fixed claims give a fixed id.
        let data = ClaimsData {
            jti: "",
            iat: 1,
            iss: "OISSUER",
            name: "n",
            sub: "SUB",
        };
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(json, r#"{"iat":1,"iss":"OISSUER","name":"n","sub":"SUB"}"#);
        assert_eq!(
            jti(&data),
            data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(json))
        );
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        let p = Permissions {
            publish: vec![],
            subscribe: vec!["x".into()],
            inbox_prefix: None,
        };
        let op = Operator::generate("runwarden").unwrap();
        let u = op.account("acme").unwrap().user("u", &p).unwrap();
        let (_, c) = decode(u.jwt());
        assert_eq!(c["nats"]["pub"], serde_json::json!({"deny": [">"]}));
        assert_eq!(c["nats"]["sub"], serde_json::json!({"allow": ["x"]}));
    }

    #[test]
    fn creds_file_has_the_jwt_and_seed_blocks_clients_read() {
        let op = Operator::generate("runwarden").unwrap();
        let user = op
            .account("acme")
            .unwrap()
            .user("ctl", &Permissions::control())
            .unwrap();
        let creds = user.to_creds_file();
        let lines: Vec<&str> = creds.expose().lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], user.jwt());
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let i = lines
            .iter()
            .position(|l| *l == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        assert_eq!(lines[i + 1], user.seed().expose());
        assert!(lines[i + 1].starts_with("SU"));
        assert_eq!(lines[i + 2], "------END USER NKEY SEED------");
        // The seed in the file is the key the JWT names.
        let key = KeyPair::from_seed(lines[i + 1]).unwrap();
        assert_eq!(key.public_key(), user.public_key());
    }

    #[test]
    fn seeds_restore_the_same_keys_and_system_account() {
        let op = Operator::generate("runwarden").unwrap();
        let again = Operator::from_seed("runwarden", op.seed().expose()).unwrap();
        assert_eq!(again.public_key(), op.public_key());
        assert_eq!(
            again.system_account().public_key(),
            op.system_account().public_key()
        );
        assert_ne!(op.system_account().public_key(), op.public_key());
        let other = Operator::generate("runwarden").unwrap();
        assert_ne!(
            other.system_account().public_key(),
            op.system_account().public_key()
        );

        let acct = op.account("acme").unwrap();
        let same = op
            .account_with("acme", Some(acct.seed().expose()), &AccountSpec::default())
            .unwrap();
        assert_eq!(same.public_key(), acct.public_key());

        // The wrong kind of seed, or garbage, is refused without echoing it.
        for (bad, kind) in [
            (acct.seed(), "operator"),
            (Secret("SOnotaseed".into()), "operator"),
        ] {
            let e = Operator::from_seed("runwarden", bad.expose()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(kind), "{msg}");
            assert!(!msg.contains(bad.expose()), "{msg}");
        }
        let e = op
            .account_with("acme", Some(op.seed().expose()), &AccountSpec::default())
            .unwrap_err();
        assert!(matches!(
            e,
            AuthError::BadSeed {
                kind: "account",
                ..
            }
        ));
        assert!(!e.to_string().contains(op.seed().expose()));
    }

    #[test]
    fn names_that_could_widen_a_subject_are_refused() {
        for ok in [
            "h1",
            "acme",
            "web-01",
            "a_b",
            "user@site",
            "x:y",
            &"a".repeat(64),
        ] {
            check_name("host", ok).unwrap();
        }
        for bad in [
            "",
            "a.b",
            ".",
            "a.",
            "*",
            ">",
            "a*",
            "a>",
            "a b",
            "a\tb",
            "a\nb",
            "é",
            "a/b",
            &"a".repeat(65),
        ] {
            let e = check_name("host", bad).unwrap_err();
            assert!(e.to_string().starts_with("host name "), "{e}");
            assert!(Permissions::agent("acme", bad, "c").is_err(), "{bad:?}");
            assert!(Permissions::agent(bad, "h1", "c").is_err(), "{bad:?}");
            assert!(Permissions::agent("acme", "h1", bad).is_err(), "{bad:?}");
        }
        let op = Operator::generate("runwarden").unwrap();
        assert!(op.account("a.b").is_err());
        assert!(op.account("a>").is_err());
        let e = check_name("host", "web1.example.com").unwrap_err();
        assert!(e.to_string().contains("'.'"), "{e}");
        assert!(agent_inbox_prefix("a.b").is_err());
        assert_eq!(agent_inbox_prefix("h1").unwrap(), "_INBOX_h1");
    }

    #[test]
    fn agent_permissions_are_exactly_its_own_subjects() {
        let p = Permissions::agent("acme", "h1", "agent-h1").unwrap();
        assert_eq!(
            p.publish(),
            [
                "rw.v1.evt.acme.h1.>",
                "$JS.API.CONSUMER.MSG.NEXT.RW_CMD.agent-h1",
                "$JS.API.CONSUMER.INFO.RW_CMD.agent-h1",
                "$JS.ACK.RW_CMD.agent-h1.>",
                "$JS.API.DIRECT.GET.RW_BLOB.rw.v1.blob.acme.>",
            ]
        );
        assert_eq!(p.subscribe(), ["_INBOX_h1.>"]);
        assert_eq!(p.inbox_prefix(), Some("_INBOX_h1"));
        let c = Permissions::control();
        assert_eq!(
            (c.publish(), c.subscribe()),
            ([">".to_string()].as_slice(), [">".to_string()].as_slice())
        );
        assert_eq!(c.inbox_prefix(), None);
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let op = Operator::generate("runwarden").unwrap();
        let acct = op.account("acme").unwrap();
        let user = acct.user("ctl", &Permissions::control()).unwrap();
        let seeds = [
            op.seed(),
            acct.seed(),
            user.seed(),
            op.system_account().seed(),
        ];
        let debug = format!(
            "{op:?} {acct:?} {user:?} {:?} {seeds:?} {:?}",
            op.system_account(),
            user.to_creds_file()
        );
        for s in &seeds {
            assert!(!debug.contains(s.expose()), "{debug}");
            // Not even a prefix of the seed's body.
            assert!(!debug.contains(&s.expose()[..12]), "{debug}");
        }
        assert!(debug.contains(&op.public_key()), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn server_config_preloads_the_system_account_and_tenants() {
        let op = Operator::generate("runwarden").unwrap();
        let a = op.account("acme").unwrap();
        let b = op.account("globex").unwrap();
        let text = server_config(&op, &[a, b]);
        assert!(text.contains(&format!("operator: \"{}\"", op.jwt())));
        assert!(text.contains(&format!(
            "system_account: {}",
            op.system_account().public_key()
        )));
        assert!(text.contains("resolver: MEMORY"));
        assert!(text.contains(&format!(
            "{}: \"{}\"",
            op.system_account().public_key(),
            op.system_account().jwt()
        )));
        assert!(text.contains("# tenant acme") && text.contains("# tenant globex"));
        assert!(!text.contains(op.seed().expose()));

        let full = server_config_full_resolver(&op, std::path::Path::new("/var/lib/\"jwt\""), &[]);
        assert!(full.contains("type: full"), "{full}");
        assert!(full.contains(r#"dir: "/var/lib/\"jwt\"""#), "{full}");
        assert!(full.contains(&op.system_account().public_key()));
        assert!(!full.contains("MEMORY"));
    }

    #[test]
    fn the_claims_pusher_may_only_push_account_jwts() {
        let p = Permissions::claims_pusher();
        assert_eq!(p.publish(), ["$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"]);
        assert_eq!(p.subscribe(), ["_INBOX_runwarden.>"]);
        assert_eq!(p.inbox_prefix(), Some("_INBOX_runwarden"));
        let op = Operator::generate("runwarden").unwrap();
        let a = op.account("acme").unwrap();
        assert_eq!(
            claims_update_subject(&a),
            format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", a.public_key())
        );
    }
}
