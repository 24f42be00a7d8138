//! The `api` function: the CLI's operations as JSON over HTTP, for tooling.
//! It sits behind a Function URL with `AWS_IAM` auth, so every request that
//! reaches it is signed by a principal allowed to invoke it.
//!
//! ```text
//! GET  /status
//! GET  /pipelines                      GET /pipelines/{name}
//! PUT  /pipelines/{name}[?dry_run=true]     body: the definition, YAML or JSON
//! GET  /executions/{id}
//! POST /executions/{id}/approve|reject      {"comment"}
//! POST /executions/{id}/stop                {"mode": "finish"|"abandon", "reason"}
//! POST /executions/{id}/retry-stage         {"all": false}
//! POST /deployments                         a deployment spec
//! GET  /deployments/{id}
//! POST /deployments/{id}/promote|pause|resume|retry
//! POST /deployments/{id}/abort              {"reason"}
//! POST /hook-reports                        {"token", "status": "Succeeded"|"Failed", "reason", "checks"}
//! POST /hook-heartbeats                     {"token"}
//! ```
//!
//! An asynchronous hook reports with the single-use token its request
//! carried (`callbackToken`); a token no gate waits for is a 404, one past
//! its gate's deadline a 409.
//!
//! Answers are JSON; errors are `{"error": "..."}` with 400 (the request is
//! malformed, or a field is over its bound: `domain::limits`), 404 (no such
//! route or id), 405, 409 (the current state refuses it, with the reason),
//! 413 (the body is over `MAX_REQUEST_BYTES`) or 500.

use crate::domain::deployment::DeploymentSpec;
use crate::domain::execution::StopMode;
use crate::domain::hooks::{Check, HookResponse, HookStatus};
use crate::domain::limits;
use crate::engine::EngineError;
use crate::function_url::{self, error_response, response};
use crate::operations::{
    DeploymentAction, ExecutionAction, HookCallback, OperationError, Operations,
};
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default = "finish")]
    mode: StopMode,
    #[serde(default = "stopped_by_api")]
    reason: String,
}

fn finish() -> StopMode {
    StopMode::Finish
}

fn stopped_by_api() -> String {
    "stopped through the API".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryStageBody {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortBody {
    #[serde(default = "aborted_by_api")]
    reason: String,
}

fn aborted_by_api() -> String {
    "aborted through the API".into()
}

/// An asynchronous hook's report: its token and the hook contract's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookReportBody {
    token: String,
    status: HookStatus,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    checks: Vec<Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookHeartbeatBody {
    token: String,
}

/// A request answered with an error: its status and message.
struct Refused(i64, String);

type Answer = Result<(i64, serde_json::Value), Refused>;

fn failed(e: OperationError) -> Refused {
    let status = match &e {
        OperationError::NotFound { .. } => 404,
        OperationError::Conflict(_) => 409,
        OperationError::Invalid(_) => 400,
        // Lambda throttled or did not answer, or Sluice's share of its
        // quota is spoken for: the same request can succeed shortly.
        OperationError::Engine(EngineError::OutOfBudget { .. } | EngineError::Aws(_)) => {
            tracing::warn!(error = %e, "operation deferred");
            503
        }
        _ => {
            tracing::error!(error = %e, "operation failed");
            500
        }
    };
    Refused(status, e.to_string())
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok((200, serde_json::to_value(value).expect("answers serialise")))
}

/// A JSON body; an empty one is `{}`, so every field takes its default.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        Refused(400, format!("invalid request body: {message}"))
    })
}

/// Who asked, for the timeline: the signing principal's ARN.
fn caller(request: &LambdaFunctionUrlRequest) -> String {
    request
        .request_context
        .authorizer
        .as_ref()
        .and_then(|a| a.iam.as_ref())
        .and_then(|iam| iam.user_arn.clone())
        .unwrap_or_else(|| "the API".into())
}

pub async fn handle(
    ops: &Operations,
    request: &LambdaFunctionUrlRequest,
) -> LambdaFunctionUrlResponse {
    match route(ops, request).await {
        Ok((status, body)) => response(status, body),
        Err(Refused(status, message)) => error_response(status, message),
    }
}

async fn route(ops: &Operations, request: &LambdaFunctionUrlRequest) -> Answer {
    let method = function_url::method(request);
    let path = request
        .raw_path
        .as_deref()
        .or(request.request_context.http.path.as_deref())
        .unwrap_or("/");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = function_url::body(request).map_err(|why| Refused(400, why.into()))?;
    limits::bytes("the request body", body.len(), limits::MAX_REQUEST_BYTES)
        .map_err(|why| Refused(413, why))?;
    let allow = |allowed: &str| -> Result<(), Refused> {
        if method == allowed {
            Ok(())
        } else {
            Err(Refused(
                405,
                format!(
                    "{method} /{} is not allowed: use {allowed}",
                    segments.join("/")
                ),
            ))
        }
    };
    match segments.as_slice() {
        ["status"] => {
            allow("GET")?;
            ok(ops.status().await.map_err(failed)?)
        }
        ["hook-reports"] => {
            allow("POST")?;
            let report: HookReportBody = parse(&body)?;
            let answer = HookResponse {
                status: report.status,
                reason: report.reason,
                checks: report.checks,
            };
            let d = ops
                .hook_callback(&report.token, HookCallback::Report(answer))
                .await;
            ok(json!({ "deployment": d.map_err(failed)? }))
        }
        ["hook-heartbeats"] => {
            allow("POST")?;
            let beat: HookHeartbeatBody = parse(&body)?;
            let d = ops
                .hook_callback(&beat.token, HookCallback::Heartbeat)
                .await;
            ok(json!({ "deployment": d.map_err(failed)? }))
        }
        ["pipelines"] => {
            allow("GET")?;
            ok(json!({ "pipelines": ops.pipelines().await.map_err(failed)? }))
        }
        ["pipelines", name] if method == "PUT" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| Refused(400, "the definition is not UTF-8".into()))?;
            let dry_run = request
                .query_string_parameters
                .get("dry_run")
                .is_some_and(|v| v == "true");
            let applied = ops.apply_pipeline(text, Some(name), dry_run).await;
            ok(applied.map_err(failed)?)
        }
        ["pipelines", name] => {
            allow("GET")?;
            ok(json!({ "pipeline": ops.pipeline(name).await.map_err(failed)? }))
        }
        ["executions", id] => {
            allow("GET")?;
            ok(ops.execution(id).await.map_err(failed)?)
        }
        ["executions", id, verb] => {
            allow("POST")?;
            let action = match *verb {
                "approve" | "reject" => ExecutionAction::Approval {
                    approved: *verb == "approve",
                    by: caller(request),
                    comment: parse::<CommentBody>(&body)?.comment,
                },
                "stop" => {
                    let StopBody { mode, reason } = parse(&body)?;
                    ExecutionAction::Stop { mode, reason }
                }
                "retry-stage" => ExecutionAction::RetryStage {
                    failed_only: !parse::<RetryStageBody>(&body)?.all,
                },
                _ => return Err(unknown_route(method, path)),
            };
            let execution = ops.steer_execution(id, action).await.map_err(failed)?;
            ok(json!({ "execution": execution }))
        }
        ["deployments"] => {
            allow("POST")?;
            let spec: DeploymentSpec = parse(&body)?;
            let submitted = ops.deploy(spec).await.map_err(failed)?;
            Ok((201, json!(submitted)))
        }
        ["deployments", id] => {
            allow("GET")?;
            ok(ops.deployment(id).await.map_err(failed)?)
        }
        ["deployments", id, verb] => {
            allow("POST")?;
            let action = match *verb {
                "promote" => DeploymentAction::Promote,
                "pause" => DeploymentAction::Pause,
                "resume" => DeploymentAction::Resume,
                "retry" => DeploymentAction::Retry,
                "abort" => DeploymentAction::Abort {
                    reason: parse::<AbortBody>(&body)?.reason,
                },
                _ => return Err(unknown_route(method, path)),
            };
            let deployment = ops.steer_deployment(id, action).await.map_err(failed)?;
            ok(json!({ "deployment": deployment }))
        }
        _ => Err(unknown_route(method, path)),
    }
}

fn unknown_route(method: &str, path: &str) -> Refused {
    Refused(404, format!("no route {method} {path}"))
}
