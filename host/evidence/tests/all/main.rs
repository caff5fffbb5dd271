//! Integration tests of runwarden-evidence: published test vectors, proof properties, key
//! files, and the whole record → log → checkpoint → auditor path.

mod browser;
mod bundle;
mod craft;
mod crash;
mod end_to_end;
mod integrity;
mod key_files;
mod origins;
use runwarden_testkit as pg;
mod proofs;
mod release;
mod segment;
mod store;
mod stream;
mod tenant;
mod vectors;
