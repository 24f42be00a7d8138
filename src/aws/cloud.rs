//! The cloud port through the AWS SDK: Lambda's control plane within
//! Sluice's budget, CloudWatch alarms, hook invocations, the shifter's queue.

use super::config::{send_to_queue, service_message};
use super::invoke::invoke;
use crate::budget::{Budget, BudgetError};
use crate::domain::analysis::Counts;
use crate::domain::deployment::Time;
use crate::domain::hooks::HookRequest;
use crate::events::{HandedOver, TimerMessage};
use crate::ports::MetricQuery;
use crate::ports::{AliasState, AliasWrite, Cloud, EngineError, Invocation, Readiness, aws};
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricStat, StateValue, StatusCode,
};
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use aws_sdk_lambda::types::FunctionConfiguration;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The series an analysis sums for each version.
const ANALYSED_METRICS: [&str; 3] = ["Invocations", "Errors", "Duration"];
const P99_ID: &str = "new_p99_duration";

fn smithy_time(t: Time) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_millis(t.timestamp_millis())
}

/// How long a worker waits for Lambda to finish a function update or to
/// activate a version before it leaves the deployment to be retried.
const STATE_WAIT: Duration = Duration::from_secs(60);

/// Attempts of one budgeted control-plane call, as the SDK's standard
/// retry strategy makes (`AwsCloud::budgeted`).
const CONTROL_PLANE_ATTEMPTS: u32 = 3;

type LambdaSdkError<E> =
    aws_sdk_lambda::error::SdkError<E, aws_sdk_lambda::config::http::HttpResponse>;

/// Whether a failed Lambda call may succeed if made again: throttled, in
/// conflict with an update in progress, Lambda failing, or no answer at all.
/// Anything else (a missing object, a refused parameter, a denied
/// permission) will fail the same way again.
fn worth_retrying<E, R>(e: &aws_sdk_lambda::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata,
{
    match e.as_service_error() {
        Some(se) => matches!(
            se.code(),
            Some(
                "TooManyRequestsException"
                    | "ResourceConflictException"
                    | "ServiceException"
                    | "EC2ThrottledException"
                    | "ResourceNotReadyException"
            )
        ),
        None => true,
    }
}

/// The cloud through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsCloud {
    pub lambda: aws_sdk_lambda::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub timer_queue_url: String,
    /// Every Lambda control-plane call waits for a slot of it first.
    pub budget: Budget,
    /// Slots taken ahead for an alias's next call (`reserve_alias_call`),
    /// by `function:alias`.
    pub reserved: ReservedSlots,
}

/// Slots of the budget taken ahead, by `function:alias`; shared by clones.
pub type ReservedSlots = Arc<Mutex<HashMap<String, Instant>>>;

/// A slot taken ahead is used by a call this soon after it, or dropped: a
/// stale one (its save lost, say) would add a call to a later slot's.
const RESERVED_SLOT_FRESH: Duration = Duration::from_millis(50);

impl AwsCloud {
    pub fn new(config: &aws_config::SdkConfig, timer_queue_url: String, budget: Budget) -> Self {
        AwsCloud {
            lambda: aws_sdk_lambda::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            timer_queue_url,
            budget,
            reserved: Arc::default(),
        }
    }

    /// A control-plane call made within the budget: each attempt takes a
    /// slot first, and the SDK's own retries are off for it, since a retry
    /// the SDK sent would be a request the budget never saw. An attempt that
    /// is worth repeating (throttled, in conflict, no answer) is made again
    /// after a jittered backoff, up to [`CONTROL_PLANE_ATTEMPTS`] in all;
    /// `call` gets the override to apply to its request.
    async fn budgeted<T, E, Fut>(
        &self,
        what: &str,
        call: impl FnMut(aws_sdk_lambda::config::Builder) -> Fut,
    ) -> Result<Result<T, LambdaSdkError<E>>, EngineError>
    where
        Fut: Future<Output = Result<T, LambdaSdkError<E>>>,
        E: aws_sdk_lambda::error::ProvideErrorMetadata,
    {
        self.budgeted_on(what, None, call).await
    }

    /// `budgeted`, for a call on `alias` (`function:alias`): its first
    /// attempt takes the slot reserved for it, if one was.
    async fn budgeted_on<T, E, Fut>(
        &self,
        what: &str,
        alias: Option<String>,
        mut call: impl FnMut(aws_sdk_lambda::config::Builder) -> Fut,
    ) -> Result<Result<T, LambdaSdkError<E>>, EngineError>
    where
        Fut: Future<Output = Result<T, LambdaSdkError<E>>>,
        E: aws_sdk_lambda::error::ProvideErrorMetadata,
    {
        let mut reserved = alias.and_then(|alias| self.take_reserved(&alias));
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            match reserved.take() {
                Some(slot) => tokio::time::sleep_until(slot).await,
                None => self.admit(what).await?,
            }
            let once = aws_sdk_lambda::config::Builder::default()
                .retry_config(aws_config::retry::RetryConfig::disabled());
            let result = call(once).await;
            match &result {
                Err(e) if attempt < CONTROL_PLANE_ATTEMPTS && worth_retrying(e) => {
                    let jitter = rand::random_range(0.5..1.5);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff *= 2;
                }
                _ => return Ok(result),
            }
        }
        unreachable!("the attempts end in a return")
    }

    /// Creates an alias on `version`, within the control-plane budget: the
    /// SDK's answer, or a transient failure (out of budget).
    pub async fn create_alias(
        &self,
        function: &str,
        alias: &str,
        version: &str,
        description: &str,
    ) -> Result<
        Result<
            aws_sdk_lambda::operation::create_alias::CreateAliasOutput,
            LambdaSdkError<aws_sdk_lambda::operation::create_alias::CreateAliasError>,
        >,
        EngineError,
    > {
        self.budgeted("CreateAlias", |once| {
            self.lambda
                .create_alias()
                .function_name(function)
                .name(alias)
                .function_version(version)
                .description(description)
                .customize()
                .config_override(once)
                .send()
        })
        .await
    }

    /// The slot reserved for `alias`'s next call, if it is still fresh.
    fn take_reserved(&self, alias: &str) -> Option<Instant> {
        let slot = self
            .reserved
            .lock()
            .expect("reserved slots")
            .remove(alias)?;
        (Instant::now() <= slot + RESERVED_SLOT_FRESH).then_some(slot)
    }

    /// A slot of the control-plane budget for the call `what`; a budget
    /// spoken for further ahead than a worker waits is a transient failure:
    /// the step is retried, as a throttled call is.
    async fn admit(&self, what: &str) -> Result<(), EngineError> {
        match self.budget.admit().await {
            Ok(()) => Ok(()),
            Err(BudgetError::Short(ahead)) => Err(EngineError::OutOfBudget {
                what: what.to_owned(),
                ahead,
            }),
            Err(e) => Err(EngineError::Aws(format!("{what}: {e}"))),
        }
    }

    /// Why a function, or one of its versions, cannot be used, if it cannot:
    /// one `GetFunction`, outside the control-plane quota. A deployment
    /// request is checked with it before anything is written.
    pub async fn unusable_function(
        &self,
        function: &str,
        qualifier: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        match self
            .lambda
            .get_function()
            .function_name(function)
            .set_qualifier(qualifier.map(str::to_owned))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(Some("does not exist".into()))
            }
            Err(e) if worth_retrying(&e) => Err(aws("GetFunction", e)),
            Err(e) => Ok(Some(format!("cannot be read: {}", service_message(&e)))),
        }
    }
}

impl Cloud for AwsCloud {
    async fn read_alias(
        &self,
        function: &str,
        alias: &str,
    ) -> Result<Option<AliasState>, EngineError> {
        let read = self
            .budgeted_on("GetAlias", Some(format!("{function}:{alias}")), |once| {
                self.lambda
                    .get_alias()
                    .function_name(function)
                    .name(alias)
                    .customize()
                    .config_override(once)
                    .send()
            })
            .await?;
        match read {
            Ok(a) => Ok(Some(AliasState {
                version: a.function_version().unwrap_or_default().to_owned(),
                weights: a
                    .routing_config()
                    .and_then(|r| r.additional_version_weights())
                    .cloned()
                    .unwrap_or_default(),
                revision: a.revision_id().map(str::to_owned),
                arn: a.alias_arn().map(str::to_owned),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) if worth_retrying(&e) => Err(aws("GetAlias", e)),
            Err(e) => Err(EngineError::Refused(format!(
                "GetAlias {function}:{alias}: {}",
                service_message(&e)
            ))),
        }
    }

    async fn alias_version(
        &self,
        function: &str,
        alias: &str,
    ) -> Result<Option<String>, EngineError> {
        match self
            .lambda
            .get_function()
            .function_name(function)
            .qualifier(alias)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .configuration()
                .and_then(|c| c.version())
                .map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) if worth_retrying(&e) => Err(aws("GetFunction", e)),
            Err(e) => Err(EngineError::Refused(format!(
                "GetFunction {function}:{alias}: {}",
                service_message(&e)
            ))),
        }
    }

    async fn reserve_alias_call(&self, function: &str, alias: &str) {
        let asked = Instant::now();
        match self.budget.reserve(chrono::Utc::now()).await {
            Ok(wait) => {
                let mut reserved = self.reserved.lock().expect("reserved slots");
                reserved.insert(format!("{function}:{alias}"), asked + wait);
            }
            // The call asks for its own slot, and is told the same.
            Err(e) => tracing::debug!(error = %e, "no slot taken ahead"),
        }
    }

    async fn write_alias(
        &self,
        function: &str,
        alias: &str,
        primary: &str,
        weights: &HashMap<String, f64>,
        revision: Option<&str>,
    ) -> Result<AliasWrite, EngineError> {
        let sent = std::sync::atomic::AtomicU32::new(0);
        let written = self
            .budgeted_on("UpdateAlias", Some(format!("{function}:{alias}")), |once| {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.lambda
                    .update_alias()
                    .function_name(function)
                    .name(alias)
                    .function_version(primary)
                    .routing_config(
                        AliasRoutingConfiguration::builder()
                            .set_additional_version_weights(Some(weights.clone()))
                            .build(),
                    )
                    .set_revision_id(revision.map(str::to_owned))
                    .customize()
                    .config_override(once)
                    .send()
            })
            .await?;
        match written {
            Ok(out) => Ok(AliasWrite::Written {
                revision: out.revision_id().map(str::to_owned),
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_precondition_failed_exception()) =>
            {
                Ok(AliasWrite::Stale {
                    after_retry: sent.load(std::sync::atomic::Ordering::Relaxed) > 1,
                })
            }
            // Refused for good (the alias or version gone, the write denied):
            // a shift rolls back rather than be tried forever.
            Err(e) if !worth_retrying(&e) => {
                let se = e.as_service_error();
                Err(EngineError::Refused(format!(
                    "UpdateAlias of {function}:{alias} refused: {} {}",
                    se.and_then(aws_sdk_lambda::error::ProvideErrorMetadata::code)
                        .unwrap_or("error"),
                    se.and_then(aws_sdk_lambda::error::ProvideErrorMetadata::message)
                        .unwrap_or_default()
                )))
            }
            Err(e) => Err(aws("UpdateAlias", e)),
        }
    }

    /// Reads with `GetFunction`, whose quota (100 requests per second) is
    /// not the control plane's 15.
    async fn ready_version(&self, function: &str, version: &str) -> Result<Readiness, EngineError> {
        self.wait_active(function, version).await
    }

    /// Waits out any update in progress (a person's, CloudFormation's, another
    /// deployment's), uploads, waits for the update to finish, publishes
    /// pinned to the code just uploaded (so a concurrent upload cannot slip
    /// in between), and waits for the version to be `Active`: Lambda refuses
    /// to publish during an update and to invoke a `Pending` version.
    async fn publish(
        &self,
        function: &str,
        bucket: &str,
        key: &str,
        object_version: Option<&str>,
    ) -> Result<Readiness, EngineError> {
        if let Readiness::Refused(why) = self.wait_updated(function).await? {
            return Ok(Readiness::Refused(why));
        }
        let source = format!("UpdateFunctionCode from s3://{bucket}/{key}");
        let updated = self
            .budgeted(&source, |once| {
                self.lambda
                    .update_function_code()
                    .function_name(function)
                    .s3_bucket(bucket)
                    .s3_key(key)
                    .set_s3_object_version(object_version.map(str::to_owned))
                    .customize()
                    .config_override(once)
                    .send()
            })
            .await?;
        let updated = match updated {
            Ok(updated) => updated,
            Err(e) if worth_retrying(&e) => return Err(aws(&source, e)),
            Err(e) => {
                return Ok(Readiness::Refused(format!(
                    "{source}: {}",
                    service_message(&e)
                )));
            }
        };
        if let Readiness::Refused(why) = self.wait_updated(function).await? {
            return Ok(Readiness::Refused(format!("{source}: {why}")));
        }
        let sha = updated.code_sha256().unwrap_or_default();
        let published = self
            .budgeted("PublishVersion", |once| {
                self.lambda
                    .publish_version()
                    .function_name(function)
                    .code_sha256(sha)
                    .customize()
                    .config_override(once)
                    .send()
            })
            .await?;
        let published = match published {
            Ok(published) => published,
            Err(e) if worth_retrying(&e) => return Err(aws("PublishVersion", e)),
            Err(e) => {
                return Ok(Readiness::Refused(format!(
                    "PublishVersion: {}",
                    service_message(&e)
                )));
            }
        };
        let Some(version) = published.version() else {
            return Err(EngineError::Aws(
                "PublishVersion returned no version".into(),
            ));
        };
        self.wait_active(function, version).await
    }

    async fn alarms_in_alarm(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, bool>, EngineError> {
        let out = self
            .cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| aws::<EngineError>("DescribeAlarms", e))?;
        let metric = out
            .metric_alarms()
            .iter()
            .filter_map(|a| Some((a.alarm_name()?, a.state_value())));
        let composite = out
            .composite_alarms()
            .iter()
            .filter_map(|a| Some((a.alarm_name()?, a.state_value())));
        Ok(metric
            .chain(composite)
            .map(|(name, state)| (name.to_owned(), state == Some(&StateValue::Alarm)))
            .collect())
    }

    async fn invoke_hook(
        &self,
        hook: &str,
        request: &HookRequest,
        timeout: Duration,
    ) -> Result<Invocation, EngineError> {
        let payload = serde_json::to_vec(request).expect("hook requests serialise");
        invoke(&self.lambda, hook, payload, Some(timeout))
            .await
            .map_err(|e| aws("Invoke (hook throttled)", e))
    }

    async fn start_hook(&self, hook: &str, payload: Vec<u8>) -> Result<Invocation, EngineError> {
        let invoked = self
            .lambda
            .invoke()
            .function_name(hook)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await;
        match invoked {
            Ok(_) => Ok(Invocation::Answered(Vec::new())),
            Err(e) if worth_retrying(&e) => Err(aws("Invoke (asynchronous hook)", e)),
            Err(e) => Ok(Invocation::NotRun(service_message(&e))),
        }
    }

    /// One GetMetricData request (and its pages) for the six series: each
    /// version's Invocations, Errors and Duration through the alias, by
    /// `ExecutedVersion`, summed over the query's whole periods.
    async fn measure(&self, query: &MetricQuery) -> Result<(Counts, Counts), EngineError> {
        let resource = format!("{}:{}", query.function, query.alias);
        let series = |version: &str, metric: &str, stat: &str, period_secs: i64| {
            let dimensions = [
                ("FunctionName", query.function.as_str()),
                ("Resource", resource.as_str()),
                ("ExecutedVersion", version),
            ]
            .into_iter()
            .map(|(n, v)| Dimension::builder().name(n).value(v).build())
            .collect();
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace("AWS/Lambda")
                        .metric_name(metric)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(period_secs as i32)
                .stat(stat)
                .build()
        };
        let period = query.period_secs as i64;
        let mut queries = Vec::new();
        for (who, version) in [("new", &query.new_version), ("old", &query.old_version)] {
            for metric in ANALYSED_METRICS {
                queries.push(
                    MetricDataQuery::builder()
                        .id(format!("{who}_{}", metric.to_lowercase()))
                        .metric_stat(series(version, metric, "Sum", period))
                        .build(),
                );
            }
        }
        // A percentile is not a sum of periods' percentiles: one period,
        // the whole window, gives the window's.
        let window = (query.to - query.from).num_seconds().max(period);
        if query.p99 {
            queries.push(
                MetricDataQuery::builder()
                    .id(P99_ID)
                    .metric_stat(series(&query.new_version, "Duration", "p99", window))
                    .build(),
            );
        }
        let mut p99 = None;
        let mut sums: HashMap<String, f64> = HashMap::new();
        let mut next_token = None;
        loop {
            let out = self
                .cloudwatch
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(smithy_time(query.from))
                .end_time(smithy_time(query.to))
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| aws::<EngineError>("GetMetricData", e))?;
            for result in out.metric_data_results() {
                if result.status_code() == Some(&StatusCode::InternalError) {
                    return Err(EngineError::Aws(format!(
                        "GetMetricData: CloudWatch could not read {}",
                        result.id().unwrap_or("a series")
                    )));
                }
                let id = result.id().unwrap_or_default().to_owned();
                if id == P99_ID {
                    p99 = result.values().iter().copied().reduce(f64::max).or(p99);
                    continue;
                }
                *sums.entry(id).or_default() += result.values().iter().sum::<f64>();
            }
            next_token = out.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        let counts = |who: &str| {
            let sum = |metric: &str| sums.get(&format!("{who}_{metric}")).copied().unwrap_or(0.0);
            Counts {
                invocations: sum("invocations"),
                errors: sum("errors"),
                duration_ms: sum("duration"),
                p99_duration_ms: None,
            }
        };
        let new = Counts {
            p99_duration_ms: p99,
            ..counts("new")
        };
        Ok((new, counts("old")))
    }

    async fn send_timer(&self, message: &TimerMessage, delay_secs: i32) -> Result<(), EngineError> {
        send_to_queue(&self.sqs, &self.timer_queue_url, message, delay_secs)
            .await
            .map_err(|e| aws("SendMessage (timer)", e))
    }

    async fn hand_over(&self, work: &HandedOver, delay_secs: i32) -> Result<(), EngineError> {
        send_to_queue(&self.sqs, &self.timer_queue_url, work, delay_secs)
            .await
            .map_err(|e| aws("SendMessage (work handed over)", e))
    }
}

impl AwsCloud {
    /// Waits until no update of `function` is in progress; `Refused` if
    /// the last update failed.
    async fn wait_updated(&self, function: &str) -> Result<Readiness, EngineError> {
        self.poll_state(function, "$LATEST", |c| {
            match c.last_update_status().map(|s| s.as_str()) {
                Some("InProgress") => StatePoll::Wait,
                Some("Failed") => StatePoll::Failed(format!(
                    "the last update of {function} failed: {}",
                    c.last_update_status_reason().unwrap_or("no reason given")
                )),
                _ => StatePoll::Ready,
            }
        })
        .await
    }

    /// Waits until `version` of `function` is `Active`.
    async fn wait_active(&self, function: &str, version: &str) -> Result<Readiness, EngineError> {
        self.poll_state(function, version, |c| match c.state().map(|s| s.as_str()) {
            Some("Active") => StatePoll::Ready,
            Some("Failed") => StatePoll::Failed(format!(
                "version {version} of {function} is in state Failed: {}",
                c.state_reason().unwrap_or("no reason given")
            )),
            _ => StatePoll::Wait,
        })
        .await
    }

    /// Reads `function:qualifier` with `GetFunction` until `read` says its
    /// state window has ended, for up to `STATE_WAIT`. Not the SDK's
    /// waiters: they sleep a second and more between reads, so a window of
    /// 1 to 3 s cost up to 2 s more on the way from a push to its first
    /// shift (BENCHMARKS.md, "Webhook to first shift").
    async fn poll_state(
        &self,
        function: &str,
        qualifier: &str,
        read: impl Fn(&FunctionConfiguration) -> StatePoll,
    ) -> Result<Readiness, EngineError> {
        let started = std::time::Instant::now();
        let give_up = started + STATE_WAIT;
        loop {
            let mut pause = if started.elapsed() < STATE_POLL_QUICKLY {
                STATE_POLL
            } else {
                STATE_POLL_SLOWLY
            };
            let got = self
                .lambda
                .get_function()
                .function_name(function)
                .qualifier(qualifier)
                .send()
                .await;
            match got {
                Ok(out) => match out.configuration().map_or(StatePoll::Wait, &read) {
                    StatePoll::Ready => return Ok(Readiness::Ready(qualifier.to_owned())),
                    StatePoll::Failed(why) => return Ok(Readiness::Refused(why)),
                    StatePoll::Wait => {}
                },
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_resource_not_found_exception()) =>
                {
                    return Ok(Readiness::Refused(if qualifier == "$LATEST" {
                        format!("function {function} does not exist")
                    } else {
                        format!("version {qualifier} of {function} does not exist")
                    }));
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_too_many_requests_exception()) =>
                {
                    pause = STATE_POLL_SLOWLY;
                }
                Err(e) => {
                    return Err(EngineError::Aws(format!(
                        "waiting for {function}:{qualifier} to be ready: {e:?}"
                    )));
                }
            }
            if std::time::Instant::now() >= give_up {
                return Err(EngineError::Aws(format!(
                    "waiting for {function}:{qualifier} to be ready: still not after {} s",
                    STATE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// What a read of a function's state says.
enum StatePoll {
    Ready,
    Wait,
    Failed(String),
}

/// The pause between reads of a function's state while its window is
/// young: Lambda's windows last a second or a few
/// (<https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html>),
/// and every pause is up to as much time more on a push's way to its first
/// shift. The reads share `GetFunction`'s own quota (100 a second for the
/// account, apart from the control plane's), so after `STATE_POLL_QUICKLY`
/// they slow to `STATE_POLL_SLOWLY`, and a throttled read is a wait.
const STATE_POLL: Duration = Duration::from_millis(100);
const STATE_POLL_QUICKLY: Duration = Duration::from_secs(5);
const STATE_POLL_SLOWLY: Duration = Duration::from_secs(1);
