//! Metric analysis of the new version, judged by the engine during each bake
//! over whole, closed, published CloudWatch periods: against thresholds, and
//! against the old version (the baseline) over the same periods.
//!
//! Lambda sends its metrics to CloudWatch as one-minute datapoints
//! (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics.html>:
//! "Lambda sends metric data to CloudWatch in 1-minute intervals"), and a
//! minute is readable only some time after it closes. A minute not yet
//! published looks exactly like a minute with no calls (Lambda sends no
//! datapoint for an idle minute), so Sluice reads a minute only once it is
//! sure to be published: `MetricTiming`.

use crate::config::DeploymentConfig;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

type Time = DateTime<Utc>;

/// What to do when the new version has served too few calls to judge, or
/// CloudWatch could not be read, by the end of a bake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Keep baking, judging each newly published minute, for up to
    /// `max_wait_seconds`; then fail.
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
    /// How far (percentage points) the new version's error rate may exceed
    /// the old one's over the same minutes.
    #[serde(default = "default_baseline_margin")]
    pub baseline_margin: f64,
    /// Highest average duration of the new version, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_avg_duration_ms: Option<f64>,
    /// Highest 99th percentile of the new version's durations over the
    /// window, in ms (CloudWatch's `p99` of Lambda's `Duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_duration_ms: Option<f64>,
    /// Calls the new version must serve before a verdict.
    #[serde(default = "default_min_invocations")]
    pub min_invocations: u64,
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// With `wait`: how long past the bake's end to keep watching for enough calls.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
    /// After the last shift (100%), keep judging the new version for this
    /// long, and roll back if it goes bad; the deployment is promoted at
    /// the window's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_after_promotion_seconds: Option<u64>,
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
    300
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

impl AnalysisSettings {
    /// What is wrong with the values, each named, for a deployment on `config`.
    pub fn problems(&self, config: &DeploymentConfig) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("max_error_rate", self.max_error_rate),
            ("baseline_margin", self.baseline_margin),
        ] {
            if !(0.0..=100.0).contains(&value) {
                problems.push(format!(
                    "analysis.{field}: {value} is not a percentage (0 to 100)"
                ));
            }
        }
        for (field, value) in [
            ("max_avg_duration_ms", self.max_avg_duration_ms),
            ("max_p99_duration_ms", self.max_p99_duration_ms),
        ] {
            if let Some(ms) = value
                && !(ms > 0.0 && ms.is_finite())
            {
                problems.push(format!("analysis.{field}: {ms} must be above 0"));
            }
        }
        if self.min_invocations == 0 {
            problems.push("analysis.min_invocations must be at least 1".into());
        }
        if self.watch_after_promotion_seconds == Some(0) {
            problems.push(
                "analysis.watch_after_promotion_seconds must be above 0 (leave it out for no watch)"
                    .into(),
            );
        }
        if config.schedule().steps.len() == 1 && self.watch_after_promotion_seconds.is_none() {
            problems.push(format!(
                "analysis: {config} shifts all traffic at once, so no bake is left to judge in; set analysis.watch_after_promotion_seconds to judge the new version at 100% before the promotion, or leave analysis out"
            ));
        }
        problems
    }
}

/// When CloudWatch has Lambda's datapoints: `period` long, each readable
/// `lag` after its period closes. Sluice's settings give it (AWS's by
/// default; the local stack scales both, like every time it keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricTiming {
    pub period_secs: u32,
    pub lag_ms: u64,
}

/// AWS's: one-minute datapoints, read two minutes after their minute
/// closes. AWS documents no bound on the publication delay; two minutes is
/// past what Lambda's minutes take to appear in practice. Within a bake a
/// minute read too early is counted at the next read, as reads are
/// cumulative; one still unpublished at a bake's end is not judged.
impl Default for MetricTiming {
    fn default() -> Self {
        MetricTiming {
            period_secs: 60,
            lag_ms: 120_000,
        }
    }
}

impl MetricTiming {
    pub fn period(&self) -> ChronoDuration {
        ChronoDuration::seconds(self.period_secs.max(1) as i64)
    }

    pub fn lag(&self) -> ChronoDuration {
        ChronoDuration::milliseconds(self.lag_ms as i64)
    }

    fn floor(&self, t: Time) -> Time {
        let period_ms = self.period().num_milliseconds();
        let ms = t.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(period_ms)).unwrap_or(t)
    }

    /// The start of the period `t` falls in.
    pub fn period_of(&self, t: Time) -> Time {
        self.floor(t)
    }

    /// The end of the newest period readable at `now`.
    pub fn readable_through(&self, now: Time) -> Time {
        self.floor(now - self.lag())
    }

    /// When the period ending at `end` can be read.
    pub fn readable_at(&self, end: Time) -> Time {
        end + self.lag()
    }

    /// `[from, to)` as people read it: "minutes 10:41-10:43".
    pub fn describe(&self, from: Time, to: Time) -> String {
        let last = to - self.period();
        let format = if self.period_secs.is_multiple_of(60) {
            "%H:%M"
        } else {
            "%H:%M:%S"
        };
        let unit = if self.period_secs == 60 {
            "minute"
        } else {
            "period"
        };
        if last <= from {
            format!("{unit} {}", from.format(format))
        } else {
            format!("{unit}s {}-{}", from.format(format), last.format(format))
        }
    }
}

/// One version's numbers over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub invocations: f64,
    pub errors: f64,
    /// Sum of durations in ms (for the average).
    pub duration_ms: f64,
    /// The 99th percentile of the durations over the whole window, in ms,
    /// when it was asked for and CloudWatch had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_duration_ms: Option<f64>,
}

impl Counts {
    /// What was counted since `earlier` (a read of a shorter window from
    /// the same start); the window's p99 says nothing of the part.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            invocations: (self.invocations - earlier.invocations).max(0.0),
            errors: (self.errors - earlier.errors).max(0.0),
            duration_ms: (self.duration_ms - earlier.duration_ms).max(0.0),
            p99_duration_ms: None,
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.invocations > 0.0 {
            100.0 * self.errors / self.invocations
        } else {
            0.0
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:.1}% ({} of {} calls)",
            self.error_rate(),
            self.errors,
            self.invocations
        )
    }
}

/// What CloudWatch said of both versions over the periods `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub from: Time,
    pub to: Time,
    pub new: Counts,
    pub old: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// Too little traffic: the deployment applies `on_inconclusive`.
    Inconclusive(String),
}

impl Verdict {
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Pass(d) | Verdict::Fail(d) | Verdict::Inconclusive(d) => d,
        }
    }
}

/// The verdict on `m`, its measured values next to the thresholds.
pub fn judge(settings: &AnalysisSettings, m: &Measurement, timing: &MetricTiming) -> Verdict {
    let (new, old) = (&m.new, &m.old);
    let window = timing.describe(m.from, m.to);
    if new.invocations < settings.min_invocations as f64 {
        return Verdict::Inconclusive(format!(
            "the new version served {} calls in {window}; {} are needed to judge",
            new.invocations, settings.min_invocations
        ));
    }
    let rate = new.error_rate();
    let baseline_counts = old.invocations >= settings.min_invocations as f64;
    let baseline = if baseline_counts {
        format!("old version {}", old.describe())
    } else {
        format!("old version {} calls, too few to compare", old.invocations)
    };
    let measured = format!(
        "error rate {:.1}% ({} of {} calls, {window})",
        rate, new.errors, new.invocations
    );
    if rate > settings.max_error_rate {
        return Verdict::Fail(format!(
            "{measured} > {}%; {baseline}",
            settings.max_error_rate
        ));
    }
    if baseline_counts && rate > old.error_rate() + settings.baseline_margin {
        return Verdict::Fail(format!(
            "{measured} > the old version's rate + {} points; {baseline}",
            settings.baseline_margin
        ));
    }
    let avg = new.duration_ms / new.invocations;
    if let Some(max) = settings.max_avg_duration_ms
        && avg > max
    {
        return Verdict::Fail(format!(
            "average duration {avg:.0} ms ({window}) > {max} ms; {measured}"
        ));
    }
    let mut durations = format!("average duration {avg:.0} ms");
    if let Some(max) = settings.max_p99_duration_ms {
        let Some(p99) = new.p99_duration_ms else {
            return Verdict::Inconclusive(format!(
                "CloudWatch gave no p99 duration for the new version in {window}"
            ));
        };
        if p99 > max {
            return Verdict::Fail(format!(
                "p99 duration {p99:.0} ms ({window}) > {max} ms; {durations}, {measured}"
            ));
        }
        durations += &format!(", p99 {p99:.0} ms <= {max} ms");
    }
    Verdict::Pass(format!(
        "{measured} <= {}%, {durations}; {baseline}",
        settings.max_error_rate
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn counts(invocations: f64, errors: f64) -> Counts {
        Counts {
            invocations,
            errors,
            duration_ms: invocations * 10.0,
            p99_duration_ms: None,
        }
    }

    fn at(h: u32, m: u32, s: u32) -> Time {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap()
    }

    fn measured(new: Counts, old: Counts) -> Measurement {
        Measurement {
            from: at(10, 41, 0),
            to: at(10, 44, 0),
            new,
            old,
        }
    }

    #[test]
    fn verdicts_follow_thresholds_and_baseline_and_show_the_values() {
        let s = AnalysisSettings {
            max_error_rate: 5.0,
            ..Default::default()
        };
        let timing = MetricTiming::default();
        let judged = |new, old| judge(&s, &measured(new, old), &timing);
        assert!(matches!(
            judged(counts(5.0, 0.0), counts(100.0, 0.0)),
            Verdict::Inconclusive(r) if r.contains("served 5 calls in minutes 10:41-10:43")
        ));
        let too_many = judged(counts(169.0, 12.0), counts(700.0, 3.0));
        assert_eq!(
            too_many,
            Verdict::Fail(
                "error rate 7.1% (12 of 169 calls, minutes 10:41-10:43) > 5%; old version 0.4% (3 of 700 calls)"
                    .into()
            )
        );
        // Under the threshold but well above the old version.
        assert!(
            matches!(judged(counts(100.0, 4.0), counts(900.0, 0.0)), Verdict::Fail(r) if r.contains("old version 0.0%"))
        );
        // The old version errs as much: not the new version's fault.
        assert!(matches!(
            judged(counts(100.0, 4.0), counts(900.0, 36.0)),
            Verdict::Pass(_)
        ));
        let slow = AnalysisSettings {
            max_avg_duration_ms: Some(5.0),
            ..s.clone()
        };
        assert!(
            matches!(judge(&slow, &measured(counts(100.0, 0.0), counts(0.0, 0.0)), &timing), Verdict::Fail(r) if r.contains("average duration 10 ms"))
        );
        // The tail: a p99 over its bound fails a version whose average is fine.
        let tail = AnalysisSettings {
            max_p99_duration_ms: Some(200.0),
            ..s.clone()
        };
        let with_p99 = |p99| Counts {
            p99_duration_ms: p99,
            ..counts(100.0, 0.0)
        };
        let judged = |new| judge(&tail, &measured(new, counts(900.0, 0.0)), &timing);
        assert_eq!(
            judged(with_p99(Some(450.0))),
            Verdict::Fail(
                "p99 duration 450 ms (minutes 10:41-10:43) > 200 ms; average duration 10 ms, error rate 0.0% (0 of 100 calls, minutes 10:41-10:43)"
                    .into()
            )
        );
        assert!(
            matches!(judged(with_p99(Some(120.0))), Verdict::Pass(r) if r.contains("average duration 10 ms, p99 120 ms <= 200 ms"))
        );
        assert!(
            matches!(judged(with_p99(None)), Verdict::Inconclusive(r) if r.contains("no p99 duration")),
            "asked for and not given is not a pass"
        );
    }

    #[test]
    fn a_period_is_read_only_once_closed_and_published() {
        let timing = MetricTiming {
            period_secs: 60,
            lag_ms: 90_000,
        };
        assert_eq!(timing.period_of(at(10, 40, 20)), at(10, 40, 0));
        assert_eq!(timing.period_of(at(10, 41, 0)), at(10, 41, 0));
        // 10:43:29 - 1:30 = 10:41:59: only minutes ending by 10:41 are out.
        assert_eq!(timing.readable_through(at(10, 43, 29)), at(10, 41, 0));
        assert_eq!(timing.readable_through(at(10, 43, 30)), at(10, 42, 0));
        assert_eq!(timing.readable_at(at(10, 42, 0)), at(10, 43, 30));
        assert_eq!(
            timing.describe(at(10, 41, 0), at(10, 42, 0)),
            "minute 10:41"
        );
        let scaled = MetricTiming {
            period_secs: 3,
            lag_ms: 6_000,
        };
        assert_eq!(
            scaled.describe(at(10, 41, 0), at(10, 41, 9)),
            "periods 10:41:00-10:41:06"
        );
    }

    #[test]
    fn settings_have_safe_defaults_and_refuse_typos_and_nonsense() {
        let s = AnalysisSettings::default();
        assert_eq!(
            (s.max_error_rate, s.min_invocations, s.on_inconclusive),
            (1.0, 20, OnInconclusive::Wait)
        );
        let canary = "canary:10:5m".parse().unwrap();
        assert!(s.problems(&canary).is_empty());
        assert!(serde_json::from_str::<AnalysisSettings>(r#"{"max_eror_rate": 2}"#).is_err());
        let bad: AnalysisSettings = serde_json::from_str(
            r#"{"max_error_rate": 120, "min_invocations": 0, "watch_after_promotion_seconds": 0, "max_p99_duration_ms": -1}"#,
        )
        .unwrap();
        let problems = bad.problems(&canary).join("; ");
        for named in [
            "max_error_rate",
            "min_invocations",
            "watch_after_promotion_seconds",
            "max_p99_duration_ms: -1 must be above 0",
        ] {
            assert!(problems.contains(named), "{problems}");
        }
    }
}
