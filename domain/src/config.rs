//! Deployment configs: how weight moves from the old version to the new.
//!
//! The nine CodeDeploy names mean exactly what they mean there; custom
//! `canary:<pct>:<interval>` and `linear:<pct>:<interval>` take intervals in
//! seconds (`10s`), minutes (`5m`) or hours (`1h`); an explicit step list gives
//! each step its own bake time (`steps:1@30s,5@1m,25@1m,100`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// CodeDeploy's longest custom interval (2 days).
pub const MAX_INTERVAL: Duration = Duration::from_secs(2 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment config {input:?}: {problem}")]
pub struct ConfigError {
    pub input: String,
    pub problem: String,
}

/// One step: the new version's share of traffic, then how long to watch it
/// before the next step (`bake` is zero on the last step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Percent of traffic on the new version, 0 < weight <= 100.
    pub weight: f64,
    #[serde(with = "duration_secs")]
    pub bake: Duration,
}

/// The steps a deployment walks; the last is always 100%.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Total time from the first shift to the last, gates aside.
    pub fn total_bake(&self) -> Duration {
        self.steps.iter().map(|s| s.bake).sum()
    }
}

/// A parsed deployment config; `Display` gives its canonical text.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentConfig {
    AllAtOnce,
    Canary { percent: f64, interval: Duration },
    Linear { percent: f64, interval: Duration },
    Steps(Vec<Step>),
}

const CODEDEPLOY_PREFIX: &str = "CodeDeployDefault.Lambda";

const PREDEFINED: [(&str, DeploymentConfigName); 9] = [
    ("Canary10Percent5Minutes", DeploymentConfigName::Canary(5)),
    ("Canary10Percent10Minutes", DeploymentConfigName::Canary(10)),
    ("Canary10Percent15Minutes", DeploymentConfigName::Canary(15)),
    ("Canary10Percent30Minutes", DeploymentConfigName::Canary(30)),
    (
        "Linear10PercentEvery1Minute",
        DeploymentConfigName::Linear(1),
    ),
    (
        "Linear10PercentEvery2Minutes",
        DeploymentConfigName::Linear(2),
    ),
    (
        "Linear10PercentEvery3Minutes",
        DeploymentConfigName::Linear(3),
    ),
    (
        "Linear10PercentEvery10Minutes",
        DeploymentConfigName::Linear(10),
    ),
    ("AllAtOnce", DeploymentConfigName::AllAtOnce),
];

#[derive(Debug, Clone, Copy)]
enum DeploymentConfigName {
    Canary(u64),
    Linear(u64),
    AllAtOnce,
}

fn allowed() -> String {
    let names: Vec<&str> = PREDEFINED.iter().map(|(n, _)| *n).collect();
    format!(
        "one of {} (optionally prefixed {CODEDEPLOY_PREFIX}), canary:<percent>:<interval>, \
         linear:<percent>:<interval> (interval like 30s, 5m, 1h), or steps:<percent>@<bake>,...,100",
        names.join(", ")
    )
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().map_err(|_| {
        format!("interval {text:?} must be a whole number with a unit: 30s, 5m or 1h")
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("interval {text:?} must end in s, m or h")),
    };
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_INTERVAL {
        return Err(format!("interval {text:?} must be from 1s to 2 days"));
    }
    Ok(d)
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let p: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("percent {text:?} is not a number"))?;
    if !(p > 0.0 && p < 100.0) {
        return Err(format!(
            "percent {text:?} must be above 0 and below 100 (for 100, use AllAtOnce)"
        ));
    }
    // Lambda takes weights to a precision of 1e-4 of the traffic.
    if (p * 100.0).fract().abs() > 1e-9 {
        return Err(format!("percent {text:?} has more than two decimals"));
    }
    Ok(p)
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl FromStr for DeploymentConfig {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, ConfigError> {
        let fail = |problem: String| ConfigError {
            input: input.to_owned(),
            problem,
        };
        let text = input.trim();
        let name = text.strip_prefix(CODEDEPLOY_PREFIX).unwrap_or(text);
        if let Some((_, known)) = PREDEFINED.iter().find(|(n, _)| *n == name) {
            return Ok(match known {
                DeploymentConfigName::Canary(m) => DeploymentConfig::Canary {
                    percent: 10.0,
                    interval: Duration::from_secs(m * 60),
                },
                DeploymentConfigName::Linear(m) => DeploymentConfig::Linear {
                    percent: 10.0,
                    interval: Duration::from_secs(m * 60),
                },
                DeploymentConfigName::AllAtOnce => DeploymentConfig::AllAtOnce,
            });
        }
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| fail(format!("unknown config; expected {}", allowed())))?;
        match kind.trim() {
            "canary" | "linear" => {
                let (pct, interval) = rest.split_once(':').ok_or_else(|| {
                    fail(format!(
                        "{kind} takes {kind}:<percent>:<interval>, e.g. {kind}:10:5m"
                    ))
                })?;
                let percent = parse_percent(pct).map_err(&fail)?;
                let interval = parse_interval(interval).map_err(&fail)?;
                Ok(if kind.trim() == "canary" {
                    DeploymentConfig::Canary { percent, interval }
                } else {
                    DeploymentConfig::Linear { percent, interval }
                })
            }
            "steps" => {
                let mut steps = Vec::new();
                let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
                for (i, part) in parts.iter().enumerate() {
                    let last = i + 1 == parts.len();
                    let (weight, bake) = match part.split_once('@') {
                        Some((w, b)) => (w, Some(b)),
                        None => (*part, None),
                    };
                    let weight: f64 = weight.parse().map_err(|_| {
                        fail(format!("step {} weight {weight:?} is not a number", i + 1))
                    })?;
                    let bake = match (bake, last) {
                        (Some(b), _) => parse_interval(b).map_err(&fail)?,
                        (None, true) => Duration::ZERO,
                        (None, false) => {
                            return Err(fail(format!(
                                "step {} needs a bake time before the next step, e.g. {weight}@1m",
                                i + 1
                            )));
                        }
                    };
                    steps.push(Step { weight, bake });
                }
                let config = DeploymentConfig::Steps(steps);
                config.schedule_checked().map_err(fail)?;
                Ok(config)
            }
            other => Err(fail(format!(
                "unknown kind {other:?}; expected {}",
                allowed()
            ))),
        }
    }
}

impl fmt::Display for DeploymentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeploymentConfig::AllAtOnce => write!(f, "AllAtOnce"),
            DeploymentConfig::Canary { percent, interval } => {
                write!(f, "canary:{percent}:{}", format_duration(*interval))
            }
            DeploymentConfig::Linear { percent, interval } => {
                write!(f, "linear:{percent}:{}", format_duration(*interval))
            }
            DeploymentConfig::Steps(steps) => {
                let parts: Vec<String> = steps
                    .iter()
                    .map(|s| {
                        if s.bake.is_zero() {
                            format!("{}", s.weight)
                        } else {
                            format!("{}@{}", s.weight, format_duration(s.bake))
                        }
                    })
                    .collect();
                write!(f, "steps:{}", parts.join(","))
            }
        }
    }
}

impl DeploymentConfig {
    /// The steps this config walks.
    pub fn schedule(&self) -> Schedule {
        self.schedule_checked()
            .expect("a parsed config always has a valid schedule")
    }

    fn schedule_checked(&self) -> Result<Schedule, String> {
        let steps = match self {
            DeploymentConfig::AllAtOnce => vec![Step {
                weight: 100.0,
                bake: Duration::ZERO,
            }],
            DeploymentConfig::Canary { percent, interval } => vec![
                Step {
                    weight: *percent,
                    bake: *interval,
                },
                Step {
                    weight: 100.0,
                    bake: Duration::ZERO,
                },
            ],
            DeploymentConfig::Linear { percent, interval } => {
                // CodeDeploy's linear: `percent` more at each interval; the last step tops up to 100.
                let count = (100.0 / percent).ceil() as usize;
                (1..=count)
                    .map(|i| {
                        let weight = (percent * i as f64 * 100.0).round() / 100.0;
                        if i == count || weight >= 100.0 {
                            Step {
                                weight: 100.0,
                                bake: Duration::ZERO,
                            }
                        } else {
                            Step {
                                weight,
                                bake: *interval,
                            }
                        }
                    })
                    .collect()
            }
            DeploymentConfig::Steps(steps) => steps.clone(),
        };
        let Some(last) = steps.last() else {
            return Err("a step list needs at least one step".into());
        };
        if last.weight != 100.0 {
            return Err(format!("the last step must be 100, not {}", last.weight));
        }
        for (i, pair) in steps.windows(2).enumerate() {
            if pair[1].weight <= pair[0].weight {
                return Err(format!(
                    "step weights must rise: step {} ({}) is not above step {} ({})",
                    i + 2,
                    pair[1].weight,
                    i + 1,
                    pair[0].weight
                ));
            }
        }
        for (i, s) in steps.iter().enumerate() {
            if !(s.weight > 0.0 && s.weight <= 100.0) {
                return Err(format!(
                    "step {} weight {} must be above 0 and at most 100",
                    i + 1,
                    s.weight
                ));
            }
        }
        Ok(Schedule { steps })
    }
}

impl Serialize for DeploymentConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeploymentConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights_and_bakes(config: &str) -> Vec<(f64, u64)> {
        let config: DeploymentConfig = config.parse().unwrap();
        config
            .schedule()
            .steps
            .iter()
            .map(|s| (s.weight, s.bake.as_secs()))
            .collect()
    }

    #[test]
    fn the_nine_codedeploy_configs_mean_what_they_mean_there() {
        for (name, minutes) in [
            ("Canary10Percent5Minutes", 5),
            ("Canary10Percent10Minutes", 10),
            ("Canary10Percent15Minutes", 15),
            ("Canary10Percent30Minutes", 30),
        ] {
            let expected = vec![(10.0, minutes * 60), (100.0, 0)];
            assert_eq!(weights_and_bakes(name), expected, "{name}");
            assert_eq!(
                weights_and_bakes(&format!("CodeDeployDefault.Lambda{name}")),
                expected
            );
        }
        for (name, minutes) in [
            ("Linear10PercentEvery1Minute", 1),
            ("Linear10PercentEvery2Minutes", 2),
            ("Linear10PercentEvery3Minutes", 3),
            ("Linear10PercentEvery10Minutes", 10),
        ] {
            let mut expected: Vec<(f64, u64)> =
                (1..10).map(|i| (i as f64 * 10.0, minutes * 60)).collect();
            expected.push((100.0, 0));
            assert_eq!(weights_and_bakes(name), expected, "{name}");
            assert_eq!(
                weights_and_bakes(&format!("CodeDeployDefault.Lambda{name}")),
                expected
            );
        }
        assert_eq!(weights_and_bakes("AllAtOnce"), vec![(100.0, 0)]);
        assert_eq!(
            weights_and_bakes("CodeDeployDefault.LambdaAllAtOnce"),
            vec![(100.0, 0)]
        );
    }

    #[test]
    fn custom_forms_produce_their_schedules() {
        assert_eq!(
            weights_and_bakes("canary:10:5s"),
            vec![(10.0, 5), (100.0, 0)]
        );
        assert_eq!(
            weights_and_bakes("canary:2.5:1h"),
            vec![(2.5, 3600), (100.0, 0)]
        );
        assert_eq!(
            weights_and_bakes("linear:30:10s"),
            vec![(30.0, 10), (60.0, 10), (90.0, 10), (100.0, 0)]
        );
        assert_eq!(
            weights_and_bakes("linear:25:2m"),
            vec![(25.0, 120), (50.0, 120), (75.0, 120), (100.0, 0)]
        );
        assert_eq!(weights_and_bakes("linear:10:10s").len(), 10);
        assert_eq!(
            weights_and_bakes("steps:1@30s,5@1m,25@1m,50@1m,100"),
            vec![(1.0, 30), (5.0, 60), (25.0, 60), (50.0, 60), (100.0, 0)]
        );
        let canary: DeploymentConfig = "canary:10:5m".parse().unwrap();
        assert_eq!(canary.schedule().total_bake(), Duration::from_secs(300));
    }

    #[test]
    fn configs_round_trip_through_their_text() {
        for text in [
            "AllAtOnce",
            "canary:10:5m",
            "linear:12.5:30s",
            "steps:1@30s,50@2h,100",
        ] {
            let parsed: DeploymentConfig = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(
                serde_json::from_str::<DeploymentConfig>(&json).unwrap(),
                parsed
            );
        }
    }

    #[test]
    fn malformed_configs_say_what_is_wrong_and_what_is_allowed() {
        let err = |s: &str| s.parse::<DeploymentConfig>().unwrap_err().to_string();
        assert!(err("Canary10Percent7Minutes").contains("Canary10Percent5Minutes"));
        assert!(err("canary:10").contains("canary:<percent>:<interval>"));
        assert!(err("canary:0:5m").contains("above 0 and below 100"));
        assert!(err("canary:100:5m").contains("AllAtOnce"));
        assert!(err("linear:10:5").contains("s, m or h"));
        assert!(err("linear:10:0s").contains("from 1s to 2 days"));
        assert!(err("linear:10:3d").contains("s, m or h"));
        assert!(err("canary:1.234:5m").contains("two decimals"));
        assert!(err("steps:10@1m,5@1m,100").contains("must rise"));
        assert!(err("steps:10@1m,50@1m").contains("last step must be 100"));
        assert!(err("steps:10,100").contains("needs a bake time"));
        assert!(err("blue-green:1").contains("unknown kind"));
        assert!(err("").contains("unknown config"));
    }
}
