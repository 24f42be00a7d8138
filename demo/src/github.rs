//! The demo's GitHub: a server on 127.0.0.1 that takes commit statuses as
//! GitHub's API does (`POST /repos/{owner}/{repo}/statuses/{sha}` with a
//! bearer token) and keeps them, so the demo can show what Sluice posted.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The token the demo puts in the stack's GitHub token secret.
pub const TOKEN: &str = "demo-token";

/// One commit status as posted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub context: String,
    pub state: String,
    pub description: String,
}

#[derive(Clone, Default)]
pub struct StatusRecorder {
    pub url: String,
    /// Each commit's statuses in the order posted.
    posted: Arc<Mutex<BTreeMap<String, Vec<Status>>>>,
}

impl StatusRecorder {
    pub async fn start() -> anyhow::Result<StatusRecorder> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let recorder = StatusRecorder {
            url: format!("http://{}", listener.local_addr()?),
            ..StatusRecorder::default()
        };
        let posted = recorder.posted.clone();
        let app = axum::Router::new().route(
            "/repos/{owner}/{repo}/statuses/{sha}",
            axum::routing::post(
                move |axum::extract::Path((_, _, sha)): axum::extract::Path<(
                    String,
                    String,
                    String,
                )>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let posted = posted.clone();
                    async move {
                        let bearer = format!("Bearer {TOKEN}");
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(&bearer)
                        {
                            return axum::http::StatusCode::UNAUTHORIZED;
                        }
                        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
                            return axum::http::StatusCode::UNPROCESSABLE_ENTITY;
                        };
                        let text =
                            |field: &str| body[field].as_str().unwrap_or_default().to_owned();
                        posted
                            .lock()
                            .expect("not poisoned")
                            .entry(sha)
                            .or_default()
                            .push(Status {
                                context: text("context"),
                                state: text("state"),
                                description: text("description"),
                            });
                        axum::http::StatusCode::CREATED
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(recorder)
    }

    /// The last status of each context of `sha`, by context.
    pub fn latest(&self, sha: &str) -> BTreeMap<String, Status> {
        let posted = self.posted.lock().expect("not poisoned");
        let mut latest = BTreeMap::new();
        for status in posted.get(sha).into_iter().flatten() {
            latest.insert(status.context.clone(), status.clone());
        }
        latest
    }

    /// How many statuses `sha` was given.
    pub fn count(&self, sha: &str) -> usize {
        self.posted
            .lock()
            .expect("not poisoned")
            .get(sha)
            .map_or(0, Vec::len)
    }
}
