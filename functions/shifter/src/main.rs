//! The shifter: builds its clients once and hands every event to the engine.
// The engine's drive, nested in the batch loop, is one deep future type: its
// layout needs more than the compiler's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::engine::Engine;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let engine = Engine::from_settings(&config, &settings);
    let engine = &engine;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Some(event.context.deadline());
        engine
            .handle(&event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
