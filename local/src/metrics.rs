//! Lambda's per-invocation metrics (`AWS/Lambda`: Invocations, Errors,
//! Throttles, Duration) put into CloudWatch with the dimensions Lambda uses,
//! `ExecutedVersion` included, so alarms and analysis read real numbers.
//!
//! Data points are batched off the invocation path: the caller only queues.

use aws_sdk_cloudwatch::Client as CloudWatchClient;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

pub const NAMESPACE: &str = "AWS/Lambda";
/// Data points per PutMetricData call: AWS takes 1,000 but also at most 1 MB a
/// request, and moto's server refuses form bodies over 500 KB; a point with
/// three dimensions is about 400 bytes encoded.
const MAX_BATCH: usize = 200;

#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub function_name: String,
    pub qualifier: Option<String>,
    pub executed_version: String,
    pub error: bool,
    pub throttled: bool,
    pub duration: Duration,
}

#[derive(Clone)]
pub struct Metrics {
    queue: mpsc::UnboundedSender<(SystemTime, InvocationRecord)>,
}

impl Metrics {
    /// Starts the background publisher; it flushes every `interval`.
    pub fn start(client: CloudWatchClient, interval: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish(client, rx, interval));
        Metrics { queue: tx }
    }

    pub fn record(&self, record: InvocationRecord) {
        let _ = self.queue.send((SystemTime::now(), record));
    }
}

async fn publish(
    client: CloudWatchClient,
    mut rx: mpsc::UnboundedReceiver<(SystemTime, InvocationRecord)>,
    interval: Duration,
) {
    let mut pending: Vec<MetricDatum> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, record)) => pending.extend(data_points(at, &record)),
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    flush(&client, &mut pending).await;
                }
            }
        }
    }
    flush(&client, &mut pending).await;
}

async fn flush(client: &CloudWatchClient, pending: &mut Vec<MetricDatum>) {
    for chunk in pending.chunks(MAX_BATCH) {
        if let Err(e) = client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
        {
            tracing::warn!(error = ?e, points = chunk.len(), "could not put Lambda metrics");
        }
    }
    pending.clear();
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// The data points of one invocation, under each dimension set Lambda uses:
/// by function; by function and resource (`name:qualifier`); and, for a
/// qualified call, by function, resource and the version that ran.
fn data_points(at: SystemTime, r: &InvocationRecord) -> Vec<MetricDatum> {
    let mut dimension_sets = vec![vec![dimension("FunctionName", &r.function_name)]];
    if let Some(q) = &r.qualifier {
        let resource = format!("{}:{q}", r.function_name);
        dimension_sets.push(vec![
            dimension("FunctionName", &r.function_name),
            dimension("Resource", &resource),
        ]);
        dimension_sets.push(vec![
            dimension("FunctionName", &r.function_name),
            dimension("Resource", &resource),
            dimension("ExecutedVersion", &r.executed_version),
        ]);
    }
    let values: Vec<(&str, f64, StandardUnit)> = if r.throttled {
        vec![("Throttles", 1.0, StandardUnit::Count)]
    } else {
        vec![
            ("Invocations", 1.0, StandardUnit::Count),
            (
                "Errors",
                if r.error { 1.0 } else { 0.0 },
                StandardUnit::Count,
            ),
            (
                "Duration",
                r.duration.as_secs_f64() * 1e3,
                StandardUnit::Milliseconds,
            ),
        ]
    };
    let timestamp = DateTime::from(at);
    dimension_sets
        .iter()
        .flat_map(|dims| {
            values.iter().map(move |(name, value, unit)| {
                MetricDatum::builder()
                    .metric_name(*name)
                    .set_dimensions(Some(dims.clone()))
                    .value(*value)
                    .unit(unit.clone())
                    .timestamp(timestamp)
                    .build()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_calls_carry_executed_version() {
        let r = InvocationRecord {
            function_name: "f".into(),
            qualifier: Some("live".into()),
            executed_version: "2".into(),
            error: true,
            throttled: false,
            duration: Duration::from_millis(12),
        };
        let points = data_points(SystemTime::now(), &r);
        assert_eq!(points.len(), 9);
        let errors_by_version = points
            .iter()
            .find(|p| {
                p.metric_name() == Some("Errors")
                    && p.dimensions()
                        .iter()
                        .any(|d| d.name() == Some("ExecutedVersion") && d.value() == Some("2"))
            })
            .expect("an Errors point by ExecutedVersion");
        assert_eq!(errors_by_version.value(), Some(1.0));
        let unqualified = InvocationRecord {
            qualifier: None,
            ..r
        };
        assert_eq!(data_points(SystemTime::now(), &unqualified).len(), 3);
    }
}
