//! Lambda's event sources, played for the functions a template wires: the
//! DynamoDB stream poller, the SQS poller, schedules and Function URLs. Each
//! delivers events in the shape AWS sends (the `aws_lambda_events` types).

use crate::filters::FilterPattern;
use crate::invoke::{Invoker, Target, send_to_queue};
use crate::schedule::Schedule;
use aws_lambda_events::dynamodb::{
    Event as DynamoDbEvent, EventRecord, StreamRecord, StreamViewType,
};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_sqs::Client as SqsClient;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum EventSource {
    DynamoDbStream {
        stream_arn: String,
        from_start: bool,
        batch_size: i32,
        /// `None`: retry until the record expires, as Lambda's default of -1.
        max_retries: Option<u32>,
        report_failures: bool,
        /// `BisectBatchOnFunctionError`: a batch the function fails whole is
        /// split in two, each half retried apart.
        bisect: bool,
        /// `MaximumRecordAgeInSeconds`, unscaled (`None`: -1, the stream's
        /// retention).
        max_record_age: Option<Duration>,
        /// The SQS queue (ARN) of `DestinationConfig.OnFailure`: what is
        /// discarded is recorded there.
        on_failure: Option<String>,
        /// `FilterCriteria`: only records some pattern matches are delivered.
        filters: Vec<FilterPattern>,
        /// `MaximumBatchingWindowInSeconds`, unscaled: how long records are
        /// gathered before a batch that is not full is delivered.
        batching_window: Duration,
    },
    Sqs {
        queue_arn: String,
        batch_size: i32,
        report_failures: bool,
        /// `ScalingConfig.MaximumConcurrency`: the most batches at once.
        max_concurrency: Option<usize>,
        /// `FilterCriteria` on the message `body`: what no pattern matches is
        /// deleted from the queue unseen, as Lambda does.
        filters: Vec<FilterPattern>,
        /// `MaximumBatchingWindowInSeconds`, unscaled.
        batching_window: Duration,
    },
    Schedule {
        rule: String,
        schedule: Schedule,
        input: Option<Value>,
    },
    /// An EventBridge rule on S3 "Object Created", played by listing the buckets.
    ObjectCreated { rule: String, buckets: Vec<String> },
    /// An EventBridge rule on "CloudWatch Alarm State Change", played by watching moto's alarms.
    AlarmStateChanges {
        rule: String,
        /// The states the rule matches (`detail.state.value`); empty: any.
        states: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlAuth {
    None,
    AwsIam,
}

impl EventSource {
    /// Reads one entry of a SAM function's `Events` (already resolved).
    /// Returns `Ok(None)` for a source that is switched off.
    pub fn from_sam(function: &str, name: &str, event: &Value) -> Result<Option<Self>, String> {
        let at = format!("{function}.Events.{name}");
        let kind = event
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let props = event
            .get("Properties")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let text = |key: &str| props.get(key).and_then(Value::as_str);
        let int = |key: &str| props.get(key).and_then(Value::as_i64);
        if props.get("Enabled") == Some(&json!(false)) || text("State") == Some("DISABLED") {
            return Ok(None);
        }
        // A property the local stack does not play (a batching window, SQS
        // filters, ...) is refused by name: silently ignored, it would make
        // the local stack kinder than AWS.
        let played: &[&str] = match kind {
            "DynamoDB" => &[
                "Stream",
                "StartingPosition",
                "BatchSize",
                "MaximumRetryAttempts",
                "FunctionResponseTypes",
                "BisectBatchOnFunctionError",
                "MaximumRecordAgeInSeconds",
                "DestinationConfig",
                "FilterCriteria",
                "MaximumBatchingWindowInSeconds",
                "Enabled",
            ],
            "SQS" => &[
                "Queue",
                "BatchSize",
                "FunctionResponseTypes",
                "ScalingConfig",
                "FilterCriteria",
                "MaximumBatchingWindowInSeconds",
                "Enabled",
            ],
            "Schedule" | "ScheduleV2" => &[
                "Schedule",
                "ScheduleExpression",
                "Input",
                "Description",
                "Name",
                "Enabled",
                "State",
            ],
            _ => &[],
        };
        if let Some(unplayed) = props
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| !played.is_empty() && !played.contains(&k.as_str()))
        {
            return Err(format!(
                "{at}: {unplayed} is not played by the local stack (it plays {played:?})"
            ));
        }
        if let Some(destination) = props.pointer("/DestinationConfig/OnFailure")
            && !match destination.get("Type").and_then(Value::as_str) {
                Some(kind) => kind == "SQS",
                // Without a Type, the ARN says which service it is.
                None => destination
                    .get("Destination")
                    .and_then(Value::as_str)
                    .is_some_and(|arn| arn.split(':').nth(2) == Some("sqs")),
            }
        {
            return Err(format!(
                "{at}: only an SQS on-failure destination is played by the local stack, not {destination}"
            ));
        }
        // Lambda's ranges (API_CreateEventSourceMapping.html): a window of 0
        // to 300 s; batches of 1 to 10,000 records, and for a queue more than
        // 10 only with a window.
        let batching_window = match int("MaximumBatchingWindowInSeconds") {
            None => Duration::ZERO,
            Some(n) if (0..=300).contains(&n) => Duration::from_secs(n as u64),
            Some(n) => {
                return Err(format!(
                    "{at}: MaximumBatchingWindowInSeconds {n} must be 0 to 300"
                ));
            }
        };
        let fifo = text("Queue").is_some_and(|arn| arn.ends_with(".fifo"));
        let batch_size = |default: i64| match int("BatchSize") {
            None => Ok(default as i32),
            Some(n) if (1..=10_000).contains(&n) => Ok(n as i32),
            Some(n) => Err(format!("{at}: BatchSize {n} must be 1 to 10000")),
        };
        let filters = || -> Result<Vec<FilterPattern>, String> {
            props
                .pointer("/FilterCriteria/Filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| {
                    let text = f.get("Pattern").and_then(Value::as_str).unwrap_or("");
                    FilterPattern::parse(text).map_err(|e| format!("{at}: {e}"))
                })
                .collect()
        };
        let report_failures = props
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v == "ReportBatchItemFailures"));
        let source = match kind {
            "DynamoDB" => EventSource::DynamoDbStream {
                stream_arn: text("Stream")
                    .ok_or(format!("{at}: Stream (the table's StreamArn) is required"))?
                    .to_owned(),
                from_start: match text("StartingPosition").unwrap_or("TRIM_HORIZON") {
                    "TRIM_HORIZON" => true,
                    "LATEST" => false,
                    other => {
                        return Err(format!(
                            "{at}: StartingPosition {other:?} must be TRIM_HORIZON or LATEST"
                        ));
                    }
                },
                batch_size: batch_size(100)?,
                max_retries: match int("MaximumRetryAttempts") {
                    None | Some(-1) => None,
                    Some(n) if n >= 0 => Some(n as u32),
                    Some(n) => {
                        return Err(format!("{at}: MaximumRetryAttempts {n} must be -1 or more"));
                    }
                },
                report_failures,
                bisect: props.get("BisectBatchOnFunctionError") == Some(&json!(true)),
                max_record_age: match int("MaximumRecordAgeInSeconds") {
                    None | Some(-1) => None,
                    Some(n) if (60..=604_800).contains(&n) => Some(Duration::from_secs(n as u64)),
                    Some(n) => {
                        return Err(format!(
                            "{at}: MaximumRecordAgeInSeconds {n} must be -1 or 60 to 604800"
                        ));
                    }
                },
                on_failure: props
                    .pointer("/DestinationConfig/OnFailure/Destination")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                filters: filters()?,
                batching_window,
            },
            "SQS" if fifo && !batching_window.is_zero() => {
                return Err(format!(
                    "{at}: MaximumBatchingWindowInSeconds is not supported for a FIFO queue"
                ));
            }
            "SQS" => EventSource::Sqs {
                queue_arn: text("Queue")
                    .ok_or(format!("{at}: Queue (the queue's Arn) is required"))?
                    .to_owned(),
                batch_size: match batch_size(10)? {
                    // services-sqs-parameters.html: a FIFO queue takes
                    // batches of 10 at most, and no batching window.
                    n if n > 10 && fifo => {
                        return Err(format!(
                            "{at}: BatchSize {n}: a FIFO queue takes 10 at most"
                        ));
                    }
                    n if n > 10 && batching_window.is_zero() => {
                        return Err(format!(
                            "{at}: BatchSize {n} needs a MaximumBatchingWindowInSeconds of 1 or more"
                        ));
                    }
                    n => n,
                },
                filters: {
                    let filters = filters()?;
                    if let Some(key) = filters.iter().find_map(|f| f.keys().find(|k| *k != "body"))
                    {
                        return Err(format!(
                            "{at}: an SQS filter may only name the body key, not {key:?}"
                        ));
                    }
                    filters
                },
                batching_window,
                report_failures,
                max_concurrency: match props.get("ScalingConfig") {
                    None => None,
                    Some(config) => {
                        let allowed = |n: &i64| (2..=1000).contains(n);
                        match config.as_object().map(|o| o.keys().collect::<Vec<_>>()) {
                            Some(keys) if keys.iter().all(|k| *k == "MaximumConcurrency") => {}
                            _ => {
                                return Err(format!(
                                    "{at}: ScalingConfig takes MaximumConcurrency only"
                                ));
                            }
                        }
                        let n = config.get("MaximumConcurrency").and_then(Value::as_i64);
                        match n {
                            None => None,
                            Some(n) if allowed(&n) => Some(n as usize),
                            Some(n) => {
                                return Err(format!(
                                    "{at}: ScalingConfig.MaximumConcurrency {n} is out of range: 2 to 1000"
                                ));
                            }
                        }
                    }
                },
            },
            "Schedule" | "ScheduleV2" => {
                let expr = text("Schedule")
                    .or(text("ScheduleExpression"))
                    .ok_or(format!("{at}: Schedule is required"))?;
                let input = match props.get("Input") {
                    None => None,
                    Some(Value::String(s)) => Some(
                        serde_json::from_str(s)
                            .map_err(|e| format!("{at}: Input is not JSON: {e}"))?,
                    ),
                    Some(other) => Some(other.clone()),
                };
                EventSource::Schedule {
                    rule: format!("{function}-{name}"),
                    schedule: Schedule::parse(expr).map_err(|e| format!("{at}: {e}"))?,
                    input,
                }
            }
            "EventBridgeRule" | "CloudWatchEvent" => {
                let pattern = props.get("Pattern").cloned().unwrap_or_default();
                let listed = |pointer: &str| -> Vec<String> {
                    pattern
                        .pointer(pointer)
                        .and_then(Value::as_array)
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                if listed("/detail-type").iter().any(|t| t == "Object Created")
                    && listed("/source").iter().any(|s| s == "aws.s3")
                {
                    return Ok(Some(EventSource::ObjectCreated {
                        rule: format!("{function}-{name}"),
                        buckets: listed("/detail/bucket/name"),
                    }));
                }
                if !listed("/detail-type")
                    .iter()
                    .any(|t| t == "CloudWatch Alarm State Change")
                {
                    // Nothing local emits other events (e.g. CodeCommit's): tests invoke
                    // the function with such events themselves.
                    tracing::info!(
                        "{at}: not played locally (only \"CloudWatch Alarm State Change\" and S3 \"Object Created\" rules are)"
                    );
                    return Ok(None);
                }
                EventSource::AlarmStateChanges {
                    rule: format!("{function}-{name}"),
                    states: listed("/detail/state/value"),
                }
            }
            other => {
                return Err(format!(
                    "{at}: event type {other:?} is not played by the local stack (DynamoDB, SQS, Schedule, EventBridgeRule are)"
                ));
            }
        };
        Ok(Some(source))
    }
}

/// Everything an event source needs to reach the stack.
pub struct SourceContext {
    pub invoker: Arc<Invoker>,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub streams: StreamsClient,
    pub sqs: SqsClient,
    pub s3: aws_sdk_s3::Client,
    pub region: String,
    pub account_id: String,
    pub poll_interval: Duration,
    /// Multiplies schedule periods (tests and the demo run them faster).
    pub schedule_scale: f64,
}

/// Starts the pollers and timers of one function's sources.
pub fn start(ctx: Arc<SourceContext>, function: &str, sources: &[EventSource]) {
    for source in sources.iter().cloned() {
        let ctx = ctx.clone();
        let target = Target {
            function_name: function.to_owned(),
            qualifier: None,
        };
        tokio::spawn(async move {
            match source {
                EventSource::DynamoDbStream { .. } => poll_stream(&ctx, &target, source).await,
                EventSource::Sqs {
                    queue_arn,
                    batch_size,
                    report_failures,
                    max_concurrency,
                    filters,
                    batching_window,
                } => {
                    let queue = QueueMapping {
                        queue_arn,
                        batch_size,
                        report_failures,
                        max_concurrency,
                        filters,
                        batching_window: batching_window.mul_f64(ctx.schedule_scale),
                    };
                    poll_queue(ctx, target, queue).await
                }
                EventSource::Schedule {
                    rule,
                    schedule,
                    input,
                } => run_schedule(&ctx, &target, &rule, &schedule, input).await,
                EventSource::AlarmStateChanges { rule, states } => {
                    watch_alarms(&ctx, &target, &rule, &states).await
                }
                EventSource::ObjectCreated { rule, buckets } => {
                    watch_objects(&ctx, &target, &rule, &buckets).await
                }
            }
        });
    }
}

/// Invokes with an event and says which records failed: `Err(())` for all.
async fn deliver(
    ctx: &SourceContext,
    target: &Target,
    event: &impl serde::Serialize,
    report_failures: bool,
) -> Result<HashSet<String>, ()> {
    let payload = Bytes::from(serde_json::to_vec(event).expect("events serialise"));
    match ctx.invoker.invoke(target, payload, None).await {
        Ok(inv) if !inv.outcome.is_error() => {
            if !report_failures {
                return Ok(HashSet::new());
            }
            // An answer that is not a batch response counts as full success, as in Lambda.
            let answer: SqsBatchResponse =
                serde_json::from_slice(inv.outcome.payload()).unwrap_or_default();
            Ok(answer
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect())
        }
        Ok(inv) => {
            tracing::warn!(
                function = %target.function_name,
                error = %String::from_utf8_lossy(inv.outcome.payload()),
                "event source batch failed"
            );
            Err(())
        }
        Err(e) => {
            tracing::warn!(function = %target.function_name, error = %e, "event source could not invoke");
            Err(())
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn poll_stream(ctx: &SourceContext, target: &Target, source: EventSource) {
    let EventSource::DynamoDbStream {
        stream_arn,
        from_start,
        batch_size,
        max_retries,
        report_failures,
        bisect,
        max_record_age,
        on_failure,
        filters,
        batching_window,
    } = source
    else {
        return;
    };
    let batching_window = batching_window.mul_f64(ctx.schedule_scale);
    let mapping = StreamMapping {
        stream_arn: stream_arn.clone(),
        max_retries,
        report_failures,
        bisect,
        max_record_age: max_record_age.map(|age| age.mul_f64(ctx.schedule_scale)),
        on_failure,
    };
    let table_name = stream_arn
        .split(":table/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .map(str::to_owned);
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    // Records read but held for the batching window, by shard, with when
    // the first of them was read.
    let mut gathered: HashMap<String, (Vec<EventRecord>, tokio::time::Instant)> = HashMap::new();
    loop {
        match ctx
            .streams
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await
        {
            Ok(out) => {
                for shard in out
                    .stream_description()
                    .map(|d| d.shards())
                    .unwrap_or_default()
                {
                    let Some(id) = shard.shard_id() else { continue };
                    if iterators.contains_key(id) {
                        continue;
                    }
                    let kind = if from_start {
                        ShardIteratorType::TrimHorizon
                    } else {
                        ShardIteratorType::Latest
                    };
                    match ctx
                        .streams
                        .get_shard_iterator()
                        .stream_arn(&stream_arn)
                        .shard_id(id)
                        .shard_iterator_type(kind)
                        .send()
                        .await
                    {
                        Ok(it) => {
                            iterators.insert(id.to_owned(), it.shard_iterator().map(str::to_owned));
                        }
                        Err(e) => tracing::warn!(error = ?e, shard = id, "no shard iterator yet"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = ?e, stream = %stream_arn, "cannot describe stream"),
        }
        let mut idle = true;
        for (shard, iterator) in iterators.iter_mut() {
            let Some(current) = iterator.clone() else {
                // A closed shard: what it still holds goes now.
                if let Some((held, _)) = gathered.get_mut(shard)
                    && !held.is_empty()
                {
                    let batch = std::mem::take(held);
                    mapping.deliver(ctx, target, shard, batch).await;
                }
                continue;
            };
            let held = gathered.get(shard).map_or(0, |(records, _)| records.len());
            // DynamoDB Streams gives at most 1,000 records a read.
            let wanted = (batch_size - held as i32).clamp(1, 1000);
            let records = match ctx
                .streams
                .get_records()
                .shard_iterator(&current)
                .limit(wanted)
                .send()
                .await
            {
                Ok(out) => {
                    *iterator = out.next_shard_iterator().map(str::to_owned);
                    out.records.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(error = ?e, stream = %stream_arn, "GetRecords failed; retrying");
                    Vec::new()
                }
            };
            idle &= records.is_empty();
            let admitted = records
                .into_iter()
                .map(|r| stream_record(r, &stream_arn, table_name.as_deref(), &ctx.region))
                .filter(|r| {
                    filters.is_empty() || {
                        let shaped = serde_json::to_value(r).unwrap_or_default();
                        filters.iter().any(|f| f.matches(&shaped))
                    }
                });
            let now = tokio::time::Instant::now();
            let (batch, since) = gathered
                .entry(shard.clone())
                .or_insert_with(|| (Vec::new(), now));
            if batch.is_empty() {
                *since = now;
            }
            batch.extend(admitted);
            // A batch goes when it is full or its window has passed
            // (`MaximumBatchingWindowInSeconds`, services-ddb-params.html).
            let due = batch.len() as i32 >= batch_size || now >= *since + batching_window;
            if !batch.is_empty() && due {
                let batch = std::mem::take(batch);
                mapping.deliver(ctx, target, shard, batch).await;
            }
        }
        if idle {
            tokio::time::sleep(ctx.poll_interval).await;
        }
    }
}

/// How a stream's event source mapping handles a batch, as
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>
/// describes it: a failed batch is retried (from the first record the
/// function names, when it reports item failures) until it succeeds, its
/// records grow too old, or the retries run out; a batch the function fails
/// whole is split in two first, when bisecting is on; what is discarded is
/// recorded in the on-failure destination.
struct StreamMapping {
    stream_arn: String,
    max_retries: Option<u32>,
    report_failures: bool,
    bisect: bool,
    max_record_age: Option<Duration>,
    on_failure: Option<String>,
}

impl StreamMapping {
    async fn deliver(
        &self,
        ctx: &SourceContext,
        target: &Target,
        shard: &str,
        batch: Vec<EventRecord>,
    ) {
        // Halves of a split batch wait their turn, in order, with the
        // retries their batch had made.
        let mut pending = std::collections::VecDeque::from([(batch, 0u32)]);
        while let Some((mut batch, mut attempts)) = pending.pop_front() {
            let mut backoff = Duration::from_millis(100);
            loop {
                let (fresh, expired) = self.split_by_age(std::mem::take(&mut batch));
                if !expired.is_empty() {
                    self.discard(ctx, target, shard, &expired, attempts, "RecordAgeExceeded")
                        .await;
                }
                batch = fresh;
                if batch.is_empty() {
                    break;
                }
                let event = {
                    let mut e = DynamoDbEvent::default();
                    e.records = batch.clone();
                    e
                };
                let outcome = deliver(ctx, target, &event, self.report_failures).await;
                if matches!(&outcome, Ok(failed) if failed.is_empty()) {
                    break;
                }
                // Splitting a batch does not count as a retry.
                if outcome.is_err() && self.bisect && batch.len() > 1 {
                    let second = batch.split_off(batch.len() / 2);
                    pending.push_front((second, attempts));
                    pending.push_front((batch, attempts));
                    break;
                }
                attempts += 1;
                if self.max_retries.is_some_and(|max| attempts > max) {
                    self.discard(
                        ctx,
                        target,
                        shard,
                        &batch,
                        attempts,
                        "RetryAttemptsExhausted",
                    )
                    .await;
                    break;
                }
                // A partial failure retries from the first record it names.
                if let Ok(failed) = outcome {
                    let first = batch.iter().position(|r| {
                        r.change
                            .sequence_number
                            .as_ref()
                            .is_some_and(|s| failed.contains(s))
                    });
                    batch.drain(..first.unwrap_or(0));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// The records still young enough to deliver, and those too old.
    fn split_by_age(&self, batch: Vec<EventRecord>) -> (Vec<EventRecord>, Vec<EventRecord>) {
        let Some(max_age) = self.max_record_age else {
            return (batch, Vec::new());
        };
        let now = chrono::Utc::now();
        batch.into_iter().partition(|r| {
            (now - r.change.approximate_creation_date_time)
                .to_std()
                .map_or(true, |age| age <= max_age)
        })
    }

    /// Drops records for good, recording them (as Lambda's invocation record
    /// for a stream) in the on-failure destination, if there is one.
    async fn discard(
        &self,
        ctx: &SourceContext,
        target: &Target,
        shard: &str,
        records: &[EventRecord],
        attempts: u32,
        condition: &str,
    ) {
        tracing::error!(function = %target.function_name, records = records.len(), condition, "stream records discarded");
        let Some(queue_arn) = &self.on_failure else {
            return;
        };
        let sequence = |r: Option<&EventRecord>| {
            r.and_then(|r| r.change.sequence_number.clone())
                .unwrap_or_default()
        };
        let arrival = |r: Option<&EventRecord>| {
            r.map(|r| r.change.approximate_creation_date_time.to_rfc3339())
                .unwrap_or_default()
        };
        let record = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": ctx.invoker.function_arn(&target.function_name),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": sequence(records.first()),
                "endSequenceNumber": sequence(records.last()),
                "approximateArrivalOfFirstRecord": arrival(records.first()),
                "approximateArrivalOfLastRecord": arrival(records.last()),
                "batchSize": records.len(),
                "streamArn": self.stream_arn,
            },
        });
        if let Err(e) = send_to_queue(&ctx.sqs, queue_arn, record.to_string()).await {
            tracing::error!(queue = %queue_arn, error = %e, "could not record discarded records in the on-failure destination");
        }
    }
}

fn stream_record(
    record: aws_sdk_dynamodbstreams::types::Record,
    stream_arn: &str,
    table_name: Option<&str>,
    region: &str,
) -> EventRecord {
    let mut out = EventRecord::default();
    out.aws_region = region.to_owned();
    out.event_id = record.event_id().unwrap_or_default().to_owned();
    out.event_name = record
        .event_name()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    out.event_source = Some("aws:dynamodb".into());
    out.event_version = Some(record.event_version().unwrap_or("1.1").to_owned());
    out.event_source_arn = Some(stream_arn.to_owned());
    out.table_name = table_name.map(str::to_owned);
    if let Some(change) = record.dynamodb {
        let mut sr = StreamRecord::default();
        if let Some(t) = change.approximate_creation_date_time {
            sr.approximate_creation_date_time =
                chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default();
        }
        sr.keys = change.keys.unwrap_or_default().into();
        sr.new_image = change.new_image.unwrap_or_default().into();
        sr.old_image = change.old_image.unwrap_or_default().into();
        sr.sequence_number = change.sequence_number;
        sr.size_bytes = change.size_bytes.unwrap_or_default();
        sr.stream_view_type = change.stream_view_type.and_then(|v| {
            serde_json::from_value::<StreamViewType>(Value::String(v.as_str().to_owned())).ok()
        });
        out.change = sr;
    }
    out
}

/// An SQS event source mapping as the pollers read it.
struct QueueMapping {
    queue_arn: String,
    batch_size: i32,
    report_failures: bool,
    max_concurrency: Option<usize>,
    filters: Vec<FilterPattern>,
    /// Scaled already.
    batching_window: Duration,
}

impl QueueMapping {
    /// Whether a message passes the mapping's filters. SQS filters name only
    /// `body`, matched as JSON when the body is a JSON object, else as text
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/with-sqs-filtering.html>).
    fn admits(&self, message: &aws_sdk_sqs::types::Message) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let body = message.body().unwrap_or_default();
        let body = match serde_json::from_str::<Value>(body) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(body.to_owned()),
        };
        let record = json!({ "body": body });
        self.filters.iter().any(|f| f.matches(&record))
    }
}

/// SQS gives at most ten messages a receive.
const SQS_MOST_PER_RECEIVE: i32 = 10;

/// The fewest batches Lambda reads a quiet queue with, the most it ever
/// reads at once, and how fast it adds more: see `poll_queue`.
const QUIET_POLLERS: usize = 2;
const MOST_POLLERS: usize = 1000;
const POLLER_ADDED_EVERY: Duration = Duration::from_millis(200);

/// Reads a standard queue as Lambda does
/// (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html>):
/// several batches at once, each its own invocation, with more pollers
/// added (up to 300 a minute) while messages keep coming, up to 1,000 or
/// the mapping's `MaximumConcurrency`, and as few as two when the queue is
/// quiet. Played here: two pollers always, one more every 200 ms (scaled)
/// while every poller is busy, bounded also by the environments one version
/// may run; an added poller leaves once it finds the queue empty.
async fn poll_queue(ctx: Arc<SourceContext>, target: Target, queue: QueueMapping) {
    let queue_name = queue
        .queue_arn
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut backoff = Duration::from_millis(100);
    let queue_url = loop {
        match ctx.sqs.get_queue_url().queue_name(&queue_name).send().await {
            Ok(out) => break out.queue_url.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = ?e, queue = %queue_name, "queue not found yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let most = queue
        .max_concurrency
        .unwrap_or(MOST_POLLERS)
        .min(ctx.invoker.pool().max_per_version())
        .max(1);
    let poller = Arc::new(QueuePoller {
        ctx,
        target,
        queue,
        queue_name,
        queue_url,
        pollers: AtomicUsize::new(0),
        busy: AtomicUsize::new(0),
    });
    for _ in 0..QUIET_POLLERS.min(most) {
        poller.pollers.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(poller.clone().run(true));
    }
    let every = POLLER_ADDED_EVERY.mul_f64(poller.ctx.schedule_scale);
    loop {
        tokio::time::sleep(every).await;
        let pollers = poller.pollers.load(Ordering::SeqCst);
        if pollers < most && poller.busy.load(Ordering::SeqCst) >= pollers {
            poller.pollers.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(poller.clone().run(false));
        }
    }
}

struct QueuePoller {
    ctx: Arc<SourceContext>,
    target: Target,
    queue: QueueMapping,
    queue_name: String,
    queue_url: String,
    /// Pollers running, and how many of them are delivering a batch.
    pollers: AtomicUsize,
    busy: AtomicUsize,
}

impl QueuePoller {
    /// Takes batches until, for an added poller, the queue is empty.
    async fn run(self: Arc<Self>, stays: bool) {
        loop {
            let got_some = self.take_batch().await;
            if !got_some && !stays {
                self.pollers.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Receives one batch and delivers it; false if there was none. With a
    /// batching window, receives go on until the batch is full or the
    /// window, counted from the first message, has passed
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html>).
    /// Messages no filter admits are deleted and never delivered.
    async fn take_batch(&self) -> bool {
        let (ctx, queue_name) = (&self.ctx, &self.queue_name);
        let mut messages = Vec::new();
        let mut window_ends: Option<tokio::time::Instant> = None;
        loop {
            let wanted = (self.queue.batch_size - messages.len() as i32).min(SQS_MOST_PER_RECEIVE);
            let wait = match window_ends {
                None => 1,
                Some(end) => {
                    let left: Duration = end.saturating_duration_since(tokio::time::Instant::now());
                    left.as_secs().min(1) as i32
                }
            };
            let received = ctx
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(wanted)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await;
            let got = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = ?e, queue = %queue_name, "ReceiveMessage failed; retrying");
                    tokio::time::sleep(ctx.poll_interval.max(Duration::from_millis(200))).await;
                    Vec::new()
                }
            };
            let received_none = got.is_empty();
            let (admitted, filtered): (Vec<_>, Vec<_>) =
                got.into_iter().partition(|m| self.queue.admits(m));
            self.delete(filtered.into_iter().filter_map(|m| m.receipt_handle))
                .await;
            messages.extend(admitted);
            if messages.is_empty() && window_ends.is_none() {
                if received_none {
                    return false;
                }
                continue;
            }
            let end = *window_ends
                .get_or_insert_with(|| tokio::time::Instant::now() + self.queue.batching_window);
            if messages.len() as i32 >= self.queue.batch_size || tokio::time::Instant::now() >= end
            {
                break;
            }
            if wait == 0 {
                let left = end.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(ctx.poll_interval.min(left)).await;
            }
        }
        if messages.is_empty() {
            return false;
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.deliver(messages).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        true
    }

    /// Deletes messages by their receipt handles.
    async fn delete(&self, receipt_handles: impl Iterator<Item = String>) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipt_handles
            .enumerate()
            .filter_map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        // SQS deletes at most ten a request.
        for chunk in entries.chunks(10) {
            if let Err(e) = self
                .ctx
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
            {
                tracing::warn!(error = ?e, queue = %self.queue_name, "could not delete messages");
            }
        }
    }

    async fn deliver(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        let ctx = &self.ctx;
        let records: Vec<SqsMessage> = messages
            .into_iter()
            .map(|m| sqs_message(m, &self.queue.queue_arn, &ctx.region))
            .collect();
        let event = {
            let mut e = SqsEvent::default();
            e.records = records.clone();
            e
        };
        // Only what succeeded is deleted; the rest comes back after its visibility timeout.
        let report_failures = self.queue.report_failures;
        let done: Vec<&SqsMessage> = match deliver(ctx, &self.target, &event, report_failures).await
        {
            Ok(failed) => records
                .iter()
                .filter(|m| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
                .collect(),
            Err(()) => Vec::new(),
        };
        self.delete(done.iter().filter_map(|m| m.receipt_handle.clone()))
            .await;
    }
}

fn sqs_message(m: aws_sdk_sqs::types::Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut out = SqsMessage::default();
    out.message_id = m.message_id;
    out.receipt_handle = m.receipt_handle;
    out.body = m.body;
    out.md5_of_body = m.md5_of_body;
    out.md5_of_message_attributes = m.md5_of_message_attributes;
    out.attributes = m
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), v))
        .collect();
    out.message_attributes = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let mut a = SqsMessageAttribute::default();
            a.data_type = Some(v.data_type);
            a.string_value = v.string_value;
            a.binary_value = v.binary_value.map(|b| {
                let mut data = aws_lambda_events::encodings::Base64Data::default();
                *data = b.into_inner();
                data
            });
            (k, a)
        })
        .collect();
    out.event_source_arn = Some(queue_arn.to_owned());
    out.event_source = Some("aws:sqs".into());
    out.aws_region = Some(region.to_owned());
    out
}

/// Fires a schedule. A rate counts from the rule's start; a cron fires at
/// the whole minutes its fields match, UTC. Both run on the stack's clock:
/// at `--schedule-scale` s, a schedule's minute passes in s minutes, counted
/// from when the stack started it, so a cron's times keep their spacing.
async fn run_schedule(
    ctx: &SourceContext,
    target: &Target,
    rule: &str,
    schedule: &Schedule,
    input: Option<Value>,
) {
    let scale = ctx.schedule_scale;
    let started = tokio::time::Instant::now();
    let started_at = chrono::Utc::now();
    // The schedule's time at a real instant.
    let schedule_time = |real: tokio::time::Instant| {
        let elapsed = (real - started).div_f64(scale);
        started_at + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    };
    let rule_arn = format!(
        "arn:aws:events:{}:{}:rule/{rule}",
        ctx.region, ctx.account_id
    );
    let mut last = started_at;
    loop {
        let Some(next) = schedule.next_after(last) else {
            tracing::info!(rule, "schedule has no further time");
            return;
        };
        let wait = (next - schedule_time(tokio::time::Instant::now()))
            .to_std()
            .unwrap_or_default()
            .mul_f64(scale);
        // A very fast scale still leaves the stack time to breathe.
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        last = next;
        let event = match &input {
            Some(input) => input.clone(),
            None => {
                let mut e: EventBridgeEvent<Value> = EventBridgeEvent::default();
                e.version = Some("0".into());
                e.id = Some(uuid::Uuid::new_v4().to_string());
                e.detail_type = "Scheduled Event".into();
                e.source = "aws.events".into();
                e.account = Some(ctx.account_id.clone());
                // The time the rule fired for, as EventBridge sends it.
                e.time = Some(next);
                e.region = Some(ctx.region.clone());
                e.resources = Some(vec![rule_arn.clone()]);
                e.detail = json!({});
                serde_json::to_value(e).expect("events serialise")
            }
        };
        deliver_async(ctx, target, event);
    }
}

/// EventBridge invokes asynchronously: a failure is retried twice and never
/// holds up the next event.
fn deliver_async(ctx: &SourceContext, target: &Target, event: Value) {
    let invoker = ctx.invoker.clone();
    let target = target.clone();
    tokio::spawn(async move {
        invoker
            .invoke_async(&target, Bytes::from(event.to_string()), None)
            .await
    });
}

/// Plays "CloudWatch Alarm State Change": polls moto's alarms and delivers an
/// event for each change of state the rule matches. An alarm's first sighting
/// is its baseline, as EventBridge reports changes only. EventBridge states
/// no delivery latency; polled at the streams' rate, a change arrives up to
/// one poll interval late.
async fn watch_alarms(ctx: &SourceContext, target: &Target, rule: &str, states: &[String]) {
    let mut known: HashMap<String, String> = HashMap::new();
    let interval = ctx.poll_interval;
    loop {
        let mut pages = ctx.cloudwatch.describe_alarms().into_paginator().send();
        let mut seen = Vec::new();
        let mut failed = false;
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => seen.extend(page.metric_alarms().to_vec()),
                Err(e) => {
                    tracing::warn!(error = ?e, "DescribeAlarms failed; retrying");
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            for alarm in seen {
                let (Some(name), Some(state)) = (alarm.alarm_name(), alarm.state_value()) else {
                    continue;
                };
                let state = state.as_str().to_owned();
                let previous = known.insert(name.to_owned(), state.clone());
                let Some(previous) = previous.filter(|p| *p != state) else {
                    continue;
                };
                if states.is_empty() || states.contains(&state) {
                    deliver_async(ctx, target, alarm_event(ctx, rule, &alarm, &previous));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Plays an EventBridge rule on S3 "Object Created" by listing the buckets:
/// an object that appears (or changes) after the first listing is an event.
async fn watch_objects(ctx: &SourceContext, target: &Target, rule: &str, buckets: &[String]) {
    // (bucket, key) → ETag, as last listed.
    let mut known: HashMap<(String, String), String> = HashMap::new();
    let mut first = true;
    let interval = ctx.poll_interval;
    loop {
        for bucket in buckets {
            let mut pages = ctx
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(bucket, error = ?e, "ListObjectsV2 failed; retrying");
                        break;
                    }
                };
                for object in page.contents() {
                    let key = object.key().unwrap_or_default().to_owned();
                    let etag = object.e_tag().unwrap_or_default().to_owned();
                    let previous = known.insert((bucket.clone(), key.clone()), etag.clone());
                    if !first && previous.as_deref() != Some(etag.as_str()) {
                        let event =
                            object_created_event(ctx, rule, bucket, &key, object.size(), &etag);
                        deliver_async(ctx, target, event);
                    }
                }
            }
        }
        first = false;
        tokio::time::sleep(interval).await;
    }
}

/// An "Object Created" event as EventBridge delivers it (the crate has the
/// envelope, not this detail).
fn object_created_event(
    ctx: &SourceContext,
    rule: &str,
    bucket: &str,
    key: &str,
    size: Option<i64>,
    etag: &str,
) -> Value {
    let mut e: EventBridgeEvent<Value> = EventBridgeEvent::default();
    e.version = Some("0".into());
    e.id = Some(uuid::Uuid::new_v4().to_string());
    e.detail_type = "Object Created".into();
    e.source = "aws.s3".into();
    e.account = Some(ctx.account_id.clone());
    e.time = Some(chrono::Utc::now());
    e.region = Some(ctx.region.clone());
    e.resources = Some(vec![format!("arn:aws:s3:::{bucket}")]);
    e.detail = json!({
        "version": "0",
        "bucket": {"name": bucket},
        "object": {"key": key, "size": size.unwrap_or_default(), "etag": etag.trim_matches('"')},
        "request-id": uuid::Uuid::new_v4().simple().to_string(),
        "requester": ctx.account_id,
        "reason": "PutObject",
    });
    tracing::debug!(rule, bucket, key, "object created");
    serde_json::to_value(e).expect("events serialise")
}

fn alarm_event(
    ctx: &SourceContext,
    rule: &str,
    alarm: &aws_sdk_cloudwatch::types::MetricAlarm,
    previous: &str,
) -> Value {
    use aws_lambda_events::cloudwatch_alarms::{CloudWatchAlarmData, CloudWatchAlarmState};
    let value = |s: &str| serde_json::from_value(json!(s)).unwrap_or_default();
    let at = |t: Option<&aws_smithy_types::DateTime>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .unwrap_or_else(chrono::Utc::now)
    };
    let mut state: CloudWatchAlarmState<Value> = CloudWatchAlarmState::default();
    state.value = value(alarm.state_value().map(|s| s.as_str()).unwrap_or("ALARM"));
    state.reason = alarm.state_reason().unwrap_or_default().to_owned();
    state.reason_data = alarm.state_reason_data().map(|d| json!(d));
    state.timestamp = at(alarm.state_updated_timestamp());
    let mut previous_state: CloudWatchAlarmState<Value> = CloudWatchAlarmState::default();
    previous_state.value = value(previous);
    previous_state.timestamp = state.timestamp;
    let mut detail: CloudWatchAlarmData<Value, Value> = CloudWatchAlarmData::default();
    detail.alarm_name = alarm.alarm_name().unwrap_or_default().to_owned();
    detail.state = Some(state);
    detail.previous_state = Some(previous_state);
    detail.configuration = json!({
        "description": alarm.alarm_description(),
        "metrics": [{"metricStat": {"metric": {
            "namespace": alarm.namespace(),
            "name": alarm.metric_name(),
            "dimensions": alarm.dimensions().iter().map(|d| (d.name().unwrap_or_default().to_owned(), json!(d.value()))).collect::<serde_json::Map<_, _>>(),
        }}}],
    });
    let mut e: EventBridgeEvent<CloudWatchAlarmData<Value, Value>> = EventBridgeEvent::default();
    e.version = Some("0".into());
    e.id = Some(uuid::Uuid::new_v4().to_string());
    e.detail_type = "CloudWatch Alarm State Change".into();
    e.source = "aws.cloudwatch".into();
    e.account = Some(ctx.account_id.clone());
    e.time = Some(chrono::Utc::now());
    e.region = Some(ctx.region.clone());
    e.resources = Some(vec![alarm.alarm_arn().unwrap_or_default().to_owned()]);
    e.detail = detail;
    tracing::debug!(rule, alarm = %e.detail.alarm_name, "alarm state change");
    serde_json::to_value(e).expect("events serialise")
}

/// Serves a function's URL on its own loopback port (`port`, or any free one for 0).
pub async fn serve_url(
    ctx: Arc<SourceContext>,
    function: String,
    auth: UrlAuth,
    port: u16,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(UrlState {
        ctx,
        target: Target {
            function_name: function,
            qualifier: None,
        },
        auth,
        domain: format!("{addr}"),
    });
    let app = axum::Router::new()
        .fallback(url_request)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::sandbox::MAX_SYNC_PAYLOAD,
        ))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(addr)
}

struct UrlState {
    ctx: Arc<SourceContext>,
    target: Target,
    auth: UrlAuth,
    domain: String,
}

fn url_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"Message": message}).to_string(),
    )
        .into_response()
}

async fn url_request(
    State(state): State<Arc<UrlState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // AWS_IAM URLs take SigV4-signed requests only. Local credentials are
    // dummies, so the signature's presence is checked, not its maths.
    if state.auth == UrlAuth::AwsIam
        && !headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "))
    {
        return url_error(StatusCode::FORBIDDEN, "Forbidden");
    }
    let event = url_event(&state, peer, &method, &uri, &headers, &body);
    let payload = Bytes::from(serde_json::to_vec(&event).expect("events serialise"));
    match state.ctx.invoker.invoke(&state.target, payload, None).await {
        Ok(inv) if !inv.outcome.is_error() => url_response(inv.outcome.payload()),
        Ok(_) => url_error(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        Err(e) => {
            tracing::warn!(error = %e, function = %state.target.function_name, "function URL could not invoke");
            url_error(StatusCode::BAD_GATEWAY, "Internal Server Error")
        }
    }
}

fn url_event(
    state: &UrlState,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> LambdaFunctionUrlRequest {
    let now = chrono::Utc::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut http = aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequestContextHttpDescription::default();
    http.method = Some(method.to_string());
    http.path = Some(uri.path().to_owned());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some(peer.ip().to_string());
    http.user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut rc =
        aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequestContext::default();
    rc.account_id = Some(if state.auth == UrlAuth::AwsIam {
        state.ctx.account_id.clone()
    } else {
        "anonymous".into()
    });
    rc.request_id = Some(request_id);
    rc.apiid = Some(state.target.function_name.clone());
    rc.domain_name = Some(state.domain.clone());
    rc.domain_prefix = Some(state.target.function_name.clone());
    rc.time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    rc.time_epoch = now.timestamp_millis();
    rc.http = http;
    rc.other.insert("routeKey".into(), json!("$default"));
    rc.other.insert("stage".into(), json!("$default"));
    let mut event = LambdaFunctionUrlRequest::default();
    event.version = Some("2.0".into());
    event.raw_path = Some(uri.path().to_owned());
    event.raw_query_string = Some(uri.query().unwrap_or_default().to_owned());
    event.query_string_parameters = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect();
    let cookies: Vec<String> = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split("; ").map(str::to_owned))
        .collect();
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    let mut forwarded = headers.clone();
    forwarded.remove("cookie");
    event.headers = forwarded;
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => event.body = Some(text.to_owned()),
            Err(_) => {
                event.body = Some(BASE64.encode(body));
                event.is_base64_encoded = true;
            }
        }
    }
    event.request_context = rc;
    event
}

/// Lambda's rule for URL answers: an object with `statusCode` is a response
/// description; anything else is a JSON body with status 200.
fn url_response(payload: &Bytes) -> Response {
    let mut value: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let Some(fields) = value
        .as_object_mut()
        .filter(|v| v.contains_key("statusCode"))
    else {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            payload.clone(),
        )
            .into_response();
    };
    // Lambda takes a description without these; the type wants them present.
    fields.entry("cookies").or_insert_with(|| json!([]));
    fields.entry("headers").or_insert_with(|| json!({}));
    fields.entry("isBase64Encoded").or_insert(json!(false));
    let described = match serde_json::from_value::<LambdaFunctionUrlResponse>(value) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "function URL answer is not a valid response description");
            return url_error(StatusCode::BAD_GATEWAY, "Internal Server Error");
        }
    };
    let status = u16::try_from(described.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match (described.body, described.is_base64_encoded) {
        (Some(b), true) => match BASE64.decode(b) {
            Ok(bytes) => Bytes::from(bytes),
            Err(_) => return url_error(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        },
        (Some(b), false) => Bytes::from(b),
        (None, _) => Bytes::new(),
    };
    let mut resp = (status, described.headers, body).into_response();
    for cookie in described.cookies {
        if let Ok(v) = cookie.parse() {
            resp.headers_mut().append("set-cookie", v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam_events_are_read_with_lambda_defaults() {
        let e = EventSource::from_sam("F", "Stream", &json!({"Type": "DynamoDB", "Properties": {"Stream": "arn:s", "StartingPosition": "LATEST"}})).unwrap();
        assert_eq!(
            e,
            Some(EventSource::DynamoDbStream {
                stream_arn: "arn:s".into(),
                from_start: false,
                batch_size: 100,
                max_retries: None,
                report_failures: false,
                bisect: false,
                max_record_age: None,
                on_failure: None,
                filters: vec![],
                batching_window: Duration::ZERO,
            })
        );
        let e = EventSource::from_sam(
            "F",
            "Stream",
            &json!({"Type": "DynamoDB", "Properties": {
            "Stream": "arn:s", "MaximumRetryAttempts": 2, "BisectBatchOnFunctionError": true,
            "MaximumRecordAgeInSeconds": 60, "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:r:1:dlq"}},
            "FilterCriteria": {"Filters": [{"Pattern": "{\"eventName\": [\"INSERT\"]}"}]}}}),
        )
        .unwrap();
        let Some(EventSource::DynamoDbStream {
            max_retries,
            bisect,
            max_record_age,
            on_failure,
            filters,
            report_failures,
            ..
        }) = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (max_retries, bisect, report_failures),
            (Some(2), true, true)
        );
        assert_eq!(max_record_age, Some(Duration::from_secs(60)));
        assert_eq!(on_failure.as_deref(), Some("arn:aws:sqs:r:1:dlq"));
        assert!(filters[0].matches(&json!({"eventName": "INSERT"})));
        for bad in [
            json!({"Stream": "s", "MaximumRecordAgeInSeconds": 5}),
            json!({"Stream": "s", "FilterCriteria": {"Filters": [{"Pattern": "{\"a\": [{\"numeric\": [1]}]}"}]}}),
            json!({"Stream": "s", "MaximumBatchingWindowInSeconds": 301}),
            json!({"Stream": "s", "BatchSize": 10_001}),
            json!({"Stream": "s", "DestinationConfig": {"OnFailure": {"Type": "SNS", "Destination": "arn:t"}}}),
        ] {
            let err =
                EventSource::from_sam("F", "S", &json!({"Type": "DynamoDB", "Properties": bad}))
                    .unwrap_err();
            assert!(err.starts_with("F.Events.S:"), "{err}");
        }
        let queue = |props: Value| {
            let mut all = json!({"Queue": "arn:q"});
            all.as_object_mut()
                .unwrap()
                .extend(props.as_object().unwrap().clone());
            EventSource::from_sam("F", "Q", &json!({"Type": "SQS", "Properties": all}))
        };
        for (props, problem) in [
            (
                json!({"FilterCriteria": {"Filters": [{"Pattern": "{\"attributes\": {\"x\": [\"1\"]}}"}]}}),
                "only name the body key, not \"attributes\"",
            ),
            (
                json!({"BatchSize": 11}),
                "needs a MaximumBatchingWindowInSeconds",
            ),
            (json!({"BatchSize": 0}), "BatchSize 0 must be 1 to 10000"),
            (
                json!({"MaximumBatchingWindowInSeconds": -1}),
                "must be 0 to 300",
            ),
            (
                json!({"MaximumBatchingWindow": 1}),
                "MaximumBatchingWindow is not played",
            ),
        ] {
            let err = queue(props).unwrap_err();
            assert!(err.contains(problem), "{err:?} should contain {problem:?}");
        }
        let Ok(Some(EventSource::Sqs {
            batch_size,
            batching_window,
            filters,
            ..
        })) = queue(json!({
            "BatchSize": 50,
            "MaximumBatchingWindowInSeconds": 2,
            "FilterCriteria": {"Filters": [{"Pattern": "{\"body\": {\"kind\": [\"order\"]}}"}]},
        }))
        else {
            panic!("a windowed, filtered queue is played")
        };
        assert_eq!((batch_size, batching_window), (50, Duration::from_secs(2)));
        let fifo = |props: Value| {
            EventSource::from_sam("F", "Q", &json!({"Type": "SQS", "Properties": props}))
        };
        for props in [
            json!({"Queue": "arn:aws:sqs:r:1:q.fifo", "BatchSize": 11, "MaximumBatchingWindowInSeconds": 1}),
            json!({"Queue": "arn:aws:sqs:r:1:q.fifo", "MaximumBatchingWindowInSeconds": 1}),
        ] {
            let err = fifo(props).unwrap_err();
            assert!(err.contains("FIFO"), "{err}");
        }
        assert!(fifo(json!({"Queue": "arn:aws:sqs:r:1:q.fifo", "BatchSize": 10})).is_ok());
        assert!(filters[0].matches(&json!({"body": {"kind": "order"}})));
        let e = EventSource::from_sam("F", "Q", &json!({"Type": "SQS", "Properties": {"Queue": "arn:q", "FunctionResponseTypes": ["ReportBatchItemFailures"]}})).unwrap();
        assert!(matches!(
            e,
            Some(EventSource::Sqs {
                batch_size: 10,
                report_failures: true,
                max_concurrency: None,
                ..
            })
        ));
        let sqs = |scaling: Value| {
            EventSource::from_sam(
                "F",
                "Q",
                &json!({"Type": "SQS", "Properties": {"Queue": "arn:q", "ScalingConfig": scaling}}),
            )
        };
        assert!(matches!(
            sqs(json!({"MaximumConcurrency": 5})),
            Ok(Some(EventSource::Sqs {
                max_concurrency: Some(5),
                ..
            }))
        ));
        for (scaling, problem) in [
            (json!({"MaximumConcurrency": 1}), "1 is out of range"),
            (json!({"MaximumConcurrency": 1001}), "1001 is out of range"),
            (json!({"MaximumConcurency": 5}), "MaximumConcurrency only"),
        ] {
            let err = sqs(scaling).unwrap_err();
            assert!(err.contains(problem), "{err}");
        }
        assert_eq!(
            EventSource::from_sam(
                "F",
                "Off",
                &json!({"Type": "SQS", "Properties": {"Queue": "q", "Enabled": false}})
            ),
            Ok(None)
        );
        let err = EventSource::from_sam("F", "K", &json!({"Type": "Kinesis", "Properties": {}}))
            .unwrap_err();
        assert!(
            err.contains("F.Events.K") && err.contains("Kinesis"),
            "{err}"
        );
        let err = EventSource::from_sam("F", "S", &json!({"Type": "DynamoDB", "Properties": {}}))
            .unwrap_err();
        assert!(err.contains("Stream"), "{err}");
    }

    #[test]
    fn url_answers_follow_lambda_rules() {
        let plain = url_response(&Bytes::from_static(br#"{"hello":"world"}"#));
        assert_eq!(plain.status(), StatusCode::OK);
        let minimal = url_response(&Bytes::from_static(br#"{"statusCode":204}"#));
        assert_eq!(minimal.status(), StatusCode::NO_CONTENT);
        let recorder_shape = url_response(&Bytes::from_static(
            br#"{"statusCode":200,"headers":{"content-type":"application/json"},"body":"{}"}"#,
        ));
        assert_eq!(recorder_shape.status(), StatusCode::OK);
        let described = url_response(&Bytes::from_static(
            br#"{"statusCode":201,"headers":{"x-a":"b"},"body":"aGk=","isBase64Encoded":true,"cookies":["c=1"]}"#,
        ));
        assert_eq!(described.status(), StatusCode::CREATED);
        assert_eq!(described.headers()["x-a"], "b");
        assert_eq!(described.headers()["set-cookie"], "c=1");
    }
}
