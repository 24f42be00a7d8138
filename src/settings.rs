//! Sluice's settings, read once per process and passed to the constructors:
//! from the environment in a function (template.yaml sets it), from the
//! stack's outputs in the CLI. A missing or malformed one is an error that
//! names it.

use crate::domain::analysis::MetricTiming;
use crate::domain::deployment::IN_FLIGHT_GRACE_SECS;
use std::time::Duration;

/// Lambda's quota for the control plane, per account and Region.
pub const LAMBDA_CONTROL_PLANE_QUOTA: u64 = 15;
pub const DEFAULT_PER_SECOND: u64 = 10;

/// The stack name when none is set (samconfig.toml's).
pub const DEFAULT_STACK_NAME: &str = "sluice";

/// Every setting of a Sluice process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `SLUICE_TABLE`: the state table.
    pub table: String,
    /// `SLUICE_TIMER_QUEUE_URL`: the shifter's queue.
    pub timer_queue_url: String,
    /// `SLUICE_PIPELINE_TIMER_QUEUE_URL`: the orchestrator's queue.
    pub pipeline_timer_queue_url: String,
    /// `SLUICE_ARTIFACT_BUCKET`.
    pub artifact_bucket: String,
    /// `SLUICE_HISTORY_RETENTION_DAYS` (90): how long finished work is kept.
    pub history_retention: chrono::Duration,
    /// `SLUICE_CONTROL_PLANE_BUDGET` (10): Lambda control-plane calls a
    /// second, for all of Sluice's workers together.
    pub control_plane_budget: u64,
    /// `SLUICE_HOOK_TIMEOUT_SECONDS` (60): how long a hook may take before
    /// its gate fails.
    pub hook_timeout: Duration,
    /// `SLUICE_WEBHOOK_SECRET`: the webhook secret's ARN or name; only the
    /// source function has one.
    pub webhook_secret: Option<String>,
    /// `SLUICE_STACK_NAME` ("sluice"): the dimension of Sluice's stack-wide metrics.
    pub stack_name: String,
    /// `SLUICE_METRIC_PERIOD_SECONDS` (60) and `SLUICE_METRIC_LAG_SECONDS`
    /// (120): Lambda's metric period, and how long after a period closes
    /// the analysis reads it. AWS's by default; the local stack sets both
    /// to its scaled time.
    pub metric_timing: MetricTiming,
    /// Where notices and commit statuses go (see `notices`).
    pub reporting: Reporting,
}

/// Where notices and commit statuses go. Unset or empty, each is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    /// `SLUICE_REPORT_QUEUE_URL`: the reporter's queue, which the
    /// orchestrator hands what the stream tells to.
    pub queue_url: Option<String>,
    /// `SLUICE_NOTIFICATION_TOPIC_ARN`: the SNS topic of notices.
    pub topic_arn: Option<String>,
    /// `SLUICE_EVENT_BUS` ("default"): the EventBridge bus of notices.
    pub event_bus: String,
    /// `SLUICE_GITHUB_TOKEN_SECRET`: the secret holding the GitHub token
    /// that posts commit statuses.
    pub github_token_secret: Option<String>,
    /// `SLUICE_GITHUB_API_URL` ("https://api.github.com"; GitHub Enterprise
    /// Server's is `https://<host>/api/v3`).
    pub github_api_url: String,
    /// `SLUICE_DASHBOARD_URL`: where a commit status links to.
    pub dashboard_url: Option<String>,
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

impl Reporting {
    fn from_vars(var: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let github_api_url = set("SLUICE_GITHUB_API_URL")
            .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        // The token goes with every request: in the clear only to this host.
        let allowed = reqwest::Url::parse(&github_api_url).is_ok_and(|url| {
            url.scheme() == "https"
                || (url.scheme() == "http"
                    && url.username().is_empty()
                    && matches!(url.host_str(), Some("127.0.0.1" | "localhost")))
        });
        if !allowed {
            return Err(SettingError {
                name: "SLUICE_GITHUB_API_URL",
                problem: format!("{github_api_url:?} is not an https URL (or http on 127.0.0.1)"),
            });
        }
        Ok(Reporting {
            queue_url: set("SLUICE_REPORT_QUEUE_URL"),
            topic_arn: set("SLUICE_NOTIFICATION_TOPIC_ARN"),
            event_bus: set("SLUICE_EVENT_BUS").unwrap_or_else(|| "default".to_owned()),
            github_token_secret: set("SLUICE_GITHUB_TOKEN_SECRET"),
            github_api_url,
            dashboard_url: set("SLUICE_DASHBOARD_URL"),
        })
    }
}

impl Settings {
    /// The process's environment, read once.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings `var` gives by their environment names: the
    /// environment, or what the CLI discovered of a stack.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let required = |name: &'static str| {
            var(name).ok_or_else(|| SettingError {
                name,
                problem: "is not set".into(),
            })
        };
        let retention_days = number(
            "SLUICE_HISTORY_RETENTION_DAYS",
            var("SLUICE_HISTORY_RETENTION_DAYS"),
            90,
        )?;
        Ok(Settings {
            table: required("SLUICE_TABLE")?,
            timer_queue_url: required("SLUICE_TIMER_QUEUE_URL")?,
            pipeline_timer_queue_url: required("SLUICE_PIPELINE_TIMER_QUEUE_URL")?,
            artifact_bucket: required("SLUICE_ARTIFACT_BUCKET")?,
            history_retention: chrono::Duration::days(retention_days as i64),
            control_plane_budget: control_plane_budget(var("SLUICE_CONTROL_PLANE_BUDGET"))?,
            hook_timeout: hook_timeout(var("SLUICE_HOOK_TIMEOUT_SECONDS"))?,
            webhook_secret: var("SLUICE_WEBHOOK_SECRET"),
            stack_name: var("SLUICE_STACK_NAME").unwrap_or_else(|| DEFAULT_STACK_NAME.into()),
            metric_timing: metric_timing(
                var("SLUICE_METRIC_PERIOD_SECONDS"),
                var("SLUICE_METRIC_LAG_SECONDS"),
            )?,
            reporting: Reporting::from_vars(&var)?,
        })
    }

    /// The webhook secret, where a function needs it.
    pub fn webhook_secret(&self) -> Result<String, SettingError> {
        self.webhook_secret.clone().ok_or(SettingError {
            name: "SLUICE_WEBHOOK_SECRET",
            problem: "is not set".into(),
        })
    }
}

/// A share of Lambda's control-plane quota.
fn control_plane_budget(value: Option<String>) -> Result<u64, SettingError> {
    let name = "SLUICE_CONTROL_PLANE_BUDGET";
    let per_second = number(name, value, DEFAULT_PER_SECOND)?;
    if !(1..=LAMBDA_CONTROL_PLANE_QUOTA).contains(&per_second) {
        return Err(SettingError {
            name,
            problem: format!(
                "{per_second} must be from 1 to {LAMBDA_CONTROL_PLANE_QUOTA}, Lambda's quota"
            ),
        });
    }
    Ok(per_second)
}

/// A hook's time, which must end inside the reconcile sweep's grace.
fn hook_timeout(value: Option<String>) -> Result<Duration, SettingError> {
    let name = "SLUICE_HOOK_TIMEOUT_SECONDS";
    let secs = number(name, value, 60)?;
    if secs == 0 || secs as i64 >= IN_FLIGHT_GRACE_SECS {
        return Err(SettingError {
            name,
            problem: format!(
                "{secs} is out of range: from 1 to {} seconds (the reconcile sweep's grace)",
                IN_FLIGHT_GRACE_SECS - 1
            ),
        });
    }
    Ok(Duration::from_secs(secs))
}

/// Lambda's metric period (whole seconds, as CloudWatch's are) and the
/// analysis's read delay (seconds, fractions allowed for a scaled stack).
fn metric_timing(
    period: Option<String>,
    lag: Option<String>,
) -> Result<MetricTiming, SettingError> {
    let defaults = MetricTiming::default();
    let period_name = "SLUICE_METRIC_PERIOD_SECONDS";
    let period_secs = number(period_name, period, defaults.period_secs as u64)?;
    if !(1..=3600).contains(&period_secs) {
        return Err(SettingError {
            name: period_name,
            problem: format!("{period_secs} must be from 1 to 3600 seconds"),
        });
    }
    let lag_name = "SLUICE_METRIC_LAG_SECONDS";
    let lag_ms = match lag {
        None => defaults.lag_ms,
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if (0.0..=3600.0).contains(&secs) => (secs * 1000.0).round() as u64,
            _ => {
                return Err(SettingError {
                    name: lag_name,
                    problem: format!("{text:?} is not a number of seconds from 0 to 3600"),
                });
            }
        },
    };
    Ok(MetricTiming {
        period_secs: period_secs as u32,
        lag_ms,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct SettingError {
    pub name: &'static str,
    pub problem: String,
}

/// `value` as a whole number, `default` when absent.
fn number(name: &'static str, value: Option<String>, default: u64) -> Result<u64, SettingError> {
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| SettingError {
            name,
            problem: format!("{text:?} is not a whole number"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut all: Vec<(String, String)> = [
            ("SLUICE_TABLE", "t"),
            ("SLUICE_TIMER_QUEUE_URL", "q"),
            ("SLUICE_PIPELINE_TIMER_QUEUE_URL", "p"),
            ("SLUICE_ARTIFACT_BUCKET", "b"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.reverse();
        move |name| all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn settings_have_their_defaults_and_name_what_is_missing() {
        let s = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(s.history_retention, chrono::Duration::days(90));
        assert_eq!(s.control_plane_budget, 10);
        assert_eq!(s.hook_timeout, Duration::from_secs(60));
        assert_eq!(s.webhook_secret, None);
        assert_eq!(s.stack_name, "sluice");
        assert_eq!(s.reporting.queue_url, None);
        assert_eq!(s.reporting.event_bus, "default");
        assert_eq!(s.reporting.github_api_url, "https://api.github.com");
        let ghes = Settings::from_vars(vars(&[
            ("SLUICE_GITHUB_API_URL", "https://git.example.com/api/v3/"),
            ("SLUICE_NOTIFICATION_TOPIC_ARN", ""),
        ]))
        .unwrap();
        assert_eq!(
            ghes.reporting.github_api_url,
            "https://git.example.com/api/v3"
        );
        assert_eq!(ghes.reporting.topic_arn, None, "empty is unset");
        for bad in [
            "api.github.com",
            "http://git.example.com/api/v3",
            "http://localhost:@git.example.com/",
        ] {
            let bad = Settings::from_vars(vars(&[("SLUICE_GITHUB_API_URL", bad)]));
            assert_eq!(bad.unwrap_err().name, "SLUICE_GITHUB_API_URL");
        }
        let local =
            Settings::from_vars(vars(&[("SLUICE_GITHUB_API_URL", "http://127.0.0.1:8123")]));
        assert_eq!(
            local.unwrap().reporting.github_api_url,
            "http://127.0.0.1:8123"
        );
        assert_eq!(
            s.webhook_secret().unwrap_err().name,
            "SLUICE_WEBHOOK_SECRET"
        );
        let e = Settings::from_vars(|name| vars(&[])(name).filter(|_| name != "SLUICE_TABLE"))
            .unwrap_err();
        assert_eq!(e.to_string(), "SLUICE_TABLE: is not set");
        let e =
            Settings::from_vars(vars(&[("SLUICE_HISTORY_RETENTION_DAYS", "a year")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SLUICE_HISTORY_RETENTION_DAYS: \"a year\" is not a whole number"
        );
    }

    #[test]
    fn the_budget_is_a_share_of_the_quota() {
        assert_eq!(control_plane_budget(None).unwrap(), 10);
        assert_eq!(control_plane_budget(Some("15".into())).unwrap(), 15);
        for bad in ["0", "16", "ten", "-1"] {
            let e = control_plane_budget(Some(bad.into()))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("SLUICE_CONTROL_PLANE_BUDGET: "), "{e}");
        }
    }

    #[test]
    fn the_hook_timeout_must_fit_in_the_sweeps_grace() {
        assert_eq!(hook_timeout(None).unwrap(), Duration::from_secs(60));
        assert_eq!(
            hook_timeout(Some("89".into())).unwrap(),
            Duration::from_secs(89)
        );
        for bad in ["0", "90", "600", "ten", "-1"] {
            let e = hook_timeout(Some(bad.into())).unwrap_err();
            assert_eq!(e.name, "SLUICE_HOOK_TIMEOUT_SECONDS", "{bad}");
        }
        assert!(
            hook_timeout(Some("90".into()))
                .unwrap_err()
                .to_string()
                .contains("from 1 to 89 seconds")
        );
    }

    #[test]
    fn metric_timing_is_aws_by_default_and_scaled_when_told() {
        assert_eq!(metric_timing(None, None).unwrap(), MetricTiming::default());
        let scaled = metric_timing(Some("3".into()), Some("6.5".into())).unwrap();
        assert_eq!((scaled.period_secs, scaled.lag_ms), (3, 6_500));
        for (period, lag, named) in [
            (Some("0"), None, "SLUICE_METRIC_PERIOD_SECONDS"),
            (Some("1.5"), None, "SLUICE_METRIC_PERIOD_SECONDS"),
            (None, Some("-1"), "SLUICE_METRIC_LAG_SECONDS"),
            (None, Some("soon"), "SLUICE_METRIC_LAG_SECONDS"),
        ] {
            let e = metric_timing(period.map(Into::into), lag.map(Into::into)).unwrap_err();
            assert_eq!(e.name, named, "{period:?} {lag:?}");
        }
    }
}
