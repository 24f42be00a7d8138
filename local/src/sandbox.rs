//! Execution environments: a function version's `bootstrap` process, each with
//! its own implementation of the Lambda Runtime API, kept warm between calls.
//!
//! One listener per process (as each Lambda sandbox has its own endpoint) means
//! the server always knows which process is asking, so a crash or a timeout is
//! pinned on exactly the invocation it hit.

use crate::code::CodeStore;
use crate::iam;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// Lambda's limit on a synchronous request or response payload.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// How long a runtime may take to reach its first `next`, as Lambda allows.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that decides how a version runs; two specs with the same
/// fingerprint share warm processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionSpec {
    pub function_name: String,
    pub function_arn: String,
    pub version: String,
    pub code_sha: String,
    pub timeout: Duration,
    pub memory_mb: i32,
    pub handler: Option<String>,
    pub environment: BTreeMap<String, String>,
    /// The execution role, whose credentials the function runs with.
    pub role: String,
}

/// How an invocation ended, in the shape Lambda answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Bytes),
    /// `X-Amz-Function-Error: Unhandled`, with Lambda's error payload.
    FunctionError(Bytes),
}

impl Outcome {
    fn runtime_error(error_type: &str, message: String) -> Self {
        Outcome::FunctionError(Bytes::from(
            json!({"errorType": error_type, "errorMessage": message}).to_string(),
        ))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::FunctionError(_))
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            Outcome::Success(b) | Outcome::FunctionError(b) => b,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("function {function} version {version} is at its concurrency limit of {limit}")]
    Throttled {
        function: String,
        version: String,
        limit: usize,
    },
    #[error(transparent)]
    Code(#[from] crate::code::CodeError),
}

struct Delivery {
    request_id: String,
    payload: Bytes,
    timeout: Duration,
    invoked_arn: String,
    client_context: Option<String>,
    delivered: oneshot::Sender<()>,
    done: oneshot::Sender<Outcome>,
}

#[derive(Debug, Clone)]
struct ExitReport {
    status: String,
    init_error: Option<Bytes>,
}

/// State the runtime API handlers share with the process watcher.
struct RuntimeState {
    queue: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<Bytes>>,
    initialized: AtomicBool,
    kill: Mutex<Option<oneshot::Sender<()>>>,
}

impl RuntimeState {
    fn kill(&self) {
        if let Some(k) = self.kill.lock().expect("kill lock").take() {
            let _ = k.send(());
        }
    }
}

/// One warm process of one version.
pub struct Sandbox {
    state: Arc<RuntimeState>,
    queue: mpsc::Sender<Delivery>,
    exited: watch::Receiver<Option<ExitReport>>,
    server: tokio::task::JoinHandle<()>,
    pid: Option<u32>,
    last_used: Mutex<Instant>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.state.kill();
        self.server.abort();
    }
}

/// Settings every sandbox gets from sluice-local itself.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub region: String,
    /// Passed through to every function (credentials, `AWS_ENDPOINT_URL*`), so
    /// functions running locally talk to the local stack.
    pub inherited_env: Vec<(String, String)>,
}

impl Sandbox {
    async fn start(spec: &FunctionSpec, code_dir: PathBuf, settings: &SandboxSettings) -> Self {
        let (queue_tx, queue_rx) = mpsc::channel(1);
        let (kill_tx, kill_rx) = oneshot::channel();
        let state = Arc::new(RuntimeState {
            queue: tokio::sync::Mutex::new(queue_rx),
            in_flight: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            initialized: AtomicBool::new(false),
            kill: Mutex::new(Some(kill_tx)),
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a loopback port for the runtime API");
        let addr = listener.local_addr().expect("local addr");
        let app = runtime_api(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let mut command = tokio::process::Command::new(code_dir.join("bootstrap"));
        command
            .current_dir(&code_dir)
            .env_clear()
            .envs(process_env(spec, &code_dir, addr, settings))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it makes the kernel kill the
        // function if sluice-local dies, so no process outlives the stack.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut busy = 0;
        let spawned = loop {
            match command.spawn() {
                // ETXTBSY: a process another thread is forking still holds
                // the just-unpacked bootstrap open for writing until its own
                // exec closes it, a moment later: tried again.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy < 10 => {
                    busy += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * busy)).await;
                }
                spawned => break spawned,
            }
        };
        let pid = match spawned {
            Ok(mut child) => {
                let pid = child.id();
                let label = format!("{}:{}", spec.function_name, spec.version);
                for stream in [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    let label = label.clone();
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(stream).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            tracing::info!(target: "function", function = %label, "{line}");
                        }
                    });
                }
                let watcher_state = state.clone();
                tokio::spawn(async move {
                    let status = tokio::select! {
                        status = child.wait() => status,
                        _ = kill_rx => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    };
                    let status = match status {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("unknown ({e})"),
                    };
                    let init_error = watcher_state.init_error.lock().expect("init lock").clone();
                    report_exit(&watcher_state, &status, init_error.as_ref());
                    let _ = exit_tx.send(Some(ExitReport { status, init_error }));
                });
                pid
            }
            Err(e) => {
                let report = ExitReport {
                    status: format!("could not start bootstrap: {e}"),
                    init_error: Some(Bytes::from(
                        json!({
                            "errorType": "Runtime.InvalidEntrypoint",
                            "errorMessage": format!("RequestId: - Error: could not start bootstrap: {e}"),
                        })
                        .to_string(),
                    )),
                };
                let _ = exit_tx.send(Some(report));
                None
            }
        };
        Sandbox {
            state,
            queue: queue_tx,
            exited: exit_rx,
            server,
            pid,
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn is_alive(&self) -> bool {
        self.exited.borrow().is_none()
    }

    /// Runs one invocation; the caller holds this sandbox alone while it does.
    async fn run(
        &self,
        request_id: &str,
        payload: Bytes,
        invoked_arn: &str,
        client_context: Option<String>,
        timeout: Duration,
    ) -> Outcome {
        let (delivered_tx, delivered_rx) = oneshot::channel();
        let (done_tx, mut done_rx) = oneshot::channel();
        let delivery = Delivery {
            request_id: request_id.to_owned(),
            payload,
            timeout,
            invoked_arn: invoked_arn.to_owned(),
            client_context,
            delivered: delivered_tx,
            done: done_tx,
        };
        let mut exited = self.exited.clone();
        if self.queue.try_send(delivery).is_err() {
            return self.exit_outcome(request_id).await;
        }
        let init_budget = if self.state.initialized.load(Ordering::Acquire) {
            // A warm runtime is between two `next` calls: give it the function's timeout.
            timeout
        } else {
            INIT_TIMEOUT
        };
        tokio::select! {
            delivered = delivered_rx => {
                if delivered.is_err() {
                    return self.exit_outcome(request_id).await;
                }
            }
            _ = wait_exit(&mut exited) => {
                return self.exit_outcome(request_id).await;
            }
            _ = tokio::time::sleep(init_budget) => {
                self.state.kill();
                return Outcome::runtime_error(
                    "Runtime.InitTimeout",
                    format!("RequestId: {request_id} Error: the runtime did not ask for an event within {:.2} seconds", init_budget.as_secs_f64()),
                );
            }
        }
        tokio::select! {
            outcome = &mut done_rx => match outcome {
                Ok(outcome) => outcome,
                Err(_) => self.exit_outcome(request_id).await,
            },
            _ = wait_exit(&mut exited) => match done_rx.try_recv() {
                Ok(outcome) => outcome,
                Err(_) => self.exit_outcome(request_id).await,
            },
            _ = tokio::time::sleep(timeout) => {
                self.state.kill();
                Outcome::runtime_error(
                    "Sandbox.Timedout",
                    format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                )
            }
        }
    }

    async fn exit_outcome(&self, request_id: &str) -> Outcome {
        let mut exited = self.exited.clone();
        let report = match exited.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            Err(_) => None,
        };
        match report {
            Some(ExitReport {
                init_error: Some(payload),
                ..
            }) => Outcome::FunctionError(payload),
            Some(ExitReport { status, .. }) => Outcome::runtime_error(
                "Runtime.ExitError",
                format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
            ),
            None => Outcome::runtime_error(
                "Runtime.ExitError",
                format!("RequestId: {request_id} Error: Runtime exited"),
            ),
        }
    }
}

async fn wait_exit(exited: &mut watch::Receiver<Option<ExitReport>>) {
    // The guard `wait_for` returns is not Send: drop it before anything else awaits.
    let _ = exited.wait_for(Option::is_some).await.map(|_| ());
}

/// Fails whatever the process held when it went away.
fn report_exit(state: &RuntimeState, status: &str, init_error: Option<&Bytes>) {
    let pending: Vec<_> = state
        .in_flight
        .lock()
        .expect("in-flight lock")
        .drain()
        .collect();
    for (request_id, done) in pending {
        let outcome = match init_error {
            Some(payload) => Outcome::FunctionError(payload.clone()),
            None => Outcome::runtime_error(
                "Runtime.ExitError",
                format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
            ),
        };
        let _ = done.send(outcome);
    }
}

fn process_env(
    spec: &FunctionSpec,
    code_dir: &std::path::Path,
    runtime_api: SocketAddr,
    settings: &SandboxSettings,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    env.insert("LANG".into(), "en_US.UTF-8".into());
    env.insert("TZ".into(), ":UTC".into());
    for (k, v) in &settings.inherited_env {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &spec.environment {
        env.insert(k.clone(), v.clone());
    }
    // Reserved variables last: a function's own environment cannot override them.
    let task_root = code_dir.display().to_string();
    let reserved = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.function_name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", spec.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.function_name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("local/[{}]{}", spec.version, uuid::Uuid::new_v4().simple()),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", settings.region.clone()),
        ("AWS_DEFAULT_REGION", settings.region.clone()),
        // The execution role's credentials, as Lambda gives them.
        ("AWS_ACCESS_KEY_ID", iam::ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", iam::SECRET_ACCESS_KEY.into()),
        (
            "AWS_SESSION_TOKEN",
            iam::Caller {
                function: spec.function_name.clone(),
                role_arn: spec.role.clone(),
            }
            .session_token(),
        ),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        (
            "_HANDLER",
            spec.handler.clone().unwrap_or_else(|| "bootstrap".into()),
        ),
    ];
    for (k, v) in reserved {
        env.insert(k.into(), v);
    }
    env.into_iter().collect()
}

fn runtime_api(state: Arc<RuntimeState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        // Lambda takes responses up to 6 MB and refuses more; read one byte past
        // that so an oversized response is seen and reported, not cut.
        .layer(DefaultBodyLimit::max(MAX_SYNC_PAYLOAD + 1))
        .with_state(state)
}

fn runtime_status(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"errorType": error_type, "errorMessage": message}).to_string(),
    )
        .into_response()
}

async fn next(State(state): State<Arc<RuntimeState>>) -> Response {
    state.initialized.store(true, Ordering::Release);
    let delivery = state.queue.lock().await.recv().await;
    let Some(d) = delivery else {
        return runtime_status(
            StatusCode::GONE,
            "Runtime.Shutdown",
            "the sandbox is shutting down",
        );
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + d.timeout;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &d.request_id);
    put(
        "lambda-runtime-deadline-ms",
        &deadline.as_millis().to_string(),
    );
    put("lambda-runtime-invoked-function-arn", &d.invoked_arn);
    put("lambda-runtime-trace-id", &trace_id());
    if let Some(cc) = &d.client_context {
        put("lambda-runtime-client-context", cc);
    }
    put("content-type", "application/json");
    state
        .in_flight
        .lock()
        .expect("in-flight lock")
        .insert(d.request_id.clone(), d.done);
    let _ = d.delivered.send(());
    (StatusCode::OK, headers, d.payload).into_response()
}

fn trace_id() -> String {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{epoch:08x}-{};Sampled=0", &id[..24])
}

fn finish(state: &RuntimeState, id: &str, outcome: Outcome) -> Response {
    match state.in_flight.lock().expect("in-flight lock").remove(id) {
        Some(done) => {
            let _ = done.send(outcome);
            (
                StatusCode::ACCEPTED,
                [("content-type", "application/json")],
                r#"{"status":"OK"}"#,
            )
                .into_response()
        }
        None => runtime_status(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("no invocation {id} is in flight"),
        ),
    }
}

async fn response(
    State(state): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_SYNC_PAYLOAD {
        let message = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_SYNC_PAYLOAD} bytes).",
            body.len()
        );
        finish(
            &state,
            &id,
            Outcome::runtime_error("Function.ResponseSizeTooLarge", message.clone()),
        );
        return runtime_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        );
    }
    finish(&state, &id, Outcome::Success(body))
}

async fn error(
    State(state): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish(
        &state,
        &id,
        Outcome::FunctionError(error_payload(&headers, &body)),
    )
}

async fn init_error(
    State(state): State<Arc<RuntimeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *state.init_error.lock().expect("init lock") = Some(error_payload(&headers, &body));
    // Lambda ends an environment whose init failed; the waiting call gets the error.
    state.kill();
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

/// The runtime's error body as Lambda returns it: its JSON when it is JSON,
/// otherwise wrapped, with the type from `Lambda-Runtime-Function-Error-Type`.
fn error_payload(headers: &HeaderMap, body: &Bytes) -> Bytes {
    if serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()) {
        return body.clone();
    }
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled");
    Bytes::from(
        json!({"errorType": error_type, "errorMessage": String::from_utf8_lossy(body)}).to_string(),
    )
}

/// Warm sandboxes by version, started on demand and reaped when idle.
pub struct Pool {
    code: Arc<CodeStore>,
    settings: SandboxSettings,
    max_per_version: usize,
    versions: Mutex<HashMap<FunctionSpec, VersionPool>>,
}

#[derive(Default)]
struct VersionPool {
    idle: Vec<Arc<Sandbox>>,
    live: usize,
}

impl Pool {
    /// How many execution environments one version may run at once.
    pub fn max_per_version(&self) -> usize {
        self.max_per_version
    }

    pub fn new(code: Arc<CodeStore>, settings: SandboxSettings, max_per_version: usize) -> Self {
        Pool {
            code,
            settings,
            max_per_version,
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one invocation on a warm sandbox of `spec`, starting one if none is free.
    pub async fn invoke(
        &self,
        spec: &FunctionSpec,
        request_id: &str,
        payload: Bytes,
        invoked_arn: &str,
        client_context: Option<String>,
    ) -> Result<Outcome, SandboxError> {
        let sandbox = match self.take_idle(spec)? {
            Some(s) => s,
            None => {
                let started = async {
                    let dir = self.code.unpacked(&spec.code_sha).await?;
                    Ok::<_, SandboxError>(Arc::new(Sandbox::start(spec, dir, &self.settings).await))
                }
                .await;
                match started {
                    Ok(s) => s,
                    Err(e) => {
                        self.release(spec, None);
                        return Err(e);
                    }
                }
            }
        };
        let outcome = sandbox
            .run(
                request_id,
                payload,
                invoked_arn,
                client_context,
                spec.timeout,
            )
            .await;
        *sandbox.last_used.lock().expect("last-used lock") = Instant::now();
        self.release(spec, Some(sandbox));
        Ok(outcome)
    }

    /// An idle live sandbox, or `None` with a slot reserved for a new one.
    fn take_idle(&self, spec: &FunctionSpec) -> Result<Option<Arc<Sandbox>>, SandboxError> {
        let mut versions = self.versions.lock().expect("pool lock");
        let pool = versions.entry(spec.clone()).or_default();
        while let Some(s) = pool.idle.pop() {
            if s.is_alive() {
                return Ok(Some(s));
            }
            pool.live = pool.live.saturating_sub(1);
        }
        if pool.live >= self.max_per_version {
            return Err(SandboxError::Throttled {
                function: spec.function_name.clone(),
                version: spec.version.clone(),
                limit: self.max_per_version,
            });
        }
        pool.live += 1;
        Ok(None)
    }

    fn release(&self, spec: &FunctionSpec, sandbox: Option<Arc<Sandbox>>) {
        let mut versions = self.versions.lock().expect("pool lock");
        let pool = versions.entry(spec.clone()).or_default();
        match sandbox {
            Some(s) if s.is_alive() => pool.idle.push(s),
            _ => pool.live = pool.live.saturating_sub(1),
        }
    }

    /// Stops sandboxes idle for longer than `max_idle`; returns how many.
    pub fn reap_idle(&self, max_idle: Duration) -> usize {
        let mut versions = self.versions.lock().expect("pool lock");
        let mut reaped = 0;
        for pool in versions.values_mut() {
            let before = pool.idle.len();
            pool.idle.retain(|s| {
                s.is_alive() && s.last_used.lock().expect("last-used lock").elapsed() < max_idle
            });
            let gone = before - pool.idle.len();
            pool.live = pool.live.saturating_sub(gone);
            reaped += gone;
        }
        versions.retain(|_, p| p.live > 0);
        reaped
    }

    /// Process ids of the sandboxes that are alive now.
    pub fn pids(&self) -> Vec<u32> {
        let versions = self.versions.lock().expect("pool lock");
        versions
            .values()
            .flat_map(|p| p.idle.iter())
            .filter(|s| s.is_alive())
            .filter_map(|s| s.pid())
            .collect()
    }

    /// Stops every sandbox.
    pub fn shutdown(&self) {
        self.versions.lock().expect("pool lock").clear();
    }
}
