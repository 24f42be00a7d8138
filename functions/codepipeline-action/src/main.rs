//! The CodePipeline action: builds its clients once and answers each job
//! CodePipeline invokes it with. The event holds credentials: it is never logged.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::codepipeline_action::CodePipelineAction;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let action = CodePipelineAction::from_settings(&config, &settings);
    let action = &action;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        action
            .handle(&event.payload)
            .await
            .map(|answer| format!("{answer:?}"))
            .map_err(Error::from)
    }))
    .await
}
