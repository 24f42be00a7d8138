//! The orchestrator: builds its clients once and hands every event (the
//! table's stream, pipeline timers, artifact uploads, the reconcile schedule)
//! to the library.
// The orchestrator's drive, nested in the batch loop, is one deep future
// type: its layout needs more than the compiler's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::orchestrator::Orchestrator;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let orchestrator = Orchestrator::from_settings(&config, &settings);
    let orchestrator = &orchestrator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Some(event.context.deadline());
        orchestrator
            .handle(&event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
