//! Write runwarden runbooks in Rust.
//!
//! A runbook is one type implementing [`Runbook`]: a manifest saying what it is and
//! which capabilities it needs, and a `run` function taking typed params. The
//! [`export_runbook!`] macro turns it into the component exports the host calls.
//!
//! ```ignore
//! use runwarden_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Params { unit: String }
//!
//! struct Restart;
//!
//! impl Runbook for Restart {
//!     type Params = Params;
//!     fn manifest() -> Manifest {
//!         Manifest::new("restart-unit", "0.1.0", "Restart a unit")
//!             .risk(Risk::Medium)
//!             .capability(Capability::Service("*".into()))
//!             .params_schema(serde_json::json!({
//!                 "type": "object", "required": ["unit"],
//!                 "properties": {"unit": {"type": "string"}}
//!             }))
//!     }
//!     fn run(p: Params) -> Result<Outcome, RunError> {
//!         services::restart(&p.unit)?;
//!         Ok(Outcome::healed(format!("restarted {}", p.unit)))
//!     }
//! }
//!
//! runwarden_sdk::export_runbook!(Restart);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "runbook",
        pub_export_macro: true,
        export_macro_name: "__export_runbook_world",
        default_bindings_module: "runwarden_sdk::bindings",
        generate_all,
    });
}

mod manifest;
mod outcome;

pub mod exec;
pub mod http;
pub mod log;
pub mod probe;
pub mod rule;
pub mod secrets;
pub mod services;

pub use manifest::{Capability, Manifest, Risk};
pub use outcome::{HostError, Outcome, RunError, Status};

/// Everything a runbook usually needs.
pub mod prelude {
    pub use crate::{
        Capability, HostError, Manifest, Outcome, Risk, RunError, Runbook, Status, exec, http, log,
        probe, secrets, services,
    };
}

/// A runbook: its manifest and its `run` function.
pub trait Runbook {
    /// The params `run` takes, deserialized from the JSON the host passes (already
    /// validated by the host against [`Manifest::params_schema`]).
    type Params: serde::de::DeserializeOwned;

    /// What this runbook is and which capabilities it needs.
    fn manifest() -> Manifest;

    /// Do the work once.
    fn run(params: Self::Params) -> Result<Outcome, RunError>;
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn describe<R: Runbook>() -> bindings::runwarden::runbook::types::Manifest {
        R::manifest().into_wit()
    }

    pub fn run<R: Runbook>(
        params: String,
    ) -> Result<
        bindings::runwarden::runbook::types::Outcome,
        bindings::runwarden::runbook::types::RunError,
    > {
        let params: R::Params = serde_json::from_str(if params.trim().is_empty() {
            "{}"
        } else {
            &params
        })
        .map_err(|e| RunError::InvalidParams(e.to_string()).into_wit())?;
        R::run(params)
            .map(Outcome::into_wit)
            .map_err(RunError::into_wit)
    }
}

/// Export a [`Runbook`] implementation as the component's `describe` and `run`.
#[macro_export]
macro_rules! export_runbook {
    ($runbook:ty) => {
        struct __RunwardenExport;
        impl $crate::bindings::Guest for __RunwardenExport {
            fn describe() -> $crate::bindings::runwarden::runbook::types::Manifest {
                $crate::__private::describe::<$runbook>()
            }
            fn run(
                params: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::runwarden::runbook::types::Outcome,
                $crate::bindings::runwarden::runbook::types::RunError,
            > {
                $crate::__private::run::<$runbook>(params)
            }
        }
        $crate::bindings::__export_runbook_world!(__RunwardenExport with_types_in $crate::bindings);
    };
}
