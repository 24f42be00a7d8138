//! The local stack: everything Sluice needs from AWS, on one machine.
//!
//! moto serves AWS state (DynamoDB and its streams, S3, SQS, CloudWatch, IAM,
//! Secrets Manager, the Lambda control plane). sluice-local adds what moto
//! lacks: the Lambda data plane (`Invoke`, run under a local Runtime API) and
//! the event sources a SAM template wires (streams, queues, schedules,
//! Function URLs).

pub mod api;
pub mod async_config;
pub mod code;
pub mod control_plane;
pub mod filters;
pub mod iam;
pub mod invoke;
pub mod launcher;
pub mod metrics;
pub mod provision;
pub mod sandbox;
pub mod schedule;
pub mod server;
pub mod sources;
pub mod template;
