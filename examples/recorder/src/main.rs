//! Records every event it receives as `<RECORDER_DIR>/<request id>.json`, so a
//! test can check what an event source delivered, and answers in the shape a
//! Function URL expects (other sources ignore the answer), or with
//! `RECORDER_REPLY` if set (a hook's verdict, say). An event that contains
//! `FAIL_MARKER` is recorded and then failed, so tests can watch a retry; one
//! that contains `HOLD_MARKER` is recorded and answered only once the file
//! `<RECORDER_DIR>/release` exists, so tests can act while it runs.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const FAIL_MARKER: &str = "recorder-fail";
const HOLD_MARKER: &str = "recorder-hold";
/// How often a held event looks for its release (its function's timeout ends it otherwise).
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

async fn record(
    dir: &Path,
    reply: Option<&Value>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let path = dir.join(format!("{}.json", event.context.request_id));
    // Written under a temporary name and renamed, so a reader never sees half a file.
    let partial = path.with_extension("partial");
    let bytes = serde_json::to_vec(&event.payload)?;
    tokio::fs::write(&partial, &bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains(HOLD_MARKER) {
        while !tokio::fs::try_exists(dir.join("release")).await? {
            tokio::time::sleep(HOLD_POLL).await;
        }
    }
    if text.contains(FAIL_MARKER) {
        return Err(format!("the event carries {FAIL_MARKER}").into());
    }
    if let Some(reply) = reply {
        return Ok(reply.clone());
    }
    Ok(json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json!({"recorded": event.context.request_id}).to_string(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = PathBuf::from(std::env::var("RECORDER_DIR").map_err(|_| "RECORDER_DIR is not set")?);
    let reply: Option<Value> = match std::env::var("RECORDER_REPLY") {
        Ok(text) => Some(
            serde_json::from_str(&text).map_err(|e| format!("RECORDER_REPLY is not JSON: {e}"))?,
        ),
        Err(_) => None,
    };
    let (dir, reply) = (&dir, reply.as_ref());
    lambda_runtime::run(service_fn(move |event| record(dir, reply, event))).await
}
