//! The manifest a runbook describes itself with.

use crate::bindings::runwarden::runbook::types as wit;

/// How much harm a runbook can do when it misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Risk {
    /// Read-only or trivially reversible.
    Low,
    /// Changes state in a recoverable way.
    Medium,
    /// Can lose data or take a service down for long.
    High,
}

/// One capability a runbook asks for; see the WIT `capability` variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Manage units matching a name or glob.
    Service(String),
    /// Run `program` with arguments matching `args` patterns (`*` matches any one argument).
    Exec {
        /// Absolute program path.
        program: String,
        /// Argument patterns.
        args: Vec<String>,
    },
    /// HTTP to an origin such as `https://example.org`.
    Http(String),
    /// Read files under a directory.
    ReadDir(String),
    /// Read and write files under a directory.
    WriteDir(String),
    /// Read a named secret.
    Secret(String),
    /// Read host metadata.
    Probe,
}

/// What a runbook says about itself.
#[derive(Clone, Debug)]
pub struct Manifest {
    name: String,
    version: String,
    summary: String,
    params_schema: serde_json::Value,
    risk: Risk,
    capabilities: Vec<Capability>,
    platforms: Vec<String>,
}

impl Manifest {
    /// A low-risk manifest with no capabilities and an empty-object params schema.
    pub fn new(name: &str, version: &str, summary: &str) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            summary: summary.into(),
            params_schema: serde_json::json!({"type": "object", "additionalProperties": false}),
            risk: Risk::Low,
            capabilities: Vec::new(),
            platforms: Vec::new(),
        }
    }

    /// Set the risk level.
    pub fn risk(mut self, risk: Risk) -> Self {
        self.risk = risk;
        self
    }

    /// Set the JSON Schema of the params.
    pub fn params_schema(mut self, schema: serde_json::Value) -> Self {
        self.params_schema = schema;
        self
    }

    /// Ask for a capability.
    pub fn capability(mut self, capability: Capability) -> Self {
        self.capabilities.push(capability);
        self
    }

    /// Declare a platform it runs on (`linux`, `linux-systemd`, …).
    pub fn platform(mut self, platform: &str) -> Self {
        self.platforms.push(platform.into());
        self
    }

    pub(crate) fn into_wit(self) -> wit::Manifest {
        wit::Manifest {
            name: self.name,
            version: self.version,
            summary: self.summary,
            params_schema: self.params_schema.to_string(),
            risk: match self.risk {
                Risk::Low => wit::Risk::Low,
                Risk::Medium => wit::Risk::Medium,
                Risk::High => wit::Risk::High,
            },
            capabilities: self
                .capabilities
                .into_iter()
                .map(|c| match c {
                    Capability::Service(s) => wit::Capability::Service(s),
                    Capability::Exec { program, args } => {
                        wit::Capability::Exec(wit::ExecRequest { program, args })
                    }
                    Capability::Http(o) => wit::Capability::Http(o),
                    Capability::ReadDir(d) => wit::Capability::ReadDir(d),
                    Capability::WriteDir(d) => wit::Capability::WriteDir(d),
                    Capability::Secret(s) => wit::Capability::Secret(s),
                    Capability::Probe => wit::Capability::Probe,
                })
                .collect(),
            platforms: self.platforms,
        }
    }
}
