//! Read-only host metadata.
pub use crate::bindings::runwarden::runbook::probe::{
    DiskInfo, Listener, LoadAverage, MemoryInfo, ProcessInfo, disk_usage, listening_ports, load,
    memory, processes, uptime,
};
