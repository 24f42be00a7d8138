//! Sluice's own metrics, written as CloudWatch embedded metric format (EMF)
//! lines on stdout: Lambda sends them to CloudWatch Logs, which turns them
//! into metrics in the `Sluice` namespace. template.yaml's dashboard and alarms
//! name exactly these (a test checks it).

use crate::clock::{Clock, SystemClock};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicBool, Ordering};

/// Only a function's log is read for metrics: elsewhere (the CLI, tests) nothing is written.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns emission on (`telemetry::init` does it inside Lambda).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub const NAMESPACE: &str = "Sluice";

/// Every metric Sluice emits, with its dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    DeploymentsStarted,
    DeploymentsPromoted,
    DeploymentsRolledBack,
    GatesPassed,
    GatesFailed,
    ExecutionsStarted,
    ExecutionsSucceeded,
    ExecutionsFailed,
    /// How late a step's shift landed after the step was due (its PreTraffic
    /// gate included), in milliseconds.
    StepLatency,
    /// From push to the end of an execution, in seconds.
    ExecutionDuration,
    /// Deployments the reconcile sweep finds overdue by more than
    /// `engine::STUCK_AFTER`: a gauge written on every sweep.
    StuckDeployments,
    /// Aliases found changed outside Sluice mid-deployment: each stops its
    /// deployment (`OnManualChange`), and someone should know.
    ManualAliasChanges,
}

impl Metric {
    pub const ALL: [Metric; 12] = [
        Metric::DeploymentsStarted,
        Metric::DeploymentsPromoted,
        Metric::DeploymentsRolledBack,
        Metric::GatesPassed,
        Metric::GatesFailed,
        Metric::ExecutionsStarted,
        Metric::ExecutionsSucceeded,
        Metric::ExecutionsFailed,
        Metric::StepLatency,
        Metric::ExecutionDuration,
        Metric::StuckDeployments,
        Metric::ManualAliasChanges,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::DeploymentsStarted => "DeploymentsStarted",
            Metric::DeploymentsPromoted => "DeploymentsPromoted",
            Metric::DeploymentsRolledBack => "DeploymentsRolledBack",
            Metric::GatesPassed => "GatesPassed",
            Metric::GatesFailed => "GatesFailed",
            Metric::ExecutionsStarted => "ExecutionsStarted",
            Metric::ExecutionsSucceeded => "ExecutionsSucceeded",
            Metric::ExecutionsFailed => "ExecutionsFailed",
            Metric::StepLatency => "StepLatency",
            Metric::ExecutionDuration => "ExecutionDuration",
            Metric::StuckDeployments => "StuckDeployments",
            Metric::ManualAliasChanges => "ManualAliasChanges",
        }
    }

    /// Deployments are measured by function, executions by pipeline, the
    /// sweep's findings by stack.
    pub fn dimension(self) -> &'static str {
        match self {
            Metric::ExecutionsStarted
            | Metric::ExecutionsSucceeded
            | Metric::ExecutionsFailed
            | Metric::ExecutionDuration => "Pipeline",
            Metric::StuckDeployments | Metric::ManualAliasChanges => "Stack",
            _ => "Function",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::StepLatency => "Milliseconds",
            Metric::ExecutionDuration => "Seconds",
            _ => "Count",
        }
    }
}

/// One EMF document: `value` of `metric`, by its dimension.
pub fn document(
    metric: Metric,
    dimension_value: &str,
    value: f64,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[metric.dimension()]],
                "Metrics": [{"Name": metric.name(), "Unit": metric.unit()}],
            }],
        }),
    );
    doc.insert(metric.dimension().into(), json!(dimension_value));
    doc.insert(metric.name().into(), json!(value));
    Value::Object(doc)
}

/// Counts one of `metric` (a count), for CloudWatch to pick up from the function's log.
pub fn emit(metric: Metric, dimension_value: &str) {
    record(metric, dimension_value, 1.0);
}

/// Writes a measurement of `metric` in its unit.
pub fn record(metric: Metric, dimension_value: &str, value: f64) {
    if ENABLED.load(Ordering::Relaxed) {
        println!(
            "{}",
            document(metric, dimension_value, value, SystemClock.now())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let at = chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let doc = document(Metric::GatesFailed, "greeter", 1.0, at);
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_800_000_000_000i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Sluice",
                        "Dimensions": [["Function"]],
                        "Metrics": [{"Name": "GatesFailed", "Unit": "Count"}]
                    }]
                },
                "Function": "greeter",
                "GatesFailed": 1.0
            })
        );
        assert_eq!(
            document(Metric::ExecutionsFailed, "greeter", 1.0, at)["Pipeline"],
            "greeter"
        );
        let latency = document(Metric::StepLatency, "greeter", 12.5, at);
        assert_eq!(latency["StepLatency"], 12.5);
        assert_eq!(
            latency["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        assert_eq!(
            document(Metric::StuckDeployments, "sluice", 0.0, at)["Stack"],
            "sluice"
        );
        let names: std::collections::HashSet<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
