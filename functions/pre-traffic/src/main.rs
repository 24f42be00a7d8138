//! The PreTraffic hook: builds its clients once, then answers each gate it is asked.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice::domain::hooks::{HookRequest, HookResponse};
use sluice::gates::HookClients;

// A sandbox gets one event at a time: one thread serves it, and starts sooner.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let clients = HookClients::new(&sluice::aws::lambda_sdk_config().await);
    let clients = &clients;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<HookRequest>| async move {
            Ok::<HookResponse, Error>(sluice::gates::pre_traffic(clients, &event.payload).await)
        },
    ))
    .await
}
