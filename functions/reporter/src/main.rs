//! The reporter: builds its clients once and hands each batch of its queue
//! (notices and commit statuses the orchestrator derived from the table's
//! stream) to the library.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::reporter::Reporter;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let reporter = Reporter::from_settings(&config, &settings);
    let reporter = &reporter;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Some(event.context.deadline());
        reporter
            .handle(&event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
