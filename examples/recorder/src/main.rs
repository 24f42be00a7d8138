//! Records every event it receives as `<RECORDER_DIR>/<request id>.json`, so a
//! test can check what an event source delivered, and answers in the shape a
//! Function URL expects (other sources ignore the answer), or with
//! `RECORDER_REPLY` if set (a hook's verdict, say), or with the n-th reply of
//! the JSON list `RECORDER_REPLIES` for the n-th event recorded in its
//! directory (the last one repeated: a hook that passes, then fails, then
//! passes). An event that contains
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

/// What the recorder answers with, when it does not answer as a Function URL.
enum Replies {
    One(Value),
    InTurn(Vec<Value>),
}

/// How many events the directory holds.
async fn recorded(dir: &Path) -> Result<usize, Error> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut n = 0;
    while let Some(entry) = entries.next_entry().await? {
        if entry.path().extension().is_some_and(|e| e == "json") {
            n += 1;
        }
    }
    Ok(n)
}

async fn record(
    dir: &Path,
    replies: Option<&Replies>,
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
    match replies {
        Some(Replies::One(reply)) => return Ok(reply.clone()),
        Some(Replies::InTurn(replies)) => {
            let n = recorded(dir).await?;
            let reply = replies.get(n - 1).or(replies.last());
            return Ok(reply.cloned().unwrap_or(Value::Null));
        }
        None => {}
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
    let json = |name: &str| -> Result<Option<Value>, Error> {
        match std::env::var(name) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).map_err(|e| format!("{name} is not JSON: {e}"))?,
            )),
            Err(_) => Ok(None),
        }
    };
    let replies = match (json("RECORDER_REPLY")?, json("RECORDER_REPLIES")?) {
        (_, Some(Value::Array(replies))) if !replies.is_empty() => Some(Replies::InTurn(replies)),
        (_, Some(other)) => {
            return Err(format!("RECORDER_REPLIES must be a list of replies: {other}").into());
        }
        (reply, None) => reply.map(Replies::One),
    };
    let (dir, replies) = (&dir, replies.as_ref());
    lambda_runtime::run(service_fn(move |event| record(dir, replies, event))).await
}
