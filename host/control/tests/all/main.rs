//! The control plane against real components: rule sets compiled into the real rule
//! engine and evaluated in the sandbox, and the incident pipeline end to end.

mod flywheel;
mod hosts;
mod leases;
mod llm;
mod notify;
mod pipeline;
mod planner;
mod rules;
mod store;
