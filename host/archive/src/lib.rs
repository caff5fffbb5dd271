//! runwarden's WORM evidence archive: sealed segments of a log in S3 under Object Lock.
//!
//! - [`s3`]: a small S3 client (AWS Signature Version 4 over reqwest) for the calls the
//!   archive makes.
//! - [`Archiver`]: writes a log's records not yet archived as sealed segments under
//!   COMPLIANCE retention, reads each back, and resumes from what the bucket holds;
//!   [`verify_archive`] verifies a log straight from the bucket.

mod archive;
pub mod s3;

pub use archive::{
    ArchiveError, ArchiveVerified, Archived, Archiver, BACKOFF, DEFAULT_RETENTION_DAYS,
    MAX_SEGMENT_BYTES, SEGMENT_BYTES, SEGMENT_RECORDS, Target, archived_logs, verify_archive,
};
