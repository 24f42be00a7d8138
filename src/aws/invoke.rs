//! One synchronous invocation, sorted by how it ended: hooks and pipeline
//! invoke actions alike.

use super::config::{service_message, work_timeouts};
use crate::ports::Invocation;
use aws_sdk_lambda::primitives::Blob;
use std::time::Duration;

/// Invokes `function` and sorts out how it ended; `Err` only when Lambda
/// throttled the call, which is worth trying again.
pub async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    payload: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<
    Invocation,
    aws_sdk_lambda::error::SdkError<
        aws_sdk_lambda::operation::invoke::InvokeError,
        aws_sdk_lambda::config::http::HttpResponse,
    >,
> {
    // The function's run is the call: it gets `timeout`, or none.
    let call = lambda
        .invoke()
        .function_name(function)
        .payload(Blob::new(payload))
        .customize()
        .config_override(
            aws_sdk_lambda::config::Builder::default().timeout_config(work_timeouts(timeout)),
        );
    let out = match call.send().await {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_too_many_requests_exception()) =>
        {
            return Err(e);
        }
        Err(e) => return Ok(Invocation::NotRun(service_message(&e))),
    };
    let payload = out
        .payload()
        .map(|p| p.as_ref().to_vec())
        .unwrap_or_default();
    if out.function_error().is_some() {
        let detail: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
        let message = detail["errorMessage"].as_str().unwrap_or("no message");
        return Ok(Invocation::Raised(message.to_owned()));
    }
    Ok(Invocation::Answered(payload))
}
