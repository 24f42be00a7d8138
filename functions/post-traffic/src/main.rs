//! The PostTraffic hook: builds its clients once, judges each shift it is asked about.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice::domain::hooks::{HookRequest, HookResponse};

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice::telemetry::init(sluice::telemetry::LogFormat::detect());
    let config = sluice::aws::sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&config);
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let (lambda, cloudwatch) = (&lambda, &cloudwatch);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<HookRequest>| async move {
            Ok::<HookResponse, Error>(
                sluice::gates::post_traffic(lambda, cloudwatch, &event.payload).await,
            )
        },
    ))
    .await
}
