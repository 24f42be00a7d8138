//! A PreTraffic/PostTraffic hook as CodeDeploy users write them: it reads
//! `DeploymentId` and `LifecycleEventHookExecutionId` from its event and
//! reports `HOOK_STATUS` (Succeeded or Failed) with CodeDeploy's
//! `PutLifecycleEventHookExecutionStatus`. Nothing in it knows Sluice: its
//! SDK finds CodeDeploy where `AWS_ENDPOINT_URL_CODEDEPLOY` says.

use aws_sdk_codedeploy::types::LifecycleEventStatus;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HookEvent {
    deployment_id: String,
    lifecycle_event_hook_execution_id: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::load_from_env().await;
    let codedeploy = aws_sdk_codedeploy::Client::new(&config);
    let status = LifecycleEventStatus::from(
        std::env::var("HOOK_STATUS")
            .unwrap_or_else(|_| "Succeeded".into())
            .as_str(),
    );
    let (codedeploy, status) = (&codedeploy, &status);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<HookEvent>| async move {
            codedeploy
                .put_lifecycle_event_hook_execution_status()
                .deployment_id(&event.payload.deployment_id)
                .lifecycle_event_hook_execution_id(&event.payload.lifecycle_event_hook_execution_id)
                .status(status.clone())
                .send()
                .await?;
            Ok::<_, Error>(serde_json::json!({}))
        },
    ))
    .await
}
