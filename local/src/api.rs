//! The Lambda API as sluice-local serves it: `Invoke` runs here, every other
//! call is forwarded to moto unchanged, after capturing the code that passes
//! through and checking the preconditions moto skips.

use crate::async_config::AsyncConfig;
use crate::code::CodeStore;
use crate::control_plane::{Api, Quota, Transition, apply_status, operation};
use crate::iam::{Authorizer, Caller, signing_service};
use crate::invoke::{InvokeError, Invoker, Target};
use crate::sandbox::MAX_SYNC_PAYLOAD;
use aws_sdk_lambda::Client as LambdaClient;
use aws_sdk_s3::Client as S3Client;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Lambda's limit on an asynchronous (`Event`) invocation's payload.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// Code packages arrive base64-encoded inline (50 MB zipped at most).
const MAX_REQUEST: usize = 80 * 1024 * 1024;

pub struct ApiState {
    pub invoker: Arc<Invoker>,
    pub code: Arc<CodeStore>,
    pub http: reqwest::Client,
    pub moto_endpoint: String,
    pub moto_lambda: LambdaClient,
    pub s3: S3Client,
    /// Each alias's revision: moto keeps one per alias for life and ignores
    /// `RevisionId` on UpdateAlias, so sluice-local gives every update a new
    /// one and refuses a stale one, as Lambda does.
    pub alias_revisions: AliasRevisions,
    /// A fault tests inject through `POST /_sluice/throttle?requests=N`
    /// (`GET` says how many are left).
    pub throttle: std::sync::Mutex<Throttle>,
    /// Lambda's account-wide request quotas (`control_plane`).
    pub quota: Quota,
    /// What the functions' execution roles allow (`iam`).
    pub authorizer: Authorizer,
}

/// The revision sluice-local gave each alias, kept in a file too: Lambda's
/// revisions outlive any one server, so a restarted sluice-local must answer
/// with the revisions the running one gave.
pub struct AliasRevisions {
    pub map: tokio::sync::Mutex<HashMap<(String, String), String>>,
    file: PathBuf,
}

impl AliasRevisions {
    /// The revisions kept in `file`, if it holds any.
    pub fn open(file: PathBuf) -> anyhow::Result<Self> {
        let kept: Vec<(String, String, String)> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", file.display())),
        };
        let map = kept
            .into_iter()
            .map(|(function, alias, revision)| ((function, alias), revision))
            .collect();
        Ok(AliasRevisions {
            map: tokio::sync::Mutex::new(map),
            file,
        })
    }

    /// Writes `map` (held under `self.map`'s lock) to the file, whole.
    fn save(&self, map: &HashMap<(String, String), String>) {
        let kept: Vec<(&String, &String, &String)> =
            map.iter().map(|((f, a), r)| (f, a, r)).collect();
        let partial = self.file.with_extension("partial");
        let written = std::fs::write(&partial, serde_json::to_vec(&kept).expect("JSON"))
            .and_then(|()| std::fs::rename(&partial, &self.file));
        if let Err(e) = written {
            tracing::error!(error = %e, file = %self.file.display(), "cannot keep alias revisions");
        }
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(state)
}

/// A Lambda service error in the shape the SDKs parse.
pub fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", error_type),
            ("content-type", "application/json"),
        ],
        json!({"Type": "User", "message": message}).to_string(),
    )
        .into_response()
}

impl IntoResponse for InvokeError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code()).expect("an HTTP status");
        lambda_error(status, self.error_type(), &self.to_string())
    }
}

/// How many of the next Lambda API requests to answer with 429
/// `TooManyRequestsException`, of one operation only if `operation` is set
/// (`&operation=UpdateAlias`: a fault on one kind of call while the others
/// go through).
#[derive(Debug, Default)]
pub struct Throttle {
    left: u32,
    operation: Option<&'static str>,
}

impl Throttle {
    /// Whether a request of `operation` is refused (and counted if so).
    fn refuses(&mut self, operation: &str) -> bool {
        if self.operation.is_some_and(|only| only != operation) || self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    fn answer(&self) -> Response {
        let body = json!({ "throttle": self.left, "operation": self.operation });
        (StatusCode::OK, body.to_string()).into_response()
    }
}

/// Sets how many of the next requests are throttled, and of which operation.
fn throttle(state: &ApiState, uri: &Uri) -> Response {
    // An operation named must be one `control_plane::operation` knows.
    let operation = match query_param(uri, "operation") {
        None => Ok(None),
        Some(asked) => crate::control_plane::OPERATIONS
            .iter()
            .find(|known| **known == asked)
            .map(|known| Some(*known))
            .ok_or(()),
    };
    match (
        query_param(uri, "requests").map(|n| n.parse::<u32>()),
        operation,
    ) {
        (Some(Ok(left)), Ok(operation)) => {
            let mut throttle = state.throttle.lock().expect("the throttle's lock");
            *throttle = Throttle { left, operation };
            throttle.answer()
        }
        _ => lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "expected ?requests=<count>[&operation=<a Lambda API operation, as UpdateAlias>]",
        ),
    }
}

/// The path's segments, percent-decoded (function ARNs arrive as `arn%3Aaws%3A...`).
fn segments(uri: &Uri) -> Vec<String> {
    uri.path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn dispatch(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segs = segments(&uri);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::POST, ["_sluice", "throttle"]) => return throttle(&state, &uri),
        (&Method::GET, ["_sluice", "throttle"]) => {
            return state.throttle.lock().expect("the throttle's lock").answer();
        }
        (&Method::POST, ["_sluice", "quota"]) => {
            let asked: Vec<_> = [
                ("control_plane", Api::ControlPlane),
                ("get_function", Api::GetFunction),
            ]
            .into_iter()
            .filter_map(|(name, api)| Some((api, query_param(&uri, name)?.parse::<f64>())))
            .collect();
            let valid = |r: &Result<f64, _>| r.as_ref().is_ok_and(|r| r.is_finite() && *r >= 1.0);
            if asked.is_empty() || !asked.iter().all(|(_, r)| valid(r)) {
                return lambda_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    "expected ?control_plane=<rate> and/or ?get_function=<rate>: requests per second, 1 or more",
                );
            }
            for (api, rate) in asked {
                state.quota.set_rate(api, rate.expect("checked"));
            }
            return (
                StatusCode::OK,
                json!({ "rates": state.quota.rates() }).to_string(),
            )
                .into_response();
        }
        (&Method::GET, ["_sluice", "quota"]) => {
            let report = json!({ "rates": state.quota.rates(), "requests": state.quota.report() });
            return (StatusCode::OK, report.to_string()).into_response();
        }
        _ => {}
    }
    // A function's calls to any service come here: they are checked against
    // its role, and those for other services than Lambda go on to moto.
    let service = signing_service(&headers);
    if let Some(caller) = Caller::of(&headers) {
        let service = service.as_deref().unwrap_or("lambda");
        if let Err(refused) = state
            .authorizer
            .check(&caller, service, &method, &uri, &headers, &body)
            .await
        {
            return refused;
        }
    }
    if service.as_deref().is_some_and(|s| s != "lambda") {
        return forward(&state, method, &uri, &headers, body).await;
    }
    if let Err(wait) = state
        .quota
        .admit(Api::of(&method, &segs), operation(&method, &segs))
    {
        return over_quota(wait);
    }
    let throttled = state
        .throttle
        .lock()
        .expect("the throttle's lock")
        .refuses(operation(&method, &segs));
    if throttled {
        return lambda_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate exceeded (throttled by sluice-local's fault injection)",
        );
    }
    match (&method, segs.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions", function, "invocations"]) => {
            invoke(
                &state,
                function,
                query_param(&uri, "Qualifier"),
                &headers,
                body,
            )
            .await
        }
        (&Method::POST, ["2015-03-31", "functions"]) => {
            if let Err(resp) = capture_code(&state, &body, "/Code").await {
                return resp;
            }
            let dead_letter = dead_letter_of(&body);
            let resp = forward(&state, method, &uri, &headers, body).await;
            let resp = with_transition(&state, None, Transition::Create, resp, 0).await;
            if resp.status().is_success()
                && let Some((function, arn)) = dead_letter
            {
                state.invoker.set_dead_letter(&function, arn);
            }
            resp
        }
        (&Method::PUT, ["2015-03-31", "functions", function, "code"]) => {
            let function = short_name(function);
            let arn = state.invoker.function_arn(&function);
            // Held until the update is answered: another change meanwhile is refused.
            let _claim = match state.invoker.states().claim_update(&function, &arn) {
                Ok(claim) => claim,
                Err(why) => return resource_conflict(&why),
            };
            if let Err(resp) = capture_code(&state, &body, "").await {
                return resp;
            }
            let before = last_version(&state, &function).await;
            let running = state.invoker.latest(&function).await;
            let update = state.invoker.begin_update(&function, running);
            let resp = forward(&state, method, &uri, &headers, body).await;
            state.invoker.invalidate(&function);
            let resp =
                with_transition(&state, Some(&function), Transition::Update, resp, before).await;
            if resp.status().is_success() {
                update.accepted();
            }
            resp
        }
        (&Method::PUT, ["2015-03-31", "functions", function, "configuration"]) => {
            let function = short_name(function);
            let arn = state.invoker.function_arn(&function);
            // Held until the update is answered: another change meanwhile is refused.
            let _claim = match state.invoker.states().claim_update(&function, &arn) {
                Ok(claim) => claim,
                Err(why) => return resource_conflict(&why),
            };
            let dead_letter = dead_letter_of(&body);
            let running = state.invoker.latest(&function).await;
            let update = state.invoker.begin_update(&function, running);
            let resp = forward(&state, method, &uri, &headers, body).await;
            if resp.status().is_success()
                && let Some((_, arn)) = dead_letter
            {
                state.invoker.set_dead_letter(&function, arn);
            }
            state.invoker.invalidate(&function);
            let resp =
                with_transition(&state, Some(&function), Transition::Update, resp, u64::MAX).await;
            if resp.status().is_success() {
                update.accepted();
            }
            resp
        }
        (&Method::POST, ["2015-03-31", "functions", function, "versions"]) => {
            let function = short_name(function);
            if let Some(conflict) = update_conflict(&state, &function) {
                return conflict;
            }
            if let Err(resp) = check_code_sha(&state, &function, &body).await {
                return resp;
            }
            let before = last_version(&state, &function).await;
            let resp = forward(&state, method, &uri, &headers, body).await;
            state.invoker.invalidate(&function);
            with_transition(&state, Some(&function), Transition::Publish, resp, before).await
        }
        (&Method::GET, ["2015-03-31", "functions", function]) => {
            let function = short_name(function);
            let resp = forward(&state, method, &uri, &headers, body).await;
            with_states(&state, &function, resp, "/Configuration").await
        }
        (&Method::GET, ["2015-03-31", "functions", function, "configuration"]) => {
            let function = short_name(function);
            let resp = forward(&state, method, &uri, &headers, body).await;
            with_states(&state, &function, resp, "").await
        }
        (&Method::DELETE, ["2015-03-31", "functions", function])
            if query_param(&uri, "Qualifier").is_none() =>
        {
            let function = short_name(function);
            let resp = forward(&state, method, &uri, &headers, body).await;
            if resp.status().is_success() {
                state.invoker.states().forget(&function);
                state.invoker.set_dead_letter(&function, None);
                state.invoker.forget_async_configs(Some(&function));
            }
            state.invoker.invalidate(&function);
            resp
        }
        (
            _,
            [
                "2019-09-25",
                "functions",
                function,
                "event-invoke-config",
                rest @ ..,
            ],
        ) => event_invoke_config(&state, &method, function, rest, &uri, &body).await,
        (&Method::PUT, ["2015-03-31", "functions", function, "aliases", alias]) => {
            update_alias(&state, function, alias, &method, &uri, &headers, body).await
        }
        (&Method::GET, ["2015-03-31", "functions", function, "aliases", ..])
        | (&Method::POST, ["2015-03-31", "functions", function, "aliases"]) => {
            let function = short_name(function);
            let created = method == Method::POST;
            let resp = forward(&state, method, &uri, &headers, body).await;
            with_revisions(&state, &function, resp, created).await
        }
        (&Method::DELETE, ["2015-03-31", "functions", function, "aliases", alias]) => {
            let key = (short_name(function), alias.to_string());
            let resp = forward(&state, method, &uri, &headers, body).await;
            if resp.status().is_success() {
                let mut revisions = state.alias_revisions.map.lock().await;
                revisions.remove(&key);
                state.alias_revisions.save(&revisions);
            }
            state.invoker.invalidate(&key.0);
            resp
        }
        (&Method::POST, ["moto-api", "reset"]) => {
            {
                let mut revisions = state.alias_revisions.map.lock().await;
                revisions.clear();
                state.alias_revisions.save(&revisions);
            }
            state.invoker.states().clear();
            state.quota.reset();
            state.authorizer.reset();
            state.invoker.clear_dead_letters();
            state.invoker.forget_async_configs(None);
            let resp = forward(&state, method, &uri, &headers, body).await;
            state.invoker.invalidate_all();
            state.invoker.pool().shutdown();
            resp
        }
        (m, _) if m == Method::GET || m == Method::HEAD => {
            forward(&state, method, &uri, &headers, body).await
        }
        (_, rest) => {
            let function = match rest {
                [_, "functions", function, ..] => Some(short_name(function)),
                _ => None,
            };
            let resp = forward(&state, method, &uri, &headers, body).await;
            match function {
                Some(f) => state.invoker.invalidate(&f),
                None => state.invoker.invalidate_all(),
            }
            resp
        }
    }
}

/// The event-invoke-config API, answered from sluice-local's own copy
/// (moto's keeps only the first configuration put). The function, and the
/// version or alias named, must exist, as in Lambda.
async fn event_invoke_config(
    state: &ApiState,
    method: &Method,
    function: &str,
    rest: &[&str],
    uri: &Uri,
    body: &Bytes,
) -> Response {
    let target = match Target::parse(function, query_param(uri, "Qualifier").as_deref()) {
        Ok(target) => target,
        Err(e) => return e.into_response(),
    };
    let name = target.function_name.as_str();
    let qualifier = target.qualifier.as_deref().unwrap_or("$LATEST");
    let mut exists = state.moto_lambda.get_function().function_name(name);
    if qualifier != "$LATEST" {
        exists = exists.qualifier(qualifier);
    }
    if let Err(e) = exists.send().await {
        return match e.as_service_error() {
            Some(se) if se.is_resource_not_found_exception() => lambda_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!(
                    "Function not found: {}:{qualifier}",
                    state.invoker.function_arn(name)
                ),
            ),
            _ => lambda_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                &format!("reading {name}: {e:?}"),
            ),
        };
    }
    let arn = format!("{}:{qualifier}", state.invoker.function_arn(name));
    let no_config = || {
        lambda_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("The function {arn} doesn't have an EventInvokeConfig"),
        )
    };
    let ok = |value: Value| (StatusCode::OK, value.to_string()).into_response();
    let invalid = |e: String| {
        lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &e,
        )
    };
    let kept = state.invoker.kept_async_config(name, qualifier);
    match (method, rest) {
        (&Method::GET, []) => match kept {
            Some((config, at)) => ok(config.to_api(&arn, at)),
            None => no_config(),
        },
        (&Method::GET, ["list"]) => {
            let configs: Vec<Value> = state
                .invoker
                .async_configs_of(name)
                .into_iter()
                .map(|(q, config, at)| {
                    config.to_api(&format!("{}:{q}", state.invoker.function_arn(name)), at)
                })
                .collect();
            ok(json!({ "FunctionEventInvokeConfigs": configs }))
        }
        (&Method::PUT | &Method::POST, []) => {
            let request: Value = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(e) => return invalid(format!("the request is not JSON: {e}")),
            };
            let config = match (method, kept) {
                (&Method::POST, None) => return no_config(),
                (&Method::POST, Some((kept, _))) => kept.merged(&request, false),
                _ => AsyncConfig::parse(&request, false),
            };
            match config {
                Ok(config) => {
                    state
                        .invoker
                        .set_async_config(name, qualifier, Some(config));
                    let (config, at) = state
                        .invoker
                        .kept_async_config(name, qualifier)
                        .expect("just kept");
                    ok(config.to_api(&arn, at))
                }
                Err(e) => invalid(e),
            }
        }
        (&Method::DELETE, []) => match kept {
            Some(_) => {
                state.invoker.set_async_config(name, qualifier, None);
                StatusCode::NO_CONTENT.into_response()
            }
            None => no_config(),
        },
        _ => lambda_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        ),
    }
}

/// The function name and `DeadLetterConfig.TargetArn` of a create or
/// configuration request that names one (an empty ARN clears it).
fn dead_letter_of(body: &Bytes) -> Option<(String, Option<String>)> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let config = request.get("DeadLetterConfig")?;
    let name = request["FunctionName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some((name, config["TargetArn"].as_str().map(str::to_owned)))
}

/// Lambda's answer to a request over the account's quota.
fn over_quota(wait: Duration) -> Response {
    let retry_after = wait.as_secs().max(1).to_string();
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [
            ("x-amzn-errortype", "TooManyRequestsException"),
            ("content-type", "application/json"),
        ],
        json!({
            "Type": "User",
            "message": "Rate exceeded",
            "Reason": "CallerRateLimitExceeded",
            "retryAfterSeconds": retry_after,
        })
        .to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert("retry-after", retry_after.parse().expect("header"));
    resp
}

/// Refuses a change to a function that is `Pending` or being updated, as
/// Lambda does (`control_plane` cites the page).
fn update_conflict(state: &ApiState, function: &str) -> Option<Response> {
    let arn = state.invoker.function_arn(function);
    let why = state.invoker.states().update_conflict(function, &arn)?;
    Some(resource_conflict(&why))
}

fn resource_conflict(why: &str) -> Response {
    lambda_error(StatusCode::CONFLICT, "ResourceConflictException", why)
}

/// The function's highest published version (0: none), read from moto
/// before a publish: a publish that changes nothing answers with that
/// version, which is `Active` already.
async fn last_version(state: &ApiState, function: &str) -> u64 {
    let mut pages = state
        .moto_lambda
        .list_versions_by_function()
        .function_name(function)
        .into_paginator()
        .send();
    let mut last = 0;
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => {
                let numbers = page
                    .versions()
                    .iter()
                    .filter_map(|v| v.version()?.parse().ok());
                last = numbers.fold(last, u64::max);
            }
            // Not found and the like: the forwarded call gives Lambda's answer.
            Err(_) => return u64::MAX,
        }
    }
    last
}

/// Starts the state window of a change moto accepted, and reports it in the
/// answer as Lambda does. `function` is `None` for `CreateFunction` (the
/// answer names it); a version in the answer above `published_before` is new.
async fn with_transition(
    state: &ApiState,
    function: Option<&str>,
    transition: Transition,
    resp: Response,
    published_before: u64,
) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, bytes) = match answer_bytes(resp).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    let Ok(config) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let name = function
        .map(str::to_owned)
        .or_else(|| config["FunctionName"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let version = config["Version"].as_str().unwrap_or("$LATEST");
    let states = state.invoker.states();
    match transition {
        Transition::Create => states.begin(&name, Transition::Create, None),
        Transition::Update => states.begin(&name, Transition::Update, None),
        Transition::Publish => {}
    }
    // `Publish: true` on a create or code update publishes a version as well.
    if version.parse::<u64>().is_ok_and(|v| v > published_before) {
        states.begin(&name, Transition::Publish, Some(version));
    }
    rewrite_status(state, &name, parts, config, "")
}

/// Reports the state fields of the configuration at `pointer` of an answer.
async fn with_states(state: &ApiState, function: &str, resp: Response, pointer: &str) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, bytes) = match answer_bytes(resp).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => rewrite_status(state, function, parts, value, pointer),
        Err(_) => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

fn rewrite_status(
    state: &ApiState,
    function: &str,
    mut parts: axum::http::response::Parts,
    mut value: Value,
    pointer: &str,
) -> Response {
    if let Some(config) = value.pointer_mut(pointer) {
        let version = config["Version"].as_str().unwrap_or("$LATEST").to_owned();
        apply_status(config, &state.invoker.states().status(function, &version));
    }
    parts.headers.remove("content-length");
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

async fn answer_bytes(resp: Response) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, MAX_REQUEST).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(_) => Err(lambda_error(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            "moto's answer was cut",
        )),
    }
}

fn short_name(function: &str) -> String {
    Target::parse(function, None)
        .map(|t| t.function_name)
        .unwrap_or_else(|_| function.to_owned())
}

async fn invoke(
    state: &Arc<ApiState>,
    function: &str,
    qualifier: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let target = match Target::parse(function, qualifier.as_deref()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let invocation_type = header("x-amz-invocation-type").unwrap_or("RequestResponse");
    let limit = match invocation_type {
        "RequestResponse" | "DryRun" => MAX_SYNC_PAYLOAD,
        "Event" => MAX_ASYNC_PAYLOAD,
        other => {
            return lambda_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("InvocationType {other:?} must be one of RequestResponse, Event, DryRun"),
            );
        }
    };
    if body.len() > limit {
        return lambda_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        );
    }
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return lambda_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                &format!("Could not parse request body into json: {e}"),
            );
        }
        body
    };
    let client_context = header("x-amz-client-context").map(|cc| {
        // The header carries base64 JSON; the runtime gets the JSON.
        BASE64
            .decode(cc)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| cc.to_owned())
    });
    // Resolving first makes a bad name or qualifier an error for every type.
    if let Err(e) = state.invoker.resolve(&target).await {
        return e.into_response();
    }
    match invocation_type {
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        "Event" => {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .invoker
                    .invoke_async(&target, payload, client_context)
                    .await
            });
            StatusCode::ACCEPTED.into_response()
        }
        _ => match state.invoker.invoke(&target, payload, client_context).await {
            Ok(inv) => {
                let mut resp = (
                    StatusCode::OK,
                    [
                        ("content-type", "application/json"),
                        ("x-amz-executed-version", inv.executed_version.as_str()),
                    ],
                    inv.outcome.payload().clone(),
                )
                    .into_response();
                if inv.outcome.is_error() {
                    resp.headers_mut()
                        .insert("x-amz-function-error", "Unhandled".parse().expect("header"));
                }
                resp
            }
            Err(e) => e.into_response(),
        },
    }
}

/// Keeps the zip of a `CreateFunction` (under `/Code`) or `UpdateFunctionCode`
/// (at the top level), inline or from S3, so its versions can run later.
async fn capture_code(state: &ApiState, body: &Bytes, pointer: &str) -> Result<(), Response> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Ok(()); // moto answers malformed requests with Lambda's own error
    };
    let Some(code) = request.pointer(pointer).filter(|c| c.is_object()) else {
        return Ok(());
    };
    let field = |name: &str| code.get(name).and_then(Value::as_str);
    let zip = if let Some(inline) = field("ZipFile") {
        BASE64.decode(inline).map_err(|_| {
            lambda_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "ZipFile is not valid base64",
            )
        })?
    } else if let (Some(bucket), Some(key)) = (field("S3Bucket"), field("S3Key")) {
        let object = state
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(field("S3ObjectVersion").map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                lambda_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    &format!("Error occurred while GetObject. S3 Error Message: {e:?}"),
                )
            })?;
        let bytes = object.body.collect().await.map_err(|e| {
            lambda_error(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                &format!("reading s3://{bucket}/{key}: {e}"),
            )
        })?;
        bytes.into_bytes().to_vec()
    } else {
        return Ok(()); // ImageUri and the like: moto decides
    };
    state.code.put(&zip).map(|_| ()).map_err(|e| {
        lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("Could not unzip uploaded file: {e}"),
        )
    })
}

/// `PublishVersion`'s `CodeSha256` precondition, which moto does not check.
async fn check_code_sha(state: &ApiState, function: &str, body: &Bytes) -> Result<(), Response> {
    let expected = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("CodeSha256")?.as_str().map(str::to_owned));
    let Some(expected) = expected else {
        return Ok(());
    };
    let latest = state
        .moto_lambda
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(se) if se.is_resource_not_found_exception() => lambda_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("Function not found: {function}"),
            ),
            _ => lambda_error(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                &format!("{e:?}"),
            ),
        })?;
    let current = latest.code_sha256().unwrap_or_default();
    if current != expected {
        return Err(lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!(
                "CodeSHA256 ({expected}) is different from current CodeSHA256 in $LATEST ({current}). Please try again with the CodeSHA256 in $LATEST."
            ),
        ));
    }
    Ok(())
}

/// UpdateAlias with Lambda's optimistic lock: a `RevisionId` that is not the
/// alias's latest is refused (412), and every update makes a new revision.
/// The lock is held across moto's update so no two updates interleave.
async fn update_alias(
    state: &ApiState,
    function: &str,
    alias: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let function = short_name(function);
    let key = (function.clone(), alias.to_owned());
    let expected = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("RevisionId")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let mut revisions = state.alias_revisions.map.lock().await;
    if let Some(expected) = expected {
        let current = match revisions.get(&key) {
            Some(r) => Some(r.clone()),
            None => state
                .moto_lambda
                .get_alias()
                .function_name(&function)
                .name(alias)
                .send()
                .await
                .ok()
                .and_then(|a| a.revision_id().map(str::to_owned)),
        };
        if current.is_some_and(|current| current != expected) {
            return lambda_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id. Call the GetAlias API to retrieve the latest Revision Id",
            );
        }
    }
    let resp = forward(state, method.clone(), uri, headers, body).await;
    state.invoker.invalidate(&function);
    if !resp.status().is_success() {
        return resp;
    }
    revisions.insert(key, uuid::Uuid::new_v4().to_string());
    state.alias_revisions.save(&revisions);
    rewrite_revisions(&mut revisions, &function, resp, false).await
}

/// Puts sluice-local's alias revisions into an answer moto gave (one alias,
/// or a list); `created` gives a new alias its first revision.
async fn with_revisions(
    state: &ApiState,
    function: &str,
    resp: Response,
    created: bool,
) -> Response {
    let mut revisions = state.alias_revisions.map.lock().await;
    let answer = rewrite_revisions(&mut revisions, function, resp, created).await;
    if created {
        state.alias_revisions.save(&revisions);
    }
    answer
}

async fn rewrite_revisions(
    revisions: &mut HashMap<(String, String), String>,
    function: &str,
    resp: Response,
    created: bool,
) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (mut parts, bytes) = match answer_bytes(resp).await {
        Ok(answer) => answer,
        Err(resp) => return resp,
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let key = |alias: &Value| {
        let name = alias.get("Name").and_then(Value::as_str)?;
        Some((function.to_owned(), name.to_owned()))
    };
    if created && let Some(key) = key(&value) {
        // A new alias of a name deleted before starts afresh.
        revisions.insert(key, uuid::Uuid::new_v4().to_string());
    }
    let mut rewrite = |alias: &mut Value| {
        if let Some(revision) = key(alias).and_then(|k| revisions.get(&k)) {
            alias["RevisionId"] = json!(revision);
        }
    };
    match value.get_mut("Aliases").and_then(Value::as_array_mut) {
        Some(aliases) => aliases.iter_mut().for_each(&mut rewrite),
        None => rewrite(&mut value),
    }
    parts.headers.remove("content-length");
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

/// Sends a request to moto as it came and returns moto's answer as it went.
async fn forward(
    state: &ApiState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = state
        .http
        .request(method, format!("{}{path}", state.moto_endpoint))
        .body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            return lambda_error(
                StatusCode::BAD_GATEWAY,
                "ServiceException",
                &format!("moto did not answer: {e}"),
            );
        }
    };
    let status = answer.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "transfer-encoding" | "connection" | "content-length"
        ) {
            out_headers.append(name, value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, out_headers, bytes).into_response(),
        Err(e) => lambda_error(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            &format!("moto's answer was cut: {e}"),
        ),
    }
}
