//! Metric analysis of the new version against thresholds and against the old
//! version (the baseline), from the invocations each served through the alias.

use serde::{Deserialize, Serialize};

/// What to do when the new version has served too few calls to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Keep watching until enough calls arrive or `max_wait_seconds` pass; then fail.
    #[default]
    Wait,
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSettings {
    /// Highest error rate of the new version, in percent.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// How far (percentage points) the new version's error rate may exceed the old one's.
    #[serde(default = "default_baseline_margin")]
    pub baseline_margin: f64,
    /// Highest average duration of the new version, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_avg_duration_ms: Option<f64>,
    /// Calls the new version must serve before a verdict.
    #[serde(default = "default_min_invocations")]
    pub min_invocations: u64,
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// With `wait`: how long to keep watching for enough calls.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
}

fn default_max_error_rate() -> f64 {
    1.0
}
fn default_baseline_margin() -> f64 {
    1.0
}
fn default_min_invocations() -> u64 {
    20
}
fn default_max_wait() -> u64 {
    40
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

/// One version's numbers over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    pub invocations: f64,
    pub errors: f64,
    /// Sum of durations in ms (for the average).
    pub duration_ms: f64,
}

impl Counts {
    pub fn error_rate(&self) -> f64 {
        if self.invocations > 0.0 {
            100.0 * self.errors / self.invocations
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// Too little traffic: the caller applies `on_inconclusive`.
    Inconclusive(String),
}

pub fn judge(settings: &AnalysisSettings, new: &Counts, baseline: &Counts) -> Verdict {
    if new.invocations < settings.min_invocations as f64 {
        return Verdict::Inconclusive(format!(
            "the new version served {} calls; {} are needed to judge",
            new.invocations, settings.min_invocations
        ));
    }
    let rate = new.error_rate();
    if rate > settings.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {rate:.1}% of {} calls is above {}%",
            new.invocations, settings.max_error_rate
        ));
    }
    if baseline.invocations >= settings.min_invocations as f64 {
        let base = baseline.error_rate();
        if rate > base + settings.baseline_margin {
            return Verdict::Fail(format!(
                "error rate {rate:.1}% is above the old version's {base:.1}% by more than {} points",
                settings.baseline_margin
            ));
        }
    }
    if let Some(max) = settings.max_avg_duration_ms {
        let avg = new.duration_ms / new.invocations;
        if avg > max {
            return Verdict::Fail(format!("average duration {avg:.0} ms is above {max} ms"));
        }
    }
    Verdict::Pass(format!(
        "error rate {rate:.1}% over {} calls",
        new.invocations
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(invocations: f64, errors: f64) -> Counts {
        Counts {
            invocations,
            errors,
            duration_ms: invocations * 10.0,
        }
    }

    #[test]
    fn verdicts_follow_thresholds_and_baseline() {
        let s = AnalysisSettings {
            max_error_rate: 5.0,
            ..Default::default()
        };
        assert!(matches!(
            judge(&s, &counts(5.0, 0.0), &counts(100.0, 0.0)),
            Verdict::Inconclusive(_)
        ));
        assert!(
            matches!(judge(&s, &counts(100.0, 30.0), &counts(900.0, 0.0)), Verdict::Fail(r) if r.contains("30.0%"))
        );
        // Under the threshold but well above the old version.
        assert!(
            matches!(judge(&s, &counts(100.0, 4.0), &counts(900.0, 0.0)), Verdict::Fail(r) if r.contains("old version"))
        );
        // The old version errs as much: not the new version's fault.
        assert!(matches!(
            judge(&s, &counts(100.0, 4.0), &counts(900.0, 36.0)),
            Verdict::Pass(_)
        ));
        let slow = AnalysisSettings {
            max_avg_duration_ms: Some(5.0),
            ..s.clone()
        };
        assert!(
            matches!(judge(&slow, &counts(100.0, 0.0), &counts(0.0, 0.0)), Verdict::Fail(r) if r.contains("duration"))
        );
    }

    #[test]
    fn settings_have_safe_defaults_and_refuse_typos() {
        let s = AnalysisSettings::default();
        assert_eq!(
            (s.max_error_rate, s.min_invocations, s.on_inconclusive),
            (1.0, 20, OnInconclusive::Wait)
        );
        assert!(serde_json::from_str::<AnalysisSettings>(r#"{"max_eror_rate": 2}"#).is_err());
    }
}
