//! The provider of `Custom::SluiceRollout`: builds its clients once and
//! answers each CloudFormation request (`sluice::custom_resource`). The
//! request's presigned URL is a credential: the event is never logged.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::custom_resource::RolloutProvider;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let provider = RolloutProvider::from_settings(&config, &settings);
    let provider = &provider;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        provider
            .handle(&event.payload)
            .await
            .map(|answer| format!("{answer:?}"))
            .map_err(Error::from)
    }))
    .await
}
