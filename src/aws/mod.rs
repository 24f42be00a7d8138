//! The AWS side of Sluice: one way to build SDK configuration for every
//! binary, and the adapters that fill the ports with the SDK's clients.

mod actions;
mod cloud;
mod config;
mod invoke;

pub use actions::AwsActions;
pub use cloud::AwsCloud;
pub(crate) use config::send_to_queue;
pub use config::{
    API_ATTEMPT_TIMEOUT, API_TIMEOUT, Trust, api_timeouts, http_client, https_client,
    lambda_https_client, lambda_sdk_config, refused_for_good, sdk_config, service_message,
    work_timeouts,
};
pub use invoke::invoke;
