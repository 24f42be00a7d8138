//! `Custom::SluiceRollout`: a CloudFormation custom resource through which an
//! app's own `sam deploy` runs a gated Sluice rollout, in place of SAM's
//! `DeploymentPreference` (the `rollout-resource` function is its provider;
//! the stack exports its ServiceToken).
//!
//! CloudFormation sends a Create, Update or Delete request and waits for one
//! answer, a JSON document PUT to the request's presigned `ResponseURL`
//! (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requests.html>,
//! `crpg-ref-responses.html`), for at most the resource's `ServiceTimeout`
//! (3,600 s at most and by default). What needs no rollout is answered at
//! once; a rollout is a deployment whose `reply_to` carries the request, and
//! the orchestrator answers when it ends (`reply_when_ended`): SUCCESS when
//! promoted, FAILED with the rollback's reason otherwise, so the stack update
//! fails and CloudFormation rolls the stack back.
//!
//! - Create: an alias that does not exist is created on the version; one
//!   already serving it is taken as it is; one serving another version is
//!   rolled out to it.
//! - Update: an alias already serving the version whole needs nothing (this is
//!   how CloudFormation's rollback after a FAILED answer ends: the alias was
//!   rolled back already, and no rollout starts); else a rollout. The same
//!   request delivered again (same `RequestId`) is the same rollout.
//! - Delete: the alias is left as it serves (it may carry traffic; it goes with
//!   its function); a rollout of this resource still running is aborted first.

use crate::clock::Clock;
use crate::domain::analysis::{AnalysisSettings, MetricTiming};
use crate::domain::config::DeploymentConfig;
use crate::domain::deployment::{
    Deployment, DeploymentSpec, HookInvocation, Input, OnBusy, OnManualChange, Phase, ReplyTo,
    VersionSource,
};
use crate::operations::{OperationError, Operations};
use crate::ports::{Cloud, Deployments, EngineError};
use crate::store::StoreError;
use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// The ids of the deployments this resource starts begin so.
pub const DEPLOYMENT_PREFIX: &str = "cfn-";
/// CloudFormation waits this long for an answer unless told otherwise.
pub const DEFAULT_SERVICE_TIMEOUT_SECS: u64 = 3600;
/// What the gates and the writes of a rollout take beyond its bakes, at least.
const GATES_MARGIN: Duration = Duration::from_secs(60);
/// An answer's whole body may be at most 4,096 bytes.
const MAX_REASON_BYTES: usize = 3000;
/// How long a Delete waits for the rollout it aborted to be rolled back.
const ABORT_WAIT: Duration = Duration::from_secs(30);

/// Whether a deployment was started by this resource.
pub fn is_rollout(deployment_id: &str) -> bool {
    deployment_id.starts_with(DEPLOYMENT_PREFIX)
}

/// The resource's properties, as a template writes them. Every field is
/// checked: a misspelt one is refused by name, never dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RolloutProperties {
    #[allow(dead_code)]
    service_token: String,
    #[serde(default, deserialize_with = "number_or_text")]
    service_timeout: Option<u64>,
    function_name: String,
    alias: String,
    /// A version number, or the version's ARN (`!Ref Function.Version`).
    #[serde(deserialize_with = "text")]
    version: String,
    /// The deployment config, as `DeploymentPreference`'s `Type` names it.
    #[serde(rename = "Type")]
    config: DeploymentConfig,
    #[serde(default)]
    hooks: Hooks,
    #[serde(default)]
    alarms: Vec<String>,
    /// The API's `analysis` object (its field names in snake_case).
    #[serde(default)]
    analysis: Option<Value>,
    #[serde(default)]
    hook_invocation: HookInvocation,
    #[serde(default, deserialize_with = "number_or_text")]
    hook_timeout_seconds: Option<u64>,
    #[serde(default)]
    on_manual_change: OnManualChange,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Hooks {
    pre_traffic: Option<String>,
    post_traffic: Option<String>,
}

/// CloudFormation passes a template's numbers to a custom resource as text.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other} is not a whole number"
        ))),
    }
}

/// A version may come as a number where a template writes `Version: 3`.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not a version"
        ))),
    }
}

/// The analysis object with CloudFormation's texts read back as numbers.
fn analysis_settings(value: &Value) -> Result<AnalysisSettings, String> {
    let mut value = value.clone();
    if let Value::Object(fields) = &mut value {
        for field in fields.values_mut() {
            if let Value::String(s) = field
                && let Ok(n) = s.parse::<serde_json::Number>()
            {
                *field = Value::Number(n);
            }
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| format!("Analysis.{e}"))
}

impl RolloutProperties {
    pub fn parse(properties: &Value) -> Result<Self, String> {
        serde_path_to_error::deserialize(properties).map_err(|e| match e.path().to_string() {
            path if path == "." => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        })
    }

    /// The version number, from a number or a version ARN of the function.
    fn version_number(&self) -> Result<String, String> {
        let Some(rest) = self.version.strip_prefix("arn:") else {
            return Ok(self.version.clone());
        };
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [_, "lambda", _, _, "function", name, version] if *name == self.function_name => {
                Ok((*version).to_owned())
            }
            _ => Err(format!(
                "Version: {} is not an ARN of a version of {}",
                self.version, self.function_name
            )),
        }
    }

    /// What this resource stands for: the alias (CloudFormation's physical id).
    pub fn physical_id(&self) -> String {
        format!("{}:{}", self.function_name, self.alias)
    }

    /// The rollout as a deployment, checked as the API checks one, and
    /// against the time CloudFormation waits.
    pub fn spec(&self, timing: &MetricTiming) -> Result<DeploymentSpec, String> {
        let analysis = self.analysis.as_ref().map(analysis_settings).transpose()?;
        let spec = DeploymentSpec {
            function: self.function_name.clone(),
            alias: self.alias.clone(),
            source: VersionSource::Version(self.version_number()?),
            config: self.config.clone(),
            pre_traffic_hook: self.hooks.pre_traffic.clone(),
            post_traffic_hook: self.hooks.post_traffic.clone(),
            alarms: self.alarms.clone(),
            // Never two rollouts on one alias: a busy one is refused.
            on_busy: OnBusy::Refuse,
            on_manual_change: self.on_manual_change,
            smoke_tests: Vec::new(),
            smoke_tests_from: None,
            analysis,
            hook_invocation: self.hook_invocation,
            hook_timeout_seconds: self.hook_timeout_seconds,
        };
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let waits = self.service_timeout.unwrap_or(DEFAULT_SERVICE_TIMEOUT_SECS);
        if !(1..=DEFAULT_SERVICE_TIMEOUT_SECS).contains(&waits) {
            return Err(format!(
                "ServiceTimeout: {waits} must be from 1 to {DEFAULT_SERVICE_TIMEOUT_SECS} seconds"
            ));
        }
        let least = spec.shortest_run(timing) + GATES_MARGIN;
        if least > Duration::from_secs(waits) {
            return Err(format!(
                "a rollout with {} takes at least {} s (its bakes{}, and a minute for gates and shifts), longer than the {waits} s CloudFormation waits (ServiceTimeout, at most 3600): choose a shorter Type or raise ServiceTimeout",
                spec.config,
                least.as_secs(),
                if spec.analysis.is_some() {
                    ", each long enough for analysis, and the watch"
                } else {
                    ""
                }
            ));
        }
        Ok(spec)
    }
}

/// What the provider answers, now or when the rollout ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Now {
        failed: Option<String>,
        data: HashMap<String, String>,
    },
    /// The deployment started (or already running) answers when it ends.
    Later(String),
}

impl Answer {
    fn success(version: &str) -> Self {
        Answer::Now {
            failed: None,
            data: HashMap::from([("Version".to_owned(), version.to_owned())]),
        }
    }

    fn failed(reason: impl Into<String>) -> Self {
        Answer::Now {
            failed: Some(reason.into()),
            data: HashMap::new(),
        }
    }
}

/// The parts of a request every answer copies.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    request_id: String,
    response_url: String,
    stack_id: String,
    logical_resource_id: String,
    physical_resource_id: String,
}

impl Request {
    fn reply_to(&self) -> ReplyTo {
        ReplyTo::CloudFormation {
            response_url: self.response_url.clone(),
            stack_id: self.stack_id.clone(),
            request_id: self.request_id.clone(),
            logical_resource_id: self.logical_resource_id.clone(),
            physical_resource_id: self.physical_resource_id.clone(),
        }
    }

    /// The deployment this request starts: the same for each delivery of it.
    fn deployment_id(&self) -> String {
        let digest = crate::domain::deployment::token_digest(&format!(
            "{}\n{}",
            self.stack_id, self.request_id
        ));
        format!("{DEPLOYMENT_PREFIX}{}", &digest[..20])
    }
}

/// The answer's document, as CloudFormation reads it.
pub fn response_body(
    reply: &ReplyTo,
    failed: Option<&str>,
    data: HashMap<String, String>,
) -> Vec<u8> {
    let ReplyTo::CloudFormation {
        stack_id,
        request_id,
        logical_resource_id,
        physical_resource_id,
        ..
    } = reply;
    let mut response = CloudFormationCustomResourceResponse::default();
    response.status = match failed {
        None => CloudFormationCustomResourceResponseStatus::Success,
        Some(_) => CloudFormationCustomResourceResponseStatus::Failed,
    };
    response.reason = failed.map(|why| {
        let cut = crate::domain::clip(why, MAX_REASON_BYTES);
        if cut.len() < why.len() {
            format!("{cut}…")
        } else {
            cut.to_owned()
        }
    });
    response.physical_resource_id = physical_resource_id.clone();
    response.stack_id = stack_id.clone();
    response.request_id = request_id.clone();
    response.logical_resource_id = logical_resource_id.clone();
    response.data = data;
    serde_json::to_vec(&response).expect("a response serialises")
}

/// Where and what to answer for a deployment that has ended, if anyone waits.
pub fn answer_when_ended(d: &Deployment) -> Option<(String, Vec<u8>)> {
    let reply = d.reply_to.as_ref()?;
    let ReplyTo::CloudFormation { response_url, .. } = reply;
    let version = d.to_version.clone().unwrap_or_default();
    let (failed, data) = match &d.phase {
        Phase::Promoted => (
            None,
            HashMap::from([
                ("Version".to_owned(), version),
                ("DeploymentId".to_owned(), d.id.clone()),
            ]),
        ),
        Phase::RolledBack { reason } | Phase::FailedToStart { reason } => (
            Some(format!("Sluice deployment {}: {reason}", d.id)),
            HashMap::new(),
        ),
        _ => return None,
    };
    Some((
        response_url.clone(),
        response_body(reply, failed.as_deref(), data),
    ))
}

/// PUTs an answer to its presigned URL: tried three times, a second and then
/// two apart; the caller's retries (its queue's) take over after that.
pub async fn put_answer(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        // No content type: the URL is signed without one.
        match http.put(url).body(body.clone()).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => last = format!("the response URL answered {}", answer.status()),
            Err(e) => last = format!("the response URL could not be reached: {e}"),
        }
        tracing::warn!(attempt, error = %last, "CloudFormation answer not delivered");
    }
    Err(last)
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("not a CloudFormation custom resource request: {0}")]
    Event(String),
    #[error("the answer could not be delivered: {0}")]
    Answer(String),
    #[error(transparent)]
    Operation(#[from] OperationError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Aws(String),
}

/// The provider: answers CloudFormation's requests, starting rollouts.
pub struct RolloutProvider {
    pub operations: Operations,
    pub lambda: aws_sdk_lambda::Client,
    pub http: reqwest::Client,
    pub metric_timing: MetricTiming,
}

impl RolloutProvider {
    pub fn from_settings(
        config: &aws_config::SdkConfig,
        settings: &crate::settings::Settings,
        http: reqwest::Client,
    ) -> Self {
        RolloutProvider {
            operations: Operations::from_settings(config, settings),
            lambda: aws_sdk_lambda::Client::new(config),
            http,
            metric_timing: settings.metric_timing,
        }
    }

    /// Handles one request: answers it now, or leaves the answer to the
    /// rollout's end. Returns the answer given or promised.
    pub async fn handle(&self, payload: &Value) -> Result<Answer, ProviderError> {
        let request: CloudFormationCustomResourceRequest = serde_json::from_value(payload.clone())
            .map_err(|e| ProviderError::Event(e.to_string()))?;
        let (request, answer) = match request {
            CloudFormationCustomResourceRequest::Create(r) => {
                let parsed = RolloutProperties::parse(&r.resource_properties);
                let physical = parsed.as_ref().map_or_else(
                    |_| format!("{}-not-created", r.logical_resource_id),
                    RolloutProperties::physical_id,
                );
                let request = Request {
                    request_id: r.request_id,
                    response_url: r.response_url,
                    stack_id: r.stack_id,
                    logical_resource_id: r.logical_resource_id,
                    physical_resource_id: physical,
                };
                let answer = match parsed {
                    Ok(props) => self.roll_out(&props, &request).await?,
                    Err(why) => Answer::failed(why),
                };
                (request, answer)
            }
            CloudFormationCustomResourceRequest::Update(r) => {
                let parsed = RolloutProperties::parse(&r.resource_properties);
                // Another function or alias is another resource: CloudFormation
                // then deletes the old one.
                let physical = parsed.as_ref().map_or(
                    r.physical_resource_id.clone(),
                    RolloutProperties::physical_id,
                );
                let request = Request {
                    request_id: r.request_id,
                    response_url: r.response_url,
                    stack_id: r.stack_id,
                    logical_resource_id: r.logical_resource_id,
                    physical_resource_id: physical,
                };
                let answer = match parsed {
                    Ok(props) => self.roll_out(&props, &request).await?,
                    Err(why) => Answer::failed(why),
                };
                (request, answer)
            }
            CloudFormationCustomResourceRequest::Delete(r) => {
                let request = Request {
                    request_id: r.request_id,
                    response_url: r.response_url,
                    stack_id: r.stack_id,
                    logical_resource_id: r.logical_resource_id,
                    physical_resource_id: r.physical_resource_id,
                };
                let answer = match RolloutProperties::parse(&r.resource_properties) {
                    Ok(props) if props.physical_id() == request.physical_resource_id => {
                        self.delete(&props, &request).await?
                    }
                    // Never created, or replaced by another alias: nothing to do.
                    _ => Answer::Now {
                        failed: None,
                        data: HashMap::new(),
                    },
                };
                (request, answer)
            }
            _ => return Err(ProviderError::Event("an unknown RequestType".into())),
        };
        if let Answer::Now { failed, data } = &answer {
            tracing::info!(request_id = %request.request_id, logical_resource_id = %request.logical_resource_id, failed = ?failed, "answering CloudFormation");
            let body = response_body(&request.reply_to(), failed.as_deref(), data.clone());
            put_answer(&self.http, &request.response_url, body)
                .await
                .map_err(ProviderError::Answer)?;
        }
        Ok(answer)
    }

    /// A Create or Update: the alias made, left as it is, or rolled out.
    async fn roll_out(
        &self,
        props: &RolloutProperties,
        request: &Request,
    ) -> Result<Answer, ProviderError> {
        let spec = match props.spec(&self.metric_timing) {
            Ok(spec) => spec,
            Err(why) => return Ok(Answer::failed(why)),
        };
        let VersionSource::Version(version) = &spec.source else {
            unreachable!("a rollout names its version");
        };
        // This very request, delivered again: the rollout it started.
        let id = request.deployment_id();
        match self.operations.store().load(&id).await {
            Ok(stored) => {
                return Ok(match answer_when_ended(&stored.deployment) {
                    Some(_) if stored.deployment.phase == Phase::Promoted => {
                        Answer::success(version)
                    }
                    Some(_) => Answer::failed(format!(
                        "Sluice deployment {id}: {}",
                        stored.deployment.status_text()
                    )),
                    None => Answer::Later(id),
                });
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let cloud = &self.operations.engine().cloud;
        match cloud.read_alias(&spec.function, &spec.alias).await {
            Ok(None) => return self.create_alias(&spec, version).await,
            Ok(Some(alias)) if alias.version == *version && alias.weights.is_empty() => {
                return Ok(Answer::success(version));
            }
            Ok(Some(_)) => {}
            Err(EngineError::Refused(why)) => return Ok(Answer::failed(why)),
            Err(e) => return Err(e.into()),
        }
        match self
            .operations
            .start(&id, spec, Some(request.reply_to()))
            .await
        {
            Ok(_) => Ok(Answer::Later(id)),
            Err(OperationError::Invalid(why) | OperationError::Conflict(why)) => {
                Ok(Answer::failed(why))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn create_alias(
        &self,
        spec: &DeploymentSpec,
        version: &str,
    ) -> Result<Answer, ProviderError> {
        if let Some(why) = self
            .operations
            .engine()
            .cloud
            .unusable_function(&spec.function, Some(version))
            .await?
        {
            return Ok(Answer::failed(format!(
                "version {version} of {} {why}",
                spec.function
            )));
        }
        let created = self
            .lambda
            .create_alias()
            .function_name(&spec.function)
            .name(&spec.alias)
            .function_version(version)
            .description("made by Sluice's Custom::SluiceRollout")
            .send()
            .await;
        match created {
            Ok(_) => Ok(Answer::success(version)),
            Err(e) => {
                let service = e.as_service_error();
                // Made meanwhile (another delivery of this request): read again.
                if service.is_some_and(|s| s.is_resource_conflict_exception()) {
                    return Err(ProviderError::Aws(
                        "the alias was created meanwhile; the request is tried again".into(),
                    ));
                }
                let refused = service.map(|s| s.to_string());
                match refused {
                    Some(why) => Ok(Answer::failed(format!(
                        "CreateAlias {}:{}: {why}",
                        spec.function, spec.alias
                    ))),
                    None => Err(ProviderError::Aws(format!("CreateAlias: {e}"))),
                }
            }
        }
    }

    /// A Delete: the alias stays; this resource's rollout still running is
    /// aborted, and answered for once rolled back.
    async fn delete(
        &self,
        props: &RolloutProperties,
        request: &Request,
    ) -> Result<Answer, ProviderError> {
        let engine = self.operations.engine();
        let lock = crate::store::keys::Lock::alias(&props.function_name, &props.alias);
        let Some(holder) = engine.live_holder(&lock).await? else {
            return Ok(Answer::success(&props.version));
        };
        let ours = engine
            .store
            .load(&holder)
            .await?
            .deployment
            .reply_to
            .is_some_and(|r| {
                let ReplyTo::CloudFormation {
                    stack_id,
                    logical_resource_id,
                    ..
                } = r;
                stack_id == request.stack_id && logical_resource_id == request.logical_resource_id
            });
        if !ours {
            return Ok(Answer::success(&props.version));
        }
        let reason = format!(
            "the stack {} deleted {}",
            request.stack_id, request.logical_resource_id
        );
        engine.steer(&holder, Input::Abort { reason }).await?;
        let clock = &engine.clock;
        let until = clock.now() + chrono::Duration::from_std(ABORT_WAIT).expect("short");
        loop {
            let d = engine.store.load(&holder).await?.deployment;
            if d.phase.is_terminal() {
                return Ok(Answer::success(&props.version));
            }
            if clock.now() >= until {
                return Ok(Answer::failed(format!(
                    "deployment {holder} was aborted but has not rolled back yet ({}): delete again once it has",
                    d.status_text()
                )));
            }
            clock.sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(extra: Value) -> Value {
        let mut p = json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:sluice-RolloutResource",
            "FunctionName": "greeter", "Alias": "live", "Version": "3",
            "Type": "Canary10Percent5Minutes"
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn properties_are_read_strictly_and_numbers_may_come_as_text() {
        let p = RolloutProperties::parse(&props(json!({
            "ServiceTimeout": "1800",
            "Hooks": {"PreTraffic": "greeter-pre", "PostTraffic": "greeter-post"},
            "Alarms": ["greeter-errors"],
            "Analysis": {"max_error_rate": "2.5", "min_invocations": "50", "on_inconclusive": "fail"},
            "HookTimeoutSeconds": 600, "HookInvocation": "async"
        })))
        .unwrap();
        let spec = p.spec(&MetricTiming::default()).unwrap();
        assert_eq!(spec.pre_traffic_hook.as_deref(), Some("greeter-pre"));
        assert_eq!(spec.on_busy, OnBusy::Refuse);
        let analysis = spec.analysis.unwrap();
        assert_eq!(
            (analysis.max_error_rate, analysis.min_invocations),
            (2.5, 50)
        );
        assert_eq!(p.physical_id(), "greeter:live");

        for (typo, named) in [
            (json!({"Hook": {}}), "unknown field `Hook`"),
            (
                json!({"Hooks": {"PreTrafic": "x"}}),
                "Hooks.PreTrafic: unknown field `PreTrafic`",
            ),
            (json!({"Type": "Canary10Percent7Minutes"}), "Type"),
            (json!({"ServiceTimeout": "an hour"}), "ServiceTimeout"),
        ] {
            let err = RolloutProperties::parse(&props(typo)).unwrap_err();
            assert!(err.contains(named), "{err}");
        }
        let no_alias =
            json!({"ServiceToken": "t", "FunctionName": "f", "Version": "1", "Type": "AllAtOnce"});
        assert!(
            RolloutProperties::parse(&no_alias)
                .unwrap_err()
                .contains("missing field `Alias`")
        );
        let bad_analysis =
            RolloutProperties::parse(&props(json!({"Analysis": {"max_eror_rate": 1}})))
                .unwrap()
                .spec(&MetricTiming::default())
                .unwrap_err();
        assert!(
            bad_analysis.contains("Analysis.") && bad_analysis.contains("max_eror_rate"),
            "{bad_analysis}"
        );
    }

    /// The example app's template says what this module reads: its
    /// properties, intrinsic functions resolved as CloudFormation would.
    #[test]
    fn the_example_apps_rollout_is_read_as_written() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/greeter/template.yaml"
        );
        let template: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        fn resolved(v: serde_yaml_ng::Value) -> Value {
            use serde_yaml_ng::Value as Y;
            match v {
                Y::Tagged(t) => match (t.tag.to_string().as_str(), t.value) {
                    ("!Ref", Y::String(r)) if r == "Greeter.Version" => {
                        json!("arn:aws:lambda:us-east-1:123456789012:function:greeter:12")
                    }
                    ("!Ref", Y::String(r)) if r == "Greeter" => json!("greeter"),
                    ("!Ref", Y::String(r)) => json!(r),
                    (tag, value) => panic!("{tag} {value:?} is not resolved here"),
                },
                Y::Mapping(m) if m.keys().any(|k| k.as_str() == Some("Fn::ImportValue")) => {
                    json!("arn:aws:lambda:us-east-1:123456789012:function:sluice-RolloutResource")
                }
                Y::Mapping(m) => Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k.as_str().unwrap().to_owned(), resolved(v)))
                        .collect(),
                ),
                Y::Sequence(items) => Value::Array(items.into_iter().map(resolved).collect()),
                other => serde_json::to_value(other).unwrap(),
            }
        }
        let properties = resolved(template["Resources"]["GreeterRollout"]["Properties"].clone());
        let p = RolloutProperties::parse(&properties).unwrap();
        let spec = p.spec(&MetricTiming::default()).unwrap();
        assert_eq!(
            (spec.source, spec.alarms, p.physical_id()),
            (
                VersionSource::Version("12".into()),
                vec!["GreeterErrors".to_owned()],
                "greeter:live".to_owned()
            )
        );
    }

    #[test]
    fn a_version_arn_gives_its_number_and_must_be_the_functions() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:greeter:7";
        let p = RolloutProperties::parse(&props(json!({"Version": arn}))).unwrap();
        assert_eq!(p.version_number().unwrap(), "7");
        let other = "arn:aws:lambda:us-east-1:123456789012:function:other:7";
        let p = RolloutProperties::parse(&props(json!({"Version": other}))).unwrap();
        assert!(
            p.spec(&MetricTiming::default())
                .unwrap_err()
                .contains("not an ARN of a version of greeter")
        );
        let p = RolloutProperties::parse(&props(json!({"Version": 4}))).unwrap();
        assert_eq!(p.version_number().unwrap(), "4");
        let p = RolloutProperties::parse(&props(json!({"Version": "live"}))).unwrap();
        assert!(
            p.spec(&MetricTiming::default())
                .unwrap_err()
                .contains("source.version")
        );
    }

    #[test]
    fn a_rollout_longer_than_cloudformation_waits_is_refused() {
        let timing = MetricTiming::default();
        let long = RolloutProperties::parse(&props(
            json!({"Type": "Canary10Percent30Minutes", "ServiceTimeout": "1800"}),
        ))
        .unwrap();
        let why = long.spec(&timing).unwrap_err();
        assert!(
            why.contains("takes at least 1860 s") && why.contains("1800 s CloudFormation waits"),
            "{why}"
        );
        let fits =
            RolloutProperties::parse(&props(json!({"Type": "Canary10Percent30Minutes"}))).unwrap();
        assert!(fits.spec(&timing).is_ok());
        // Analysis makes each bake at least its read delay, and adds the watch.
        let watched = RolloutProperties::parse(&props(json!({
            "Type": "Linear10PercentEvery3Minutes", "ServiceTimeout": 1800,
            "Analysis": {"watch_after_promotion_seconds": 1200}
        })))
        .unwrap();
        assert!(
            watched
                .spec(&timing)
                .unwrap_err()
                .contains("takes at least 2880 s")
        );
        let out_of_range =
            RolloutProperties::parse(&props(json!({"ServiceTimeout": 3601}))).unwrap();
        assert!(
            out_of_range
                .spec(&timing)
                .unwrap_err()
                .contains("from 1 to 3600")
        );
    }

    /// An answer refused once is delivered on the next attempt, as sent:
    /// the same body, and no content type (the URL is signed without one).
    #[tokio::test]
    async fn an_answer_is_tried_again_until_the_url_takes_it() {
        use std::sync::{Arc, Mutex};
        /// Each PUT: its content type, and its body.
        type Puts = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;
        let seen: Puts = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().route(
            "/answer",
            axum::routing::put(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let recorded = recorded.clone();
                    async move {
                        let mut seen = recorded.lock().unwrap();
                        let content_type = headers
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned());
                        seen.push((content_type, body.to_vec()));
                        if seen.len() == 1 {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/answer", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        put_answer(&http, &url, b"{\"Status\":\"SUCCESS\"}".to_vec())
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter()
                .all(|(content_type, body)| content_type.is_none()
                    && body.as_slice() == b"{\"Status\":\"SUCCESS\"}")
        );
        // Nobody there: given up after three attempts, saying why.
        let gone = url.replace("/answer", "/nothing-here");
        let why = put_answer(&http, &gone, Vec::new()).await.unwrap_err();
        assert!(why.contains("404"), "{why}");
    }

    #[test]
    fn an_answer_copies_the_request_and_fits_cloudformations_limit() {
        let reply = ReplyTo::CloudFormation {
            response_url: "https://example/put".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1".into(),
            request_id: "r-1".into(),
            logical_resource_id: "GreeterRollout".into(),
            physical_resource_id: "greeter:live".into(),
        };
        let body: Value = serde_json::from_slice(&response_body(
            &reply,
            Some(&"x".repeat(10_000)),
            HashMap::new(),
        ))
        .unwrap();
        assert_eq!(body["Status"], "FAILED");
        assert_eq!(body["RequestId"], "r-1");
        assert_eq!(body["PhysicalResourceId"], "greeter:live");
        assert!(serde_json::to_vec(&body).unwrap().len() <= 4096);
        let ok: Value = serde_json::from_slice(&response_body(
            &reply,
            None,
            HashMap::from([("Version".into(), "3".into())]),
        ))
        .unwrap();
        assert_eq!(
            (ok["Status"].clone(), ok["Data"]["Version"].clone()),
            (json!("SUCCESS"), json!("3"))
        );
    }
}
