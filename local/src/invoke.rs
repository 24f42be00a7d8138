//! Invocation as Lambda does it: resolve the qualifier (version, alias with
//! weighted routing, `$LATEST`), run the version in a sandbox, count it in
//! CloudWatch. The Lambda API and every event source come through here.

use crate::async_config::{
    AsyncConfig, Condition, Destination, Response as AsyncResponse, invocation_record,
};
use crate::control_plane::FunctionStates;
use crate::metrics::{InvocationRecord, Metrics};
use crate::sandbox::{FunctionSpec, Outcome, Pool, SandboxError};
use aws_sdk_lambda::Client as LambdaClient;
use axum::body::Bytes;
use rand::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A function and qualifier as a caller names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub function_name: String,
    pub qualifier: Option<String>,
}

impl Target {
    /// Accepts a name, a partial ARN (`123456789012:function:name`) or a full ARN,
    /// each optionally qualified, and a separate qualifier (the `Qualifier`
    /// parameter); the two must agree when both are given.
    pub fn parse(function: &str, qualifier: Option<&str>) -> Result<Self, InvokeError> {
        let parts: Vec<&str> = function.split(':').collect();
        let (name, in_name) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [_, "function", name] => (*name, None),
            [_, "function", name, q] => (*name, Some(*q)),
            ["arn", _, "lambda", _, _, "function", name] => (*name, None),
            ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
            _ => {
                return Err(InvokeError::InvalidParameter(format!(
                    "{function:?} is not a function name or ARN"
                )));
            }
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(InvokeError::InvalidParameter(format!(
                "function name {name:?} must be 1 to 64 letters, digits, hyphens or underscores"
            )));
        }
        let qualifier = match (in_name, qualifier.filter(|q| !q.is_empty())) {
            (Some(a), Some(b)) if a != b => {
                return Err(InvokeError::InvalidParameter(
                    "The derived qualifier from the function name does not match the specified qualifier."
                        .into(),
                ));
            }
            (a, b) => a.or(b).map(str::to_owned),
        };
        Ok(Target {
            function_name: name.to_owned(),
            qualifier,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("Rate Exceeded. {0}")]
    Throttled(String),
    /// The function or version is not `Active` yet.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Service(String),
}

impl InvokeError {
    /// The HTTP status Lambda answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            InvokeError::NotFound(_) => 404,
            InvokeError::InvalidParameter(_) => 400,
            InvokeError::Throttled(_) => 429,
            InvokeError::Conflict(_) => 409,
            InvokeError::Service(_) => 500,
        }
    }

    /// Lambda's name for the error (`x-amzn-errortype`).
    pub fn error_type(&self) -> &'static str {
        match self {
            InvokeError::NotFound(_) => "ResourceNotFoundException",
            InvokeError::InvalidParameter(_) => "InvalidParameterValueException",
            InvokeError::Throttled(_) => "TooManyRequestsException",
            InvokeError::Conflict(_) => "ResourceConflictException",
            InvokeError::Service(_) => "ServiceException",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub outcome: Outcome,
    pub executed_version: String,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
struct AliasRoute {
    version: String,
    weights: Vec<(String, f64)>,
}

/// What moto knows of one function, cached until a write goes through sluice-local.
/// `generation` counts those writes: an answer fetched before a write must not
/// be cached after it, or a concurrent call would pin the old routing.
#[derive(Default)]
struct FunctionCache {
    generation: u64,
    specs: HashMap<String, Arc<FunctionSpec>>,
    aliases: HashMap<String, AliasRoute>,
}

pub struct Invoker {
    moto_lambda: LambdaClient,
    pool: Pool,
    metrics: Metrics,
    region: String,
    account_id: String,
    cache: Mutex<HashMap<String, FunctionCache>>,
    states: Arc<FunctionStates>,
    sqs: aws_sdk_sqs::Client,
    /// Each function's dead-letter queue (ARN): moto does not keep
    /// `DeadLetterConfig`, so sluice-local does.
    dead_letters: Mutex<HashMap<String, String>>,
    /// Before the first retry of a failed asynchronous invocation (Lambda's
    /// minute, scaled); the second waits twice as long.
    async_retry_delay: Duration,
    /// What `$LATEST` ran before an update in progress, and whether the
    /// update request is still with moto: Lambda runs the previous code and
    /// configuration until the update is done (functions-states.html).
    before_update: Mutex<HashMap<String, KeptForUpdate>>,
    /// Numbers each update request, so a request settles only its own part.
    update_requests: AtomicU64,
    /// Each function qualifier's `EventInvokeConfig`, and when it was set.
    async_configs: Mutex<HashMap<(String, String), (AsyncConfig, f64)>>,
    schedule_scale: f64,
}

impl Invoker {
    /// The data plane over moto's state; `schedule_scale` scales Lambda's
    /// times (state windows, retry delays).
    pub fn new(
        moto: &aws_config::SdkConfig,
        pool: Pool,
        metrics: Metrics,
        region: String,
        account_id: String,
        schedule_scale: f64,
    ) -> Self {
        Invoker {
            moto_lambda: LambdaClient::new(moto),
            pool,
            metrics,
            region,
            account_id,
            cache: Mutex::new(HashMap::new()),
            states: Arc::new(FunctionStates::new(schedule_scale)),
            sqs: aws_sdk_sqs::Client::new(moto),
            dead_letters: Mutex::new(HashMap::new()),
            // Lambda waits a minute before the first retry of an asynchronous invocation.
            async_retry_delay: Duration::from_secs(60).mul_f64(schedule_scale),
            before_update: Mutex::new(HashMap::new()),
            update_requests: AtomicU64::new(0),
            async_configs: Mutex::new(HashMap::new()),
            schedule_scale,
        }
    }

    /// Sets (or, with `None`, clears) a function's dead-letter queue.
    /// Forgets every function's dead-letter queue (moto was reset).
    pub fn clear_dead_letters(&self) {
        self.dead_letters.lock().expect("dead letters lock").clear();
    }

    pub fn set_dead_letter(&self, function: &str, queue_arn: Option<String>) {
        let mut dead_letters = self.dead_letters.lock().expect("dead letters lock");
        match queue_arn.filter(|arn| !arn.is_empty()) {
            Some(arn) => dead_letters.insert(function.to_owned(), arn),
            None => dead_letters.remove(function),
        };
    }

    pub fn states(&self) -> &FunctionStates {
        &self.states
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Forgets what is cached of a function; called for every write to it.
    pub fn invalidate(&self, function_name: &str) {
        let mut cache = self.cache.lock().expect("cache lock");
        let entry = cache.entry(function_name.to_owned()).or_default();
        entry.generation += 1;
        entry.specs.clear();
        entry.aliases.clear();
    }

    pub fn invalidate_all(&self) {
        let mut cache = self.cache.lock().expect("cache lock");
        for entry in cache.values_mut() {
            entry.generation += 1;
            entry.specs.clear();
            entry.aliases.clear();
        }
    }

    fn generation(&self, function: &str) -> u64 {
        let mut cache = self.cache.lock().expect("cache lock");
        cache.entry(function.to_owned()).or_default().generation
    }

    /// Caches what was read at `generation`, unless a write came in since.
    fn remember(&self, function: &str, generation: u64, store: impl FnOnce(&mut FunctionCache)) {
        let mut cache = self.cache.lock().expect("cache lock");
        let entry = cache.entry(function.to_owned()).or_default();
        if entry.generation == generation {
            store(entry);
        }
    }

    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account_id
        )
    }

    /// The version a call to `target` runs now: for a weighted alias, drawn at
    /// random by its `AdditionalVersionWeights`, as Lambda routes. A function
    /// or version that is still `Pending` is not invoked.
    pub async fn resolve(&self, target: &Target) -> Result<Arc<FunctionSpec>, InvokeError> {
        let version = match target.qualifier.as_deref() {
            None | Some("$LATEST") => "$LATEST".to_owned(),
            Some(q) if q.chars().all(|c| c.is_ascii_digit()) => q.to_owned(),
            Some(alias) => {
                let route = self.alias_route(&target.function_name, alias).await?;
                pick_version(&route, rand::rng().random::<f64>())
            }
        };
        if version == "$LATEST"
            && let Some(previous) = self.running_before_update(&target.function_name)
        {
            return Ok(previous);
        }
        let spec = self.spec(&target.function_name, &version).await?;
        match self.states.invoke_conflict(&spec.function_name, &version) {
            Some(why) => Err(InvokeError::Conflict(why)),
            None => Ok(spec),
        }
    }

    /// What `$LATEST` runs now, before an update changes it; `None` if it
    /// cannot be read (the update's own answer then says why).
    pub async fn latest(&self, function: &str) -> Option<Arc<FunctionSpec>> {
        if let Some(previous) = self.running_before_update(function) {
            return Some(previous);
        }
        self.spec(function, "$LATEST").await.ok()
    }

    /// Keeps what `$LATEST` runs now, before an update request goes to moto:
    /// from then on, until the update's window ends, invocations run it. The
    /// guard settles the request's part when dropped: refused (or the request
    /// abandoned), unless `UpdateGuard::accepted` said otherwise.
    pub fn begin_update(
        &self,
        function: &str,
        running: Option<Arc<FunctionSpec>>,
    ) -> UpdateGuard<'_> {
        let request = self.update_requests.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.before_update.lock().expect("before update lock");
        match running {
            Some(spec) => kept.insert(function.to_owned(), (spec, Some(request))),
            None => kept.remove(function),
        };
        UpdateGuard {
            invoker: self,
            function: function.to_owned(),
            request,
            accepted: false,
        }
    }

    /// Ends an update request's part: refused, nothing changed; accepted,
    /// the kept code runs while the update's window (now begun) is open. A
    /// later request's part is not this one's to end.
    fn settle_update(&self, function: &str, request: u64, accepted: bool) {
        let mut kept = self.before_update.lock().expect("before update lock");
        match kept.get_mut(function) {
            Some((_, in_flight)) if *in_flight == Some(request) => {
                if accepted {
                    *in_flight = None;
                } else {
                    kept.remove(function);
                }
            }
            _ => {}
        }
    }

    /// The code `$LATEST` still runs while an update is in progress.
    fn running_before_update(&self, function: &str) -> Option<Arc<FunctionSpec>> {
        let mut kept = self.before_update.lock().expect("before update lock");
        let (spec, in_flight) = kept.get(function)?;
        if in_flight.is_some() || self.states.updating(function) {
            return Some(spec.clone());
        }
        kept.remove(function);
        None
    }

    async fn alias_route(&self, function: &str, alias: &str) -> Result<AliasRoute, InvokeError> {
        if let Some(route) = self
            .cache
            .lock()
            .expect("cache lock")
            .get(function)
            .and_then(|c| c.aliases.get(alias))
        {
            return Ok(route.clone());
        }
        let generation = self.generation(function);
        let out = self
            .moto_lambda
            .get_alias()
            .function_name(function)
            .name(alias)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_resource_not_found_exception() => {
                    InvokeError::NotFound(format!("{}:{alias}", self.function_arn(function)))
                }
                _ => InvokeError::Service(format!("reading alias {function}:{alias}: {e:?}")),
            })?;
        let weights = out
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .map(|w| w.iter().map(|(v, p)| (v.clone(), *p)).collect())
            .unwrap_or_default();
        let route = AliasRoute {
            version: out.function_version().unwrap_or("$LATEST").to_owned(),
            weights,
        };
        self.remember(function, generation, |c| {
            c.aliases.insert(alias.to_owned(), route.clone());
        });
        Ok(route)
    }

    async fn spec(&self, function: &str, version: &str) -> Result<Arc<FunctionSpec>, InvokeError> {
        if let Some(spec) = self
            .cache
            .lock()
            .expect("cache lock")
            .get(function)
            .and_then(|c| c.specs.get(version))
        {
            return Ok(spec.clone());
        }
        let generation = self.generation(function);
        let config = self
            .moto_lambda
            .get_function_configuration()
            .function_name(function)
            .qualifier(version)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_resource_not_found_exception() => {
                    InvokeError::NotFound(format!("{}:{version}", self.function_arn(function)))
                }
                _ => InvokeError::Service(format!("reading {function}:{version}: {e:?}")),
            })?;
        let code_sha = config.code_sha256().map(str::to_owned).ok_or_else(|| {
            InvokeError::Service(format!("{function}:{version} has no CodeSha256"))
        })?;
        let environment: BTreeMap<String, String> = config
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let spec = Arc::new(FunctionSpec {
            function_name: function.to_owned(),
            function_arn: self.function_arn(function),
            version: config.version().unwrap_or(version).to_owned(),
            code_sha,
            timeout: Duration::from_secs(config.timeout().unwrap_or(3).max(1) as u64),
            memory_mb: config.memory_size().unwrap_or(128),
            handler: config.handler().map(str::to_owned),
            environment,
            role: config.role().unwrap_or_default().to_owned(),
        });
        self.remember(function, generation, |c| {
            c.specs.insert(version.to_owned(), spec.clone());
        });
        Ok(spec)
    }

    /// Invokes synchronously and records the metrics Lambda would.
    pub async fn invoke(
        &self,
        target: &Target,
        payload: Bytes,
        client_context: Option<String>,
    ) -> Result<Invocation, InvokeError> {
        let spec = self.resolve(target).await?;
        let invoked_arn = match &target.qualifier {
            Some(q) => format!("{}:{q}", spec.function_arn),
            None => spec.function_arn.clone(),
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let result = self
            .pool
            .invoke(&spec, &request_id, payload, &invoked_arn, client_context)
            .await;
        let duration = started.elapsed();
        let record = |error: bool, throttled: bool| InvocationRecord {
            function_name: spec.function_name.clone(),
            qualifier: target.qualifier.clone(),
            executed_version: spec.version.clone(),
            error,
            throttled,
            duration,
        };
        match result {
            Ok(outcome) => {
                self.metrics.record(record(outcome.is_error(), false));
                tracing::debug!(
                    function = %spec.function_name,
                    version = %spec.version,
                    request_id,
                    error = outcome.is_error(),
                    ms = duration.as_secs_f64() * 1e3,
                    "invoked"
                );
                Ok(Invocation {
                    outcome,
                    executed_version: spec.version.clone(),
                    duration,
                })
            }
            Err(SandboxError::Throttled { .. }) => {
                self.metrics.record(record(false, true));
                Err(InvokeError::Throttled(format!(
                    "{}:{} has no free execution environment",
                    spec.function_name, spec.version
                )))
            }
            Err(SandboxError::Code(e)) => Err(InvokeError::Service(format!(
                "cannot run {}:{}: {e}",
                spec.function_name, spec.version
            ))),
        }
    }
}

impl Invoker {
    /// An asynchronous invocation as Lambda runs it
    /// (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html>):
    /// a function error is retried, by default twice, a minute and then two
    /// minutes later (scaled); a throttle or an error of Lambda's own is
    /// retried from a second later, doubling to five minutes, without
    /// counting; an event older than its maximum age (scaled) is not tried
    /// again. An event that still fails
    /// goes to the function's dead-letter queue, with Lambda's `RequestID`,
    /// `ErrorCode` and `ErrorMessage` attributes, and to its on-failure
    /// destination as an invocation record; a success's record goes to the
    /// on-success destination. The configuration is the invoked qualifier's
    /// (`$LATEST` for an unqualified call).
    pub async fn invoke_async(
        &self,
        target: &Target,
        payload: Bytes,
        client_context: Option<String>,
    ) {
        let qualifier = target.qualifier.as_deref().unwrap_or("$LATEST");
        let config = self.async_config(&target.function_name, qualifier);
        let max_age = config.max_age().mul_f64(self.schedule_scale);
        let request_id = uuid::Uuid::new_v4().to_string();
        let function_arn = format!("{}:{qualifier}", self.function_arn(&target.function_name));
        let queued = Instant::now();
        let mut delay = self.async_retry_delay;
        // Throttles and Lambda's own errors: from a second, doubling, to five
        // minutes (scaled), until the event is too old; not counted as retries.
        let mut backoff = Duration::from_secs(1).mul_f64(self.schedule_scale);
        let most_backoff = Duration::from_secs(300).mul_f64(self.schedule_scale);
        let mut error = String::new();
        let mut last: Option<AsyncResponse> = None;
        let mut attempts = 0;
        let mut failures = 0;
        let condition = loop {
            if queued.elapsed() > max_age {
                break Condition::EventAgeExceeded;
            }
            attempts += 1;
            let pause = match self
                .invoke(target, payload.clone(), client_context.clone())
                .await
            {
                Ok(inv) => {
                    let response = AsyncResponse {
                        status_code: 200,
                        executed_version: Some(inv.executed_version.clone()),
                        function_error: inv.outcome.is_error().then(|| "Unhandled".to_owned()),
                        payload: inv.outcome.payload().to_vec(),
                    };
                    if !inv.outcome.is_error() {
                        let record = invocation_record(
                            &request_id,
                            &function_arn,
                            Condition::Success,
                            attempts,
                            &payload,
                            Some(&response),
                        );
                        if let Some(destination) = &config.on_success {
                            self.send_record(target, destination, record).await;
                        }
                        return;
                    }
                    error = String::from_utf8_lossy(&response.payload).into_owned();
                    last = Some(response);
                    None
                }
                Err(e) => {
                    error = e.to_string();
                    last = Some(AsyncResponse {
                        status_code: e.status_code(),
                        executed_version: None,
                        function_error: None,
                        payload: serde_json::to_vec(&serde_json::json!({"errorMessage": error}))
                            .expect("JSON"),
                    });
                    matches!(
                        e,
                        InvokeError::Throttled(_)
                            | InvokeError::Service(_)
                            | InvokeError::Conflict(_)
                    )
                    .then_some(backoff)
                }
            };
            tracing::warn!(function = %target.function_name, attempts, %error, "asynchronous invocation failed");
            match pause {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(most_backoff);
                }
                None => {
                    failures += 1;
                    if failures > config.retries() {
                        break Condition::RetriesExhausted;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        };
        if condition == Condition::EventAgeExceeded {
            tracing::warn!(function = %target.function_name, attempts, "asynchronous invocation discarded: older than its maximum age");
        }
        let dead_letter = self
            .dead_letters
            .lock()
            .expect("dead letters lock")
            .get(&target.function_name)
            .cloned();
        if let Some(queue_arn) = &dead_letter
            && let Err(e) = self.send_dead_letter(queue_arn, &payload, &error).await
        {
            tracing::error!(function = %target.function_name, queue = %queue_arn, error = %e, "could not send to the dead-letter queue");
        }
        match &config.on_failure {
            Some(destination) => {
                let record = invocation_record(
                    &request_id,
                    &function_arn,
                    condition,
                    attempts,
                    &payload,
                    last.as_ref(),
                );
                self.send_record(target, destination, record).await;
            }
            None if dead_letter.is_none() => {
                tracing::error!(function = %target.function_name, "asynchronous invocation dropped after its retries");
            }
            None => {}
        }
    }

    /// Sends an invocation record to a destination: a queue's message, or an
    /// asynchronous invocation of a function.
    async fn send_record(&self, source: &Target, destination: &Destination, record: Value) {
        let body = record.to_string();
        let sent = match destination {
            Destination::Sqs(queue_arn) => send_to_queue(&self.sqs, queue_arn, body).await,
            Destination::Lambda(function_arn) => match Target::parse(function_arn, None) {
                Ok(target) => {
                    self.invoke_destination(target, Bytes::from(body)).await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = sent {
            tracing::error!(function = %source.function_name, destination = %destination.arn(), error = %e, "could not send an invocation record");
        }
    }

    /// A destination function's asynchronous invocation, behind a named
    /// future type: its own failures go to its own destinations, and the
    /// recursion needs a type the compiler can see is `Send`.
    fn invoke_destination(
        &self,
        target: Target,
        record: Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.invoke_async(&target, record, None).await })
    }

    /// The asynchronous configuration of a function's qualifier (Lambda's
    /// defaults when none is kept).
    pub fn async_config(&self, function: &str, qualifier: &str) -> AsyncConfig {
        self.async_configs
            .lock()
            .expect("async configs lock")
            .get(&(function.to_owned(), qualifier.to_owned()))
            .map(|(config, _)| config.clone())
            .unwrap_or_default()
    }

    /// The kept configuration and when it was last changed (epoch seconds).
    pub fn kept_async_config(&self, function: &str, qualifier: &str) -> Option<(AsyncConfig, f64)> {
        self.async_configs
            .lock()
            .expect("async configs lock")
            .get(&(function.to_owned(), qualifier.to_owned()))
            .cloned()
    }

    /// Every qualifier of a function with a kept configuration.
    pub fn async_configs_of(&self, function: &str) -> Vec<(String, AsyncConfig, f64)> {
        let configs = self.async_configs.lock().expect("async configs lock");
        let mut found: Vec<_> = configs
            .iter()
            .filter(|((f, _), _)| f == function)
            .map(|((_, q), (config, at))| (q.clone(), config.clone(), *at))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Keeps (or, with `None`, forgets) a qualifier's configuration.
    pub fn set_async_config(&self, function: &str, qualifier: &str, config: Option<AsyncConfig>) {
        let mut configs = self.async_configs.lock().expect("async configs lock");
        let key = (function.to_owned(), qualifier.to_owned());
        match config {
            Some(config) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                configs.insert(key, (config, now));
            }
            None => {
                configs.remove(&key);
            }
        }
    }

    /// Forgets a function's configurations (deleted), or every one (moto reset).
    pub fn forget_async_configs(&self, function: Option<&str>) {
        let mut configs = self.async_configs.lock().expect("async configs lock");
        configs.retain(|(f, _), _| function.is_some_and(|name| name != f));
    }

    async fn send_dead_letter(
        &self,
        queue_arn: &str,
        payload: &Bytes,
        error: &str,
    ) -> Result<(), String> {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let url = queue_url(&self.sqs, queue_arn).await?;
        let attribute = |kind: &str, value: &str| {
            MessageAttributeValue::builder()
                .data_type(kind)
                .string_value(value)
                .build()
                .map_err(|e| e.to_string())
        };
        let message: String = error.chars().take(1024).collect();
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(String::from_utf8_lossy(payload))
            .message_attributes(
                "RequestID",
                attribute("String", &uuid::Uuid::new_v4().to_string())?,
            )
            .message_attributes("ErrorCode", attribute("Number", "200")?)
            .message_attributes("ErrorMessage", attribute("String", &message)?)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

/// What `$LATEST` ran before an update, and the update request still with
/// moto, if one is.
type KeptForUpdate = (Arc<FunctionSpec>, Option<u64>);

/// An update request's part in what `$LATEST` runs (`Invoker::begin_update`).
pub struct UpdateGuard<'a> {
    invoker: &'a Invoker,
    function: String,
    request: u64,
    accepted: bool,
}

impl UpdateGuard<'_> {
    /// Lambda accepted the update: its window now decides.
    pub fn accepted(mut self) {
        self.accepted = true;
    }
}

impl Drop for UpdateGuard<'_> {
    fn drop(&mut self) {
        self.invoker
            .settle_update(&self.function, self.request, self.accepted);
    }
}

/// Sends `body` to the SQS queue `queue_arn`, as Lambda sends its records.
pub async fn send_to_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_arn: &str,
    body: String,
) -> Result<(), String> {
    let url = queue_url(sqs, queue_arn).await?;
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// An SQS queue's URL from its ARN (`arn:aws:sqs:region:account:name`).
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, queue_arn: &str) -> Result<String, String> {
    let name = queue_arn.rsplit(':').next().unwrap_or(queue_arn);
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?
        .queue_url
        .ok_or_else(|| format!("no URL for {queue_arn}"))
}

/// Lambda's routing rule: each additional version takes its weight of the
/// traffic, the alias's own version the rest. `draw` is uniform in [0, 1).
fn pick_version(route: &AliasRoute, draw: f64) -> String {
    let mut threshold = 0.0;
    for (version, weight) in &route.weights {
        threshold += weight;
        if draw < threshold {
            return version.clone();
        }
    }
    route.version.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_lambda() {
        let t = Target::parse(
            "arn:aws:lambda:us-east-1:123456789012:function:f:live",
            None,
        )
        .unwrap();
        assert_eq!(
            (t.function_name.as_str(), t.qualifier.as_deref()),
            ("f", Some("live"))
        );
        let t = Target::parse("123456789012:function:f", Some("3")).unwrap();
        assert_eq!(
            (t.function_name.as_str(), t.qualifier.as_deref()),
            ("f", Some("3"))
        );
        assert_eq!(Target::parse("f", None).unwrap().qualifier, None);
        assert!(Target::parse("f:1", Some("2")).is_err());
        assert!(Target::parse("bad name", None).is_err());
        assert!(Target::parse("a:b:c:d:e", None).is_err());
    }

    #[test]
    fn weighted_alias_splits_by_weight() {
        let route = AliasRoute {
            version: "1".into(),
            weights: vec![("2".into(), 0.3)],
        };
        assert_eq!(pick_version(&route, 0.0), "2");
        assert_eq!(pick_version(&route, 0.2999), "2");
        assert_eq!(pick_version(&route, 0.3), "1");
        assert_eq!(pick_version(&route, 0.9999), "1");
    }
}
