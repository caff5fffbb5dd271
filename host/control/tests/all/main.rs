//! The control plane against real components: rule sets compiled into the real rule
//! engine and evaluated in the sandbox.

mod rules;
