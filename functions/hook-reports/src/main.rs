//! The hook-reports function: builds its clients once and takes each
//! CodeDeploy-shaped hook report with the library's handler.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice::operations::Operations;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let operations = Operations::from_settings(&config, &settings);
    let operations = &operations;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<LambdaFunctionUrlRequest>| async move {
            Ok::<_, Error>(sluice::hook_reports::handle(operations, &event.payload).await)
        },
    ))
    .await
}
