//! Sluice: continuous delivery for AWS Lambda.
//!
//! The library holds everything that is not a `main`: the functions in
//! `functions/`, the `sluice` CLI and the local stack are thin binaries over it.

pub mod api;
pub mod aws;
pub mod batch;
pub mod budget;
pub mod clock;
pub mod codepipeline_action;
pub mod commits;
pub mod custom_resource;
/// The pure core, a crate of its own so that its purity is the compiler's to check.
pub use sluice_domain as domain;
pub mod drive;
pub mod engine;
pub mod events;
pub mod function_url;
// For the fuzzers and tests/fuzz.rs, not an API.
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gates;
pub mod hook_reports;
pub mod metrics;
pub mod notices;
pub mod operations;
pub mod orchestrator;
pub mod ports;
pub mod reporter;
pub mod settings;
pub mod source;
pub mod store;
pub mod telemetry;
