//! runwarden's monthly executive report.
//!
//! - [`Figures`]: what a tenant's month comes to (computed by the CLI from the control
//!   plane's store), serialisable (the report's signed data).
//! - [`html`]: the report as one self-contained HTML page (inline CSS and SVG charts).
//! - [`pdf`]: the same report as a PDF written by hand — no fonts embedded (the standard
//!   Helvetica), no timestamps, no randomness: the same figures give the same bytes.
//! - [`tz`]: local time in an IANA time zone, from the system's TZif files.

mod content;
pub mod figures;
pub mod html;
pub mod pdf;
pub mod tz;

pub use figures::*;
