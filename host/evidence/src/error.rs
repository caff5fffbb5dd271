//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while creating or checking evidence.
///
/// Messages say what was wrong and with which input; none of them ever contains private key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key name is empty or contains whitespace, a control character or `+`.
    #[error("invalid key name {name:?}: {reason}")]
    InvalidKeyName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A key in text form could not be parsed.
    #[error("{0}")]
    MalformedKey(String),

    /// The key ID written in a key's text form does not belong to that key.
    #[error("key {name}: key ID {stated} does not match the key (expected {computed})")]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The key ID found in the text, in hex.
        stated: String,
        /// The key ID computed from name and key, in hex.
        computed: String,
    },

    /// A file could not be read or written.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read private key".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// `write_key_pair` found a key file already there and refused to overwrite it.
    #[error("refusing to overwrite existing key file {}: remove it or choose another key name", path.display())]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A private key file can be read by users other than its owner.
    #[error(
        "private key file {} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The operating system could not provide randomness for a new key.
    #[error("could not get randomness from the operating system: {0}")]
    Random(String),

    /// A base64 field could not be decoded.
    #[error("malformed base64 in {field}: {source}")]
    Base64 {
        /// Which field, e.g. "envelope payload".
        field: String,
        /// The decoding error.
        #[source]
        source: base64::DecodeError,
    },

    /// An envelope could not be parsed as DSSE JSON.
    #[error("not a DSSE envelope: {0}")]
    Json(#[from] serde_json::Error),

    /// No signature on an envelope or note was made by a trusted key.
    #[error(
        "{what} has no signature by a trusted key (signatures by: {})",
        list(signers)
    )]
    NoTrustedSignature {
        /// "envelope" or "note".
        what: &'static str,
        /// The key IDs (envelope) or `name+keyid` (note) that did sign.
        signers: Vec<String>,
    },

    /// A trusted key's signature on an envelope or note does not verify: the content or the
    /// signature was altered.
    #[error(
        "{what} signature by trusted key {key} does not verify: the signed content or the signature was altered"
    )]
    BadSignature {
        /// "envelope" or "note".
        what: &'static str,
        /// The key, as `name+keyid`.
        key: String,
    },

    /// A signed note does not follow the C2SP signed-note format.
    #[error("malformed signed note: {0}")]
    MalformedNote(String),

    /// A note's text is not a C2SP tlog checkpoint, or a checkpoint cannot be written as one.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),

    /// A byte string that should be a SHA-256 hash has the wrong length.
    #[error("{what} is {len} bytes long, expected a 32-byte SHA-256 hash")]
    HashLength {
        /// Which value.
        what: String,
        /// Its length.
        len: usize,
    },

    /// A leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },

    /// Two tree sizes cannot be related by a consistency proof.
    #[error("no consistency proof from tree size {old_size} to {new_size}: {reason}")]
    InvalidTreeSizes {
        /// The older size.
        old_size: u64,
        /// The newer size.
        new_size: u64,
        /// Why.
        reason: &'static str,
    },

    /// A proof has the wrong number of hashes for the sizes and index it claims.
    #[error("{what} has {got} hashes, expected {want}")]
    ProofLength {
        /// "inclusion proof" or "consistency proof".
        what: &'static str,
        /// Hashes present.
        got: usize,
        /// Hashes required.
        want: usize,
    },

    /// A proof does not lead to the root it should.
    #[error("{what} does not match: computed {computed}, expected {expected}")]
    RootMismatch {
        /// Which root, e.g. "inclusion proof root".
        what: &'static str,
        /// The root computed from the proof, in hex.
        computed: String,
        /// The root it was checked against, in hex.
        expected: String,
    },

    /// A signed envelope does not hold a runwarden invocation statement.
    #[error("malformed record: {0}")]
    MalformedRecord(String),

    /// A log has one signer: this one is claimed by another key or origin.
    #[error(
        "this evidence log is signed by {held}; refusing {claimed}: a Merkle log has one signer (give each signer its own log)"
    )]
    ForeignSigner {
        /// Who signs it.
        held: String,
        /// Who tried.
        claimed: String,
    },

    /// A mirrored log's segment starts past what is held: records are missing.
    #[error(
        "the log {origin} has a gap: {held} records are held, and the next records offered start at {first} (records {held}..{first} are missing; ask its signer for them)"
    )]
    LogGap {
        /// The log.
        origin: String,
        /// Records held.
        held: u64,
        /// Where the offered records start.
        first: u64,
    },

    /// A log's signer sent records without a checkpoint: its own copy misses a record
    /// before them (deleted from its buffer), so it can sign no checkpoint past the hole.
    #[error(
        "the signer of log {origin} misses a record before {first} in its own copy (deleted from its buffer?) and can sign no checkpoint past it; {held} records are held here: restore its log or enroll the host again"
    )]
    SignerLogHole {
        /// The log.
        origin: String,
        /// Records held.
        held: u64,
        /// Where the records offered without a checkpoint start.
        first: u64,
    },

    /// A mirrored log disagrees with itself: two different histories under one signature.
    #[error("the log {origin} forked at record {index}: {detail}")]
    LogFork {
        /// The log.
        origin: String,
        /// The first index where the histories differ (or the mirror's end).
        index: u64,
        /// What differs.
        detail: String,
    },

    /// The evidence database could not be opened, read or written.
    #[error("evidence store: {0}")]
    Store(String),

    /// The log lost or changed records that a checkpoint it signed covers, or its database
    /// is damaged: refusing to serve or export it rather than presenting a shorter log as
    /// complete.
    #[error(
        "the evidence log {database} is damaged or lost records: {problem}. Nothing was written. \
         To recover: stop every runwarden using it and restore {database} (with its -wal file, if \
         any) from a backup taken after {signed_at}; keep {}, it is the signed record of what the \
         log held. If no such backup exists, move the database files and {} into an archive \
         directory (give it to your auditors) and start again: runwarden then starts a new, \
         empty log",
        checkpoint_file.display(),
        checkpoint_file.display()
    )]
    LogIntegrity {
        /// The database (path or URL without credentials).
        database: String,
        /// The file that keeps the latest signed checkpoint.
        checkpoint_file: PathBuf,
        /// What is wrong, with the sizes.
        problem: String,
        /// When the latest checkpoint was kept (RFC 3339), or "the last checkpoint".
        signed_at: String,
    },

    /// The database was migrated by a newer runwarden.
    #[error(
        "the evidence database has schema version {0}, newer than this runwarden knows: upgrade runwarden (nothing was written)"
    )]
    SchemaTooNew(i64),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
