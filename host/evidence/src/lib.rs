//! Evidence for runwarden: what an auditor checks offline.
//!
//! - [`keys`](SigningKey): named Ed25519 keys in the C2SP signed-note text formats, and key
//!   files.
//! - [`dsse`](Envelope): DSSE envelopes that sign each invocation record.
//! - [`merkle`](CompactTree): RFC 6962/9162 Merkle hashing, inclusion and consistency proofs,
//!   and an append-only compact tree.
//! - [`checkpoint`](Checkpoint): signed tree heads in the C2SP tlog-checkpoint and
//!   signed-note formats.
//!
//! - [`record`](Statement): the in-toto statement of one invocation.
//! - [`release`](Release): a publisher's signed release of a component, and the
//!   [`TrustPolicy`] that admits it.
//! - [`bundle`](verify_bundle): auditor bundles and their offline verification.
//! - [`tenant`](verify_tenant_bundle): a fleet tenant's bundle: the control plane's log
//!   and every host's, under one signed statement.
//! - [`store`](Store): the durable, append-only log in SQLite or PostgreSQL.
//! - [`escape_control`]: outside text made safe to print on a terminal.

mod bundle;
mod checkpoint;
mod dsse;
mod error;
mod files;
mod keys;
mod merkle;
mod record;
mod release;
mod store;
mod tenant;
mod text;

pub use bundle::{
    BUNDLE_VERSION, BundleContents, BundleError, BundleRecord, BundleWriter, Consistency, Manifest,
    SEAL, SEAL_PAYLOAD_TYPE, SegmentStart, TimeZone, Verified, export, export_segment,
    export_stream, hash_hex, now_rfc3339, verify_bundle,
};
pub use checkpoint::Checkpoint;
pub use dsse::{Envelope, EnvelopeSignature, pae};
pub use error::{Error, Result};
pub use files::{create_private_dir, private_sqlite_files, write_atomic};
pub use keys::{
    SigningKey, VerifyingKey, log_origin, read_signing_key, read_verifying_key, write_key_pair,
};
pub use merkle::{
    CompactTree, EMPTY_ROOT, Hash, MerkleTree, consistency_proof, consistency_ranges,
    hash_from_slice, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
pub use record::{
    Invocation, PAYLOAD_TYPE, PREDICATE_TYPE, Provenance, STATEMENT_TYPE, Statement, Subject,
    rfc3339_ms,
};
pub use release::{
    ComponentKind, RELEASE_PREDICATE_TYPE, Release, ReleaseError, RiskLevel, TrustPolicy,
    TrustedPublisher, compare_versions, component_sha256, glob_match,
};
pub use store::{
    Filter, MAX_SEGMENT_RECORDS, MirrorHead, Mirrored, NewRecord, Segment, Store, StoredRecord,
    checkpoint_file_of, tenant_origin, valid_tenant,
};
pub use tenant::{
    LogEntry, LogRole, LogSource, TENANT_BUNDLE_VERSION, TENANT_PAYLOAD_TYPE, TENANT_STATEMENT,
    TenantLog, TenantStatement, TenantVerified, export_tenant, is_tenant_bundle,
    verify_tenant_bundle, verify_tenant_bundle_since,
};
pub use text::{escape_control, is_unsafe_char};
