//! The `hook-reports` function: where an unchanged CodeDeploy lifecycle hook
//! reports to Sluice. Its AWS SDK, pointed here by `AWS_ENDPOINT_URL_CODEDEPLOY`,
//! sends `PutLifecycleEventHookExecutionStatus` as CodeDeploy's API takes it
//! (AWS JSON 1.1); the answer is CodeDeploy's too, so the hook's SDK reads it.
//!
//! Authentication, honestly: the SDK signs the request with SigV4 for
//! `codedeploy`, which a Function URL cannot check (its `AWS_IAM` auth checks
//! `lambda` signatures), so the URL is public and the signature is not
//! checked. What authorises a report is the `lifecycleEventHookExecutionId`:
//! the callback token Sluice sent that hook only, in its invocation event
//! (244 random bits; only its digest is saved), bound to one gate of one
//! step of one deployment, good for one report before that gate's deadline.
//! A forged, replayed or late report, or one naming another deployment,
//! changes nothing. Anyone who reads the hook's event (its logs, say) holds
//! the token until the gate ends: keep hook events out of shared logs.

use crate::domain::hooks::{HookResponse, HookStatus};
use crate::engine::{EngineError, token_deployment};
use crate::function_url;
use crate::operations::{HookCallback, OperationError, Operations};
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

/// The one operation served, as CodeDeploy's API names it.
pub const TARGET: &str = "CodeDeploy_20141006.PutLifecycleEventHookExecutionStatus";

/// `PutLifecycleEventHookExecutionStatus`'s request, as the SDK sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutStatus {
    deployment_id: String,
    lifecycle_event_hook_execution_id: String,
    status: String,
}

/// A refusal in CodeDeploy's error shape: its status, `__type` and message.
struct Refusal(i64, &'static str, String);

pub async fn handle(
    ops: &Operations,
    request: &LambdaFunctionUrlRequest,
) -> LambdaFunctionUrlResponse {
    match put_status(ops, request).await {
        Ok(id) => answer(200, json!({ "lifecycleEventHookExecutionId": id })),
        Err(Refusal(status, kind, message)) => {
            answer(status, json!({ "__type": kind, "message": message }))
        }
    }
}

fn answer(status: i64, body: serde_json::Value) -> LambdaFunctionUrlResponse {
    let mut response = function_url::response(status, body);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response.headers = headers;
    response
}

async fn put_status(
    ops: &Operations,
    request: &LambdaFunctionUrlRequest,
) -> Result<String, Refusal> {
    let target = request
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    if function_url::method(request) != "POST" || target != Some(TARGET) {
        return Err(Refusal(
            400,
            "UnknownOperationException",
            format!("only POST with X-Amz-Target {TARGET} is served here"),
        ));
    }
    let body = function_url::body(request)
        .map_err(|why| Refusal(400, "SerializationException", why.into()))?;
    let put: PutStatus = serde_json::from_slice(&body)
        .map_err(|e| Refusal(400, "SerializationException", e.to_string()))?;
    let token = put.lifecycle_event_hook_execution_id;
    let invalid_id =
        |why: String| Refusal(400, "InvalidLifecycleEventHookExecutionIdException", why);
    if token_deployment(&token) != Some(put.deployment_id.as_str()) {
        return Err(invalid_id(format!(
            "the lifecycle event hook execution id is not one of deployment {}",
            put.deployment_id
        )));
    }
    let status = match put.status.as_str() {
        "Succeeded" => HookStatus::Succeeded,
        "Failed" => HookStatus::Failed,
        other => {
            return Err(Refusal(
                400,
                "InvalidLifecycleEventHookExecutionStatusException",
                format!("{other:?}: a hook reports Succeeded or Failed"),
            ));
        }
    };
    let report = HookResponse {
        status,
        reason: Some(format!(
            "reported {} with PutLifecycleEventHookExecutionStatus",
            put.status
        )),
        checks: Vec::new(),
    };
    match ops
        .hook_callback(&token, HookCallback::Report(report))
        .await
    {
        Ok(_) => Ok(token),
        Err(e @ OperationError::NotFound { .. }) => Err(invalid_id(e.to_string())),
        Err(OperationError::Conflict(why)) => {
            Err(Refusal(400, "LifecycleEventAlreadyCompletedException", why))
        }
        Err(OperationError::Invalid(why)) => Err(Refusal(400, "InvalidInputException", why)),
        Err(e @ OperationError::Engine(EngineError::OutOfBudget { .. } | EngineError::Aws(_))) => {
            tracing::warn!(error = %e, "hook report deferred");
            Err(Refusal(503, "ThrottlingException", e.to_string()))
        }
        Err(e) => {
            tracing::error!(error = %e, "hook report failed");
            Err(Refusal(500, "InternalFailure", e.to_string()))
        }
    }
}
