//! The source function: builds its clients once and hands every event (a
//! webhook through its Function URL, a CodeCommit trigger or state change) to
//! the library.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sluice::source::Source;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::lambda_sdk_config().await;
    let settings = sluice::settings::Settings::from_env()?;
    let source = Source::from_settings(&config, &settings)?;
    let source = &source;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        source.handle(&event.payload).await.map_err(Error::from)
    }))
    .await
}
