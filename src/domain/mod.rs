//! The pure core: configs, schedules and state machines. No I/O here.

pub mod analysis;
pub mod config;
pub mod deployment;
pub mod execution;
pub mod hooks;
pub mod pipeline;
pub mod smoke;
