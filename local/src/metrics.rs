//! Lambda's per-invocation metrics (`AWS/Lambda`: Invocations, Errors,
//! Throttles, Duration) put into CloudWatch with the dimensions Lambda uses,
//! `ExecutedVersion` included, so alarms and analysis read real numbers.
//!
//! As Lambda does, they are published as statistic sets (count, sum, min,
//! max) per metric and dimension set, aggregated over a short window off the
//! invocation path: a data point per call would outrun moto at a few hundred
//! calls a second and arrive late.

use aws_sdk_cloudwatch::Client as CloudWatchClient;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

pub const NAMESPACE: &str = "AWS/Lambda";
/// Data points per PutMetricData call: AWS takes 1,000 but also at most 1 MB a
/// request, and moto's server refuses form bodies over 500 KB.
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

/// One metric under one dimension set.
type SeriesKey = (&'static str, Vec<(String, String)>);

/// A statistic set being gathered, stamped with its first sample's time.
#[derive(Debug, Clone, Copy)]
struct Aggregate {
    first: SystemTime,
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn new(at: SystemTime, value: f64) -> Self {
        Aggregate {
            first: at,
            count: 1.0,
            sum: value,
            min: value,
            max: value,
        }
    }

    fn add(&mut self, value: f64) {
        self.count += 1.0;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

async fn publish(
    client: CloudWatchClient,
    mut rx: mpsc::UnboundedReceiver<(SystemTime, InvocationRecord)>,
    interval: Duration,
) {
    let mut pending: HashMap<SeriesKey, Aggregate> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, record)) => {
                    for (key, value) in samples(&record) {
                        pending
                            .entry(key)
                            .and_modify(|a| a.add(value))
                            .or_insert_with(|| Aggregate::new(at, value));
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    flush(&client, std::mem::take(&mut pending)).await;
                }
            }
        }
    }
    flush(&client, pending).await;
}

async fn flush(client: &CloudWatchClient, pending: HashMap<SeriesKey, Aggregate>) {
    let data: Vec<MetricDatum> = pending
        .into_iter()
        .map(|(key, agg)| datum(key, agg))
        .collect();
    for chunk in data.chunks(MAX_BATCH) {
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
}

fn datum((name, dims): SeriesKey, agg: Aggregate) -> MetricDatum {
    let unit = if name == "Duration" {
        StandardUnit::Milliseconds
    } else {
        StandardUnit::Count
    };
    MetricDatum::builder()
        .metric_name(name)
        .set_dimensions(Some(
            dims.into_iter()
                .map(|(n, v)| Dimension::builder().name(n).value(v).build())
                .collect(),
        ))
        .statistic_values(
            StatisticSet::builder()
                .sample_count(agg.count)
                .sum(agg.sum)
                .minimum(agg.min)
                .maximum(agg.max)
                .build(),
        )
        .unit(unit)
        .timestamp(DateTime::from(agg.first))
        .build()
}

/// The samples of one invocation, under each dimension set Lambda uses:
/// by function; by function and resource (`name:qualifier`); and, for a
/// qualified call, by function, resource and the version that ran.
fn samples(r: &InvocationRecord) -> Vec<(SeriesKey, f64)> {
    let function = ("FunctionName".to_owned(), r.function_name.clone());
    let mut dimension_sets = vec![vec![function.clone()]];
    if let Some(q) = &r.qualifier {
        let resource = ("Resource".to_owned(), format!("{}:{q}", r.function_name));
        dimension_sets.push(vec![function.clone(), resource.clone()]);
        dimension_sets.push(vec![
            function,
            resource,
            ("ExecutedVersion".to_owned(), r.executed_version.clone()),
        ]);
    }
    let values: Vec<(&'static str, f64)> = if r.throttled {
        vec![("Throttles", 1.0)]
    } else {
        vec![
            ("Invocations", 1.0),
            ("Errors", if r.error { 1.0 } else { 0.0 }),
            ("Duration", r.duration.as_secs_f64() * 1e3),
        ]
    };
    dimension_sets
        .into_iter()
        .flat_map(|dims| {
            values
                .iter()
                .map(move |(name, v)| ((*name, dims.clone()), *v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str, error: bool) -> InvocationRecord {
        InvocationRecord {
            function_name: "f".into(),
            qualifier: Some("live".into()),
            executed_version: version.into(),
            error,
            throttled: false,
            duration: Duration::from_millis(12),
        }
    }

    #[test]
    fn alias_calls_carry_executed_version_and_aggregate_per_series() {
        let samples = samples(&record("2", true));
        assert_eq!(samples.len(), 9);
        let errors_by_version: Vec<f64> = samples
            .iter()
            .filter(|((name, dims), _)| {
                *name == "Errors" && dims.iter().any(|(n, v)| n == "ExecutedVersion" && v == "2")
            })
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(errors_by_version, vec![1.0]);
        let unqualified = InvocationRecord {
            qualifier: None,
            ..record("2", false)
        };
        assert_eq!(super::samples(&unqualified).len(), 3);

        let now = SystemTime::now();
        let mut agg = Aggregate::new(now, 1.0);
        agg.add(0.0);
        agg.add(1.0);
        let d = datum(("Errors", vec![("FunctionName".into(), "f".into())]), agg);
        let stats = d.statistic_values().unwrap();
        assert_eq!(
            (
                stats.sample_count(),
                stats.sum(),
                stats.minimum(),
                stats.maximum()
            ),
            (Some(3.0), Some(2.0), Some(0.0), Some(1.0))
        );
    }
}
