//! The sample application Sluice deploys in its tests and demo.
//!
//! One binary plays every kind of release through its environment, so tests can
//! publish good and bad versions of real code:
//! - `GREETER_MODE=healthy` (default): greets.
//! - `GREETER_MODE=failing` with `GREETER_FAILURE_RATE` (0.0 to 1.0, default 1.0):
//!   that fraction of calls returns a function error.
//! - `GREETER_MODE=slow` with `GREETER_DELAY_MS` (default 10000): sleeps first.
//! - `GREETER_MODE=crash`: exits during init, before taking any event.
//! - `GREETER_MODE=picky`: fails every call whose name has a digit in it, a
//!   bug that smoke tests with plain names miss and real traffic finds.
//!
//! A build can pack the settings with the code: `greeter.env` beside the
//! binary holds `KEY=VALUE` lines, which the function's environment overrides.
//! Every answer names the version that ran and the `release` file packed beside
//! the binary, so a caller can tell which code answered.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Healthy,
    Failing { rate: f64 },
    Slow { delay: Duration },
    Crash,
    Picky,
}

/// The packed `greeter.env`, then the environment over it.
fn settings() -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::fs::read_to_string("greeter.env")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("GREETER_")));
    vars
}

impl Mode {
    fn from_settings(vars: &HashMap<String, String>) -> Result<Self, String> {
        let var = |name: &str| vars.get(name).cloned();
        match var("GREETER_MODE").as_deref().unwrap_or("healthy") {
            "healthy" => Ok(Mode::Healthy),
            "failing" => {
                let rate = match var("GREETER_FAILURE_RATE") {
                    None => 1.0,
                    Some(raw) => raw
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| {
                            format!(
                                "GREETER_FAILURE_RATE must be a number from 0 to 1, got {raw:?}"
                            )
                        })?,
                };
                Ok(Mode::Failing { rate })
            }
            "slow" => {
                let millis = match var("GREETER_DELAY_MS") {
                    None => 10_000,
                    Some(raw) => raw.parse::<u64>().map_err(|_| {
                        format!(
                            "GREETER_DELAY_MS must be a whole number of milliseconds, got {raw:?}"
                        )
                    })?,
                };
                Ok(Mode::Slow {
                    delay: Duration::from_millis(millis),
                })
            }
            "crash" => Ok(Mode::Crash),
            "picky" => Ok(Mode::Picky),
            other => Err(format!(
                "GREETER_MODE must be one of healthy, failing, slow, crash, picky; got {other:?}"
            )),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
struct Request {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Serialize)]
struct Greeting {
    message: String,
    version: String,
    release: String,
}

struct App {
    mode: Mode,
    version: String,
    release: String,
}

impl App {
    async fn handle(&self, event: LambdaEvent<Value>) -> Result<Greeting, Error> {
        let request: Request = serde_json::from_value(event.payload).unwrap_or_default();
        match &self.mode {
            Mode::Failing { rate } if rand::random::<f64>() < *rate => {
                return Err(format!("greeter release {} failed on purpose", self.release).into());
            }
            Mode::Slow { delay } => tokio::time::sleep(*delay).await,
            Mode::Picky
                if request
                    .name
                    .as_deref()
                    .is_some_and(|n| n.chars().any(|c| c.is_ascii_digit())) =>
            {
                return Err(format!(
                    "greeter release {} cannot greet {:?}",
                    self.release,
                    request.name.unwrap_or_default()
                )
                .into());
            }
            _ => {}
        }
        let name = request.name.unwrap_or_else(|| "world".to_owned());
        Ok(Greeting {
            message: format!("Hello, {name}!"),
            version: self.version.clone(),
            release: self.release.clone(),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mode = Mode::from_settings(&settings())?;
    if mode == Mode::Crash {
        eprintln!("greeter: GREETER_MODE=crash, exiting during init");
        std::process::exit(1);
    }
    let release = std::fs::read_to_string("release")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unreleased".to_owned());
    let app = App {
        mode,
        version: std::env::var("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_else(|_| "$LATEST".into()),
        release,
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event| app.handle(event))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_values_are_explained() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(Mode::from_settings(&vars(&[])), Ok(Mode::Healthy));
        assert_eq!(
            Mode::from_settings(&vars(&[
                ("GREETER_MODE", "failing"),
                ("GREETER_FAILURE_RATE", "0.3")
            ])),
            Ok(Mode::Failing { rate: 0.3 })
        );
        assert!(
            Mode::from_settings(&vars(&[
                ("GREETER_MODE", "failing"),
                ("GREETER_FAILURE_RATE", "2")
            ]))
            .unwrap_err()
            .contains("from 0 to 1")
        );
        assert_eq!(
            Mode::from_settings(&vars(&[("GREETER_MODE", "picky")])),
            Ok(Mode::Picky)
        );
        assert!(
            Mode::from_settings(&vars(&[("GREETER_MODE", "sideways")]))
                .unwrap_err()
                .contains("healthy, failing, slow, crash, picky")
        );
    }
}
