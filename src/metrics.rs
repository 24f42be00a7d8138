//! Sluice's own metrics, written as CloudWatch embedded metric format (EMF)
//! lines on stdout: Lambda sends them to CloudWatch Logs, which turns them
//! into metrics in the `Sluice` namespace. template.yaml's dashboard and alarms
//! name exactly these (a test checks it).

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
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::DeploymentsStarted,
        Metric::DeploymentsPromoted,
        Metric::DeploymentsRolledBack,
        Metric::GatesPassed,
        Metric::GatesFailed,
        Metric::ExecutionsStarted,
        Metric::ExecutionsSucceeded,
        Metric::ExecutionsFailed,
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
        }
    }

    /// Deployments are counted by function, executions by pipeline.
    pub fn dimension(self) -> &'static str {
        match self {
            Metric::ExecutionsStarted | Metric::ExecutionsSucceeded | Metric::ExecutionsFailed => {
                "Pipeline"
            }
            _ => "Function",
        }
    }
}

/// One EMF document: a count of 1 for `metric`, by its dimension.
pub fn document(metric: Metric, dimension_value: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[metric.dimension()]],
                "Metrics": [{"Name": metric.name(), "Unit": "Count"}],
            }],
        }),
    );
    doc.insert(metric.dimension().into(), json!(dimension_value));
    doc.insert(metric.name().into(), json!(1));
    Value::Object(doc)
}

/// Writes the metric for CloudWatch to pick up from the function's log.
pub fn emit(metric: Metric, dimension_value: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        println!("{}", document(metric, dimension_value, chrono::Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let at = chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let doc = document(Metric::GatesFailed, "greeter", at);
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
                "GatesFailed": 1
            })
        );
        assert_eq!(
            document(Metric::ExecutionsFailed, "greeter", at)["Pipeline"],
            "greeter"
        );
        let names: std::collections::HashSet<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
