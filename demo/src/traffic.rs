//! Callers of `greeter:live` for the whole demo, counted per push by the
//! version that answered: what analysis judges, and what users would see.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent callers, and the pause each takes between calls: enough calls
/// for analysis at a 10% share, little enough for a 2-core machine.
const CALLERS: usize = 2;
const PAUSE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Answers {
    pub ok: u64,
    pub failed: u64,
}

/// The calls of one push's window, by the version that ran them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub by_version: BTreeMap<String, Answers>,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .by_version
            .iter()
            .map(|(v, a)| format!("v{v} {} ok {} failed", a.ok, a.failed))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    window: Arc<Mutex<Tally>>,
    callers: tokio::task::JoinSet<()>,
}

impl Traffic {
    pub fn start(lambda: aws_sdk_lambda::Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let window = Arc::new(Mutex::new(Tally::default()));
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let (lambda, stop, window) = (lambda.clone(), stop.clone(), window.clone());
            callers.spawn(async move {
                let mut n = caller;
                while !stop.load(Ordering::Relaxed) {
                    n += CALLERS;
                    let payload = format!(r#"{{"name": "visitor-{n}"}}"#);
                    let answer = lambda
                        .invoke()
                        .function_name("greeter")
                        .qualifier("live")
                        .payload(payload.into_bytes().into())
                        .send()
                        .await;
                    if let Ok(out) = answer {
                        let version = out.executed_version().unwrap_or("?").to_owned();
                        let mut tally = window.lock().expect("tally lock");
                        let answers = tally.by_version.entry(version).or_default();
                        if out.function_error().is_some() {
                            answers.failed += 1;
                        } else {
                            answers.ok += 1;
                        }
                    }
                    tokio::time::sleep(PAUSE).await;
                }
            });
        }
        Traffic {
            stop,
            window,
            callers,
        }
    }

    /// Starts counting afresh.
    pub fn next_window(&self) {
        *self.window.lock().expect("tally lock") = Tally::default();
    }

    /// What the current window counted so far.
    pub fn window(&self) -> Tally {
        self.window.lock().expect("tally lock").clone()
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.callers.join_next().await.is_some() {}
    }
}
