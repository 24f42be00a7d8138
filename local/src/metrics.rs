//! Lambda's per-invocation metrics (`AWS/Lambda`: Invocations, Errors,
//! Throttles, Duration) put into CloudWatch with the dimensions Lambda uses,
//! `ExecutedVersion` included, so alarms and analysis read real numbers.
//!
//! As Lambda does, they are sent as one datapoint per period (a minute,
//! scaled like every time the local stack keeps) per metric and dimension
//! set, stamped with its period's start: a statistic set (count, sum, min,
//! max), or for `Duration` the period's values and their counts, from which
//! CloudWatch computes percentiles (it cannot from a statistic set:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html>). "Lambda sends metric data to CloudWatch in 1-minute intervals"
//! (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics.html>),
//! so a minute is readable only after it has closed, and later still: each
//! period is put a publication lag after it closes (a period, plus up to
//! half a period more, at random), never at once. An analysis that reads a
//! minute too early sees it empty here as it would on AWS.

use aws_sdk_cloudwatch::Client as CloudWatchClient;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

pub const NAMESPACE: &str = "AWS/Lambda";
/// Data points and values per PutMetricData call: AWS takes 1,000 datums
/// but also at most 1 MB a request, and moto's server refuses form bodies
/// over 500 KB.
const MAX_BATCH: usize = 2_000;
/// Distinct values in one datum (PutMetricData's `Values`, at most 150).
const MAX_VALUES: usize = 150;
/// Durations are sent to a hundredth of a millisecond.
const VALUES_PER_MS: f64 = 100.0;

/// When the local stack's Lambda publishes its metrics, and when Sluice may
/// read them (its `SLUICE_METRIC_*` settings), at a schedule scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricTiming {
    /// One datapoint per series per period: a minute, scaled (whole seconds,
    /// as CloudWatch's periods are).
    pub period: Duration,
    /// A period is put this long after it closes...
    pub lag: Duration,
    /// ...plus up to this much more.
    pub jitter: Duration,
}

impl MetricTiming {
    pub fn scaled(schedule_scale: f64) -> Self {
        let period = Duration::from_secs((60.0 * schedule_scale).round().max(1.0) as u64);
        MetricTiming {
            period,
            lag: period,
            jitter: period / 2,
        }
    }

    /// How long after a period closes Sluice reads it: past the latest
    /// publication, as its default (two minutes) is on AWS.
    pub fn read_delay(&self) -> Duration {
        self.period * 2
    }

    /// The settings that tell Sluice's functions (and the stack's clients) the timing.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "SLUICE_METRIC_PERIOD_SECONDS".into(),
                self.period.as_secs().to_string(),
            ),
            (
                "SLUICE_METRIC_LAG_SECONDS".into(),
                self.read_delay().as_secs_f64().to_string(),
            ),
        ]
    }

    /// The start of the period `at` falls in.
    fn period_start(&self, at: SystemTime) -> SystemTime {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let period = self.period.as_secs().max(1);
        UNIX_EPOCH + Duration::from_secs(since.as_secs() - since.as_secs() % period)
    }

    /// When the period starting at `start` is put: closed, then lagged.
    fn published_at(&self, start: SystemTime, extra: Duration) -> SystemTime {
        start + self.period + self.lag + extra.min(self.jitter)
    }
}

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
    /// Starts the background publisher.
    pub fn start(client: CloudWatchClient, timing: MetricTiming) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish(client, rx, timing));
        Metrics { queue: tx }
    }

    pub fn record(&self, record: InvocationRecord) {
        let _ = self.queue.send((SystemTime::now(), record));
    }
}

/// One metric under one dimension set.
type SeriesKey = (&'static str, Vec<(String, String)>);

/// A period's statistic set being gathered, and for a distribution (a
/// duration) its values, counted.
#[derive(Debug, Clone)]
struct Aggregate {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
    values: Option<BTreeMap<u64, f64>>,
}

impl Aggregate {
    fn new(value: f64, distribution: bool) -> Self {
        let mut a = Aggregate {
            count: 0.0,
            sum: 0.0,
            min: value,
            max: value,
            values: distribution.then(BTreeMap::new),
        };
        a.add(value);
        a
    }

    fn add(&mut self, value: f64) {
        self.count += 1.0;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(values) = &mut self.values {
            *values
                .entry((value * VALUES_PER_MS).round() as u64)
                .or_default() += 1.0;
        }
    }
}

/// The periods gathered and not yet put, with when each is to be put.
#[derive(Default)]
struct Periods {
    open: HashMap<SystemTime, (SystemTime, HashMap<SeriesKey, Aggregate>)>,
}

impl Periods {
    fn add(&mut self, timing: &MetricTiming, at: SystemTime, record: &InvocationRecord) {
        let start = timing.period_start(at);
        let (_, series) = self.open.entry(start).or_insert_with(|| {
            let extra = timing.jitter.mul_f64(rand::rng().random_range(0.0..=1.0));
            (timing.published_at(start, extra), HashMap::new())
        });
        for (key, value) in samples(record) {
            let distribution = key.0 == "Duration";
            series
                .entry(key)
                .and_modify(|a| a.add(value))
                .or_insert_with(|| Aggregate::new(value, distribution));
        }
    }

    /// The datapoints of the periods due to be put by `now`.
    fn due(&mut self, now: SystemTime) -> Vec<MetricDatum> {
        let due: Vec<SystemTime> = self
            .open
            .iter()
            .filter(|(_, (publish_at, _))| *publish_at <= now)
            .map(|(start, _)| *start)
            .collect();
        due.into_iter()
            .filter_map(|start| self.open.remove(&start).map(|(_, s)| (start, s)))
            .flat_map(|(start, series)| {
                series
                    .into_iter()
                    .flat_map(move |(key, agg)| data(key, agg, start))
            })
            .collect()
    }

    fn all(&mut self) -> Vec<MetricDatum> {
        self.due(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 16))
    }
}

async fn publish(
    client: CloudWatchClient,
    mut rx: mpsc::UnboundedReceiver<(SystemTime, InvocationRecord)>,
    timing: MetricTiming,
) {
    let mut periods = Periods::default();
    // Often enough that a period is put within a few percent of its time.
    let mut tick = tokio::time::interval((timing.period / 20).max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, record)) => periods.add(&timing, at, &record),
                None => break,
            },
            _ = tick.tick() => {
                let due = periods.due(SystemTime::now());
                if !due.is_empty() {
                    flush(&client, due).await;
                }
            }
        }
    }
    flush(&client, periods.all()).await;
}

async fn flush(client: &CloudWatchClient, data: Vec<MetricDatum>) {
    let mut chunks: Vec<Vec<MetricDatum>> = Vec::new();
    let mut weight = MAX_BATCH;
    for datum in data {
        let w = 1 + datum.values().len();
        if weight + w > MAX_BATCH {
            chunks.push(Vec::new());
            weight = 0;
        }
        weight += w;
        chunks.last_mut().expect("a chunk").push(datum);
    }
    for chunk in chunks {
        if let Err(e) = client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(chunk.clone()))
            .send()
            .await
        {
            tracing::warn!(error = ?e, points = chunk.len(), "could not put Lambda metrics");
        }
    }
}

/// A series' period as datums: one statistic set, or its values in
/// datums of at most `MAX_VALUES` each.
fn data((name, dims): SeriesKey, agg: Aggregate, period_start: SystemTime) -> Vec<MetricDatum> {
    let unit = if name == "Duration" {
        StandardUnit::Milliseconds
    } else {
        StandardUnit::Count
    };
    let dimensions: Vec<Dimension> = dims
        .into_iter()
        .map(|(n, v)| Dimension::builder().name(n).value(v).build())
        .collect();
    let datum = || {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.clone()))
            .unit(unit.clone())
            .timestamp(DateTime::from(period_start))
    };
    let Some(values) = agg.values else {
        let stats = StatisticSet::builder()
            .sample_count(agg.count)
            .sum(agg.sum)
            .minimum(agg.min)
            .maximum(agg.max)
            .build();
        return vec![datum().statistic_values(stats).build()];
    };
    let values: Vec<(u64, f64)> = values.into_iter().collect();
    values
        .chunks(MAX_VALUES)
        .map(|chunk| {
            let (values, counts) = chunk
                .iter()
                .map(|(v, count)| (*v as f64 / VALUES_PER_MS, *count))
                .unzip();
            datum()
                .set_values(Some(values))
                .set_counts(Some(counts))
                .build()
        })
        .collect()
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

        let mut agg = Aggregate::new(1.0, false);
        agg.add(0.0);
        agg.add(1.0);
        let [d] = data(
            ("Errors", vec![("FunctionName".into(), "f".into())]),
            agg,
            UNIX_EPOCH,
        )
        .try_into()
        .expect("one datum");
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

        // Durations go as values and counts, at most 150 to a datum, for percentiles.
        let mut durations = Aggregate::new(0.5, true);
        for ms in 1..=200 {
            durations.add(ms as f64);
        }
        durations.add(7.004);
        let sent = data(
            ("Duration", vec![("FunctionName".into(), "f".into())]),
            durations,
            UNIX_EPOCH,
        );
        assert_eq!(
            sent.iter().map(|d| d.values().len()).collect::<Vec<_>>(),
            vec![150, 51]
        );
        assert!(sent.iter().all(|d| d.statistic_values().is_none()));
        let counted: f64 = sent.iter().flat_map(|d| d.counts()).sum();
        assert_eq!(counted, 202.0);
        let seven = sent[0].values().iter().position(|v| *v == 7.0).unwrap();
        assert_eq!(sent[0].counts()[seven], 2.0, "7.004 ms is sent as 7.00");
    }

    #[test]
    fn a_period_is_put_once_closed_and_lagged_stamped_with_its_start() {
        let timing = MetricTiming::scaled(1.0);
        assert_eq!(
            (
                timing.period,
                timing.lag,
                timing.jitter,
                timing.read_delay()
            ),
            (
                Duration::from_secs(60),
                Duration::from_secs(60),
                Duration::from_secs(30),
                Duration::from_secs(120)
            )
        );
        assert_eq!(MetricTiming::scaled(0.05).period, Duration::from_secs(3));
        assert_eq!(MetricTiming::scaled(0.001).period, Duration::from_secs(1));
        let minute = |m: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 60 * m);
        let mut periods = Periods::default();
        periods.add(
            &timing,
            minute(0) + Duration::from_secs(10),
            &record("2", true),
        );
        periods.add(
            &timing,
            minute(0) + Duration::from_secs(50),
            &record("2", false),
        );
        periods.add(
            &timing,
            minute(1) + Duration::from_secs(5),
            &record("2", false),
        );
        // Closed at 1:00, put between 2:00 and 2:30.
        assert!(periods.due(minute(2) - Duration::from_millis(1)).is_empty());
        let first = periods.due(minute(2) + Duration::from_secs(30));
        assert_eq!(first.len(), 9, "one datum per metric and dimension set");
        assert!(
            first
                .iter()
                .all(|d| d.timestamp() == Some(&DateTime::from(minute(0))))
        );
        let errors: f64 = first
            .iter()
            .filter(|d| d.metric_name() == Some("Errors") && d.dimensions().len() == 3)
            .filter_map(|d| d.statistic_values()?.sum())
            .sum();
        assert_eq!(errors, 1.0);
        assert!(periods.due(minute(2) + Duration::from_secs(59)).is_empty());
        assert_eq!(periods.due(minute(3) + Duration::from_secs(30)).len(), 9);
    }
}
