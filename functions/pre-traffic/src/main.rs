//! The PreTraffic hook: builds its Lambda client once, runs smoke tests per request.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice::domain::hooks::{HookRequest, HookResponse};

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let lambda = aws_sdk_lambda::Client::new(&sluice::aws::sdk_config().await);
    let lambda = &lambda;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<HookRequest>| async move {
            Ok::<HookResponse, Error>(sluice::gates::pre_traffic(lambda, &event.payload).await)
        },
    ))
    .await
}
