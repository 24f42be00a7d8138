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
//! once; a rollout is a deployment with a deadline before CloudFormation's
//! (aborted then, so an answer always comes in time), and the request waits
//! for its end as a waiter item: the orchestrator answers when the table's
//! stream shows the end (`answers_owed`), SUCCESS when promoted, FAILED with
//! the rollback's reason otherwise, so the stack update fails and
//! CloudFormation rolls the stack back.
//!
//! The resource moves one alias (`FunctionName`, `Alias`, `Version`), or a
//! release group: `Group` names the other members, each moved in lockstep
//! with it and rolled back with it (an alias the resource creates served
//! nobody: it is made on its version, outside the rollout). For each member:
//!
//! - Create: an alias that does not exist is created on the version; one
//!   already serving it is taken as it is; one serving another version is
//!   rolled out to it.
//! - Update: an alias already serving the version whole needs nothing (this is
//!   how CloudFormation's rollback after a FAILED answer ends: the alias was
//!   rolled back already, and no rollout starts); else a rollout. The same
//!   request delivered again (same `RequestId`) is the same rollout.
//!
//! The members to roll out move as one deployment (a release group when
//! more than one); the aliases to create are created, on their versions
//! (they served nobody), only once the rollout's request checks passed:
//! a request its checks refuse writes nothing (a `CreateAlias` Lambda
//! refuses after others were made, or a lock taken by another rollout
//! between the checks and the start, can still leave created aliases).
//!
//! - Delete: the aliases are left as they serve (they may carry traffic; they
//!   go with their functions); a rollout of this resource still running is
//!   aborted, and the delete answered once it has ended.
//! - A request for the versions this resource's rollout still under way
//!   started from, or naming none of its aliases (CloudFormation stopped
//!   waiting, and rolls the stack back to properties that may name fewer
//!   members): that rollout is aborted, and the request answered once it
//!   rolled back. It is found by the aliases of both the new and the old
//!   properties.

use crate::clock::Clock;
use crate::domain::analysis::{AnalysisSettings, MetricTiming};
use crate::domain::config::DeploymentConfig;
use crate::domain::deployment::{
    Deployment, DeploymentSpec, HookInvocation, Input, MemberSpec, OnBusy, OnManualChange, Phase,
    RollbackPolicy, Time, VersionSource,
};
use crate::operations::{OperationError, Operations};
use crate::ports::{Cloud, Deployments, EngineError};
use crate::store::StoreError;
use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};
use serde::{Deserialize, Serialize};
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
const MAX_ANSWER_BYTES: usize = 4096;
/// A request is handled at most this long after CloudFormation sent it
/// (the provider's `MaximumEventAgeInSeconds`, template.yaml): Sluice cannot
/// tell how long it waited.
const MAX_REQUEST_AGE: Duration = Duration::from_secs(300);
/// A rollout ends this long before CloudFormation stops waiting (its
/// deadline: aborted then, by a timer or the minutely sweep), leaving time
/// for a late request, the rollback and the answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(120 + MAX_REQUEST_AGE.as_secs());

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
    /// A release group's other members, moved in lockstep with this one.
    #[serde(default)]
    group: Vec<GroupMember>,
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
    /// `immediate`, `gradual` or `freeze`; a frozen rollout still ends
    /// by its deadline, before CloudFormation stops waiting.
    #[serde(default)]
    rollback: RollbackPolicy,
    #[serde(default, deserialize_with = "number_or_text")]
    frozen_for_seconds: Option<u64>,
}

/// A release group's member, as a template writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GroupMember {
    function_name: String,
    alias: String,
    #[serde(deserialize_with = "text")]
    version: String,
}

/// One alias the resource moves, and the version it is to serve.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    function: String,
    alias: String,
    version: String,
}

/// `version` as a number: given as one, or as an ARN of a version of `function`.
fn version_number(field: &str, function: &str, version: &str) -> Result<String, String> {
    let Some(rest) = version.strip_prefix("arn:") else {
        return Ok(version.to_owned());
    };
    let parts: Vec<&str> = rest.split(':').collect();
    match parts.as_slice() {
        [_, "lambda", _, _, "function", name, number] if name == &function => {
            Ok((*number).to_owned())
        }
        _ => Err(format!(
            "{field}: {version} is not an ARN of a version of {function}"
        )),
    }
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

    /// Every alias the resource moves (its own first), with its version
    /// number (from a number or a version ARN of the member's function).
    fn targets(&self) -> Result<Vec<Target>, String> {
        let own = (
            "Version".to_owned(),
            &self.function_name,
            &self.alias,
            &self.version,
        );
        let members = self.group.iter().enumerate().map(|(i, m)| {
            (
                format!("Group[{i}].Version"),
                &m.function_name,
                &m.alias,
                &m.version,
            )
        });
        let mut targets = Vec::new();
        let mut problems = Vec::new();
        for (field, function, alias, version) in std::iter::once(own).chain(members) {
            match version_number(&field, function, version) {
                Ok(version) => targets.push(Target {
                    function: function.clone(),
                    alias: alias.clone(),
                    version,
                }),
                Err(why) => problems.push(why),
            }
        }
        if problems.is_empty() {
            Ok(targets)
        } else {
            Err(problems.join("; "))
        }
    }

    /// Every alias the resource moves, as named (no version read).
    fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.function_name.as_str(), self.alias.as_str())).chain(
            self.group
                .iter()
                .map(|m| (m.function_name.as_str(), m.alias.as_str())),
        )
    }

    /// What this resource stands for: the alias (CloudFormation's physical id).
    pub fn physical_id(&self) -> String {
        format!("{}:{}", self.function_name, self.alias)
    }

    /// The rollout as a deployment, checked as the API checks one, and
    /// against the time CloudFormation waits.
    pub fn spec(&self, timing: &MetricTiming) -> Result<DeploymentSpec, String> {
        let analysis = self.analysis.as_ref().map(analysis_settings).transpose()?;
        let mut targets = self.targets()?.into_iter();
        let own = targets.next().expect("the resource's own alias");
        let spec = DeploymentSpec {
            function: own.function,
            alias: own.alias,
            source: VersionSource::Version(own.version),
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
            rollback: self.rollback,
            frozen_for_seconds: self.frozen_for_seconds,
            group: targets
                .map(|t| MemberSpec {
                    function: t.function,
                    alias: t.alias,
                    source: VersionSource::Version(t.version),
                })
                .collect(),
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
        if least + DEADLINE_MARGIN > Duration::from_secs(waits) {
            return Err(format!(
                "a rollout with {} takes at least {} s (its bakes{}, and a minute for gates and shifts), and Sluice ends one {} s before CloudFormation stops waiting, to roll back and answer; CloudFormation waits {waits} s (ServiceTimeout, at most 3600): choose a shorter Type or raise ServiceTimeout",
                spec.config,
                least.as_secs(),
                if spec.analysis.is_some() {
                    ", each long enough for analysis, and the watch"
                } else {
                    ""
                },
                DEADLINE_MARGIN.as_secs()
            ));
        }
        Ok(spec)
    }
}

/// Whether `targets` send every member of `earlier` (this resource's
/// rollout still under way) they name back to the version it started
/// from: CloudFormation rolling the stack back from the update that
/// started `earlier`. A member they do not name (the old properties had
/// a smaller group) is not wanted moved either, and one not prepared yet
/// has moved nowhere.
fn sends_back(earlier: &Deployment, targets: &[Target]) -> bool {
    (0..earlier.members()).all(|m| {
        let (function, alias) = earlier.target(m);
        let from = earlier.member(m).from_version;
        targets
            .iter()
            .find(|t| t.function == function && t.alias == alias)
            .is_none_or(|t| from.is_none_or(|from| from == t.version))
    })
}

/// "version 4", or "greeter:live on 4, greeter-worker:live on 2".
fn versions_text(targets: &[Target]) -> String {
    match targets {
        [one] => format!("version {}", one.version),
        many => many
            .iter()
            .map(|t| format!("{}:{} on {}", t.function, t.alias, t.version))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `spec` moving only its members `members` (indices, in order, one at
/// least): the first of them leads, the others are its group.
fn only_members(spec: DeploymentSpec, members: &[usize]) -> DeploymentSpec {
    let all: Vec<MemberSpec> = std::iter::once(MemberSpec {
        function: spec.function.clone(),
        alias: spec.alias.clone(),
        source: spec.source.clone(),
    })
    .chain(spec.group.iter().cloned())
    .collect();
    let mut kept = members.iter().map(|&m| all[m].clone());
    let lead = kept.next().expect("a member to move");
    DeploymentSpec {
        function: lead.function,
        alias: lead.alias,
        source: lead.source,
        group: kept.collect(),
        ..spec
    }
}

/// What the provider answers, now or when a deployment ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Now {
        failed: Option<String>,
        version: String,
        deployment: String,
    },
    /// Deployment `0` answers when it ends.
    Later(String),
}

impl Answer {
    fn success(version: &str) -> Self {
        Answer::Now {
            failed: None,
            version: version.to_owned(),
            deployment: String::new(),
        }
    }

    fn failed(reason: impl Into<String>) -> Self {
        Answer::Now {
            failed: Some(reason.into()),
            version: String::new(),
            deployment: String::new(),
        }
    }
}

/// The parts of a request every answer copies. A FAILED answer names the
/// resource as it was (`PhysicalResourceId` of the request), a SUCCESS as
/// it now is (another function or alias is another resource, and
/// CloudFormation then deletes the old one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
    physical_resource_id: String,
    failed_physical_resource_id: String,
}

impl Reply {
    /// The deployment a rollout request starts: the same for each delivery of it.
    fn deployment_id(&self) -> String {
        let digest = crate::domain::deployment::token_digest(&format!(
            "{}\n{}",
            self.stack_id, self.request_id
        ));
        format!("{DEPLOYMENT_PREFIX}{}", &digest[..20])
    }

    /// The answer's document, as CloudFormation reads it, within its 4,096 bytes.
    fn body(&self, failed: Option<&str>, version: &str, deployment: &str) -> Vec<u8> {
        let mut response = CloudFormationCustomResourceResponse::default();
        response.status = match failed {
            None => CloudFormationCustomResourceResponseStatus::Success,
            Some(_) => CloudFormationCustomResourceResponseStatus::Failed,
        };
        response.physical_resource_id = match failed {
            None => self.physical_resource_id.clone(),
            Some(_) => self.failed_physical_resource_id.clone(),
        };
        response.stack_id = self.stack_id.clone();
        response.request_id = self.request_id.clone();
        response.logical_resource_id = self.logical_resource_id.clone();
        // The same keys in every answer, for a template's `Fn::GetAtt`.
        response.data = HashMap::from([
            ("Version".to_owned(), version.to_owned()),
            ("DeploymentId".to_owned(), deployment.to_owned()),
        ]);
        let mut reason = failed.map(str::to_owned);
        loop {
            response.reason = reason.clone();
            let body = serde_json::to_vec(&response).expect("a response serialises");
            match &reason {
                // Escapes can make a reason longer as JSON than as text: cut until it fits.
                Some(why) if body.len() > MAX_ANSWER_BYTES && why.len() > 1 => {
                    let cut = crate::domain::clip(why, why.len() * 3 / 4);
                    reason = Some(format!("{}…", cut.trim_end_matches('…')));
                }
                _ => return body,
            }
        }
    }
}

/// What a waiter expects of the deployment it waits for: a rollout's
/// request, its promotion; a stack rollback's, that the rollout it aborted
/// rolled back; a delete's, its end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Promoted,
    RolledBack,
    Ended,
}

/// A request waiting for a deployment's end (the waiter item's data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Waiting {
    reply: Reply,
    expect: Expect,
    version: String,
    /// When the request was first handled: its deliveries again (Lambda's
    /// retries) keep the deadline it set.
    received_at: Time,
}

impl Waiting {
    /// The answer for `d`, once it has ended.
    fn answer(&self, d: &Deployment) -> Option<Vec<u8>> {
        let failed = outcome(d, self.expect)?;
        Some(self.reply.body(failed.as_deref(), &self.version, &d.id))
    }
}

/// How `d` ended, for a request expecting `expect`: `None` while under
/// way, else the FAILED answer's reason, if it is one.
fn outcome(d: &Deployment, expect: Expect) -> Option<Option<String>> {
    let said = |reason: &str| format!("Sluice deployment {}: {reason}", d.id);
    Some(match (&d.phase, expect) {
        (Phase::Promoted, Expect::Promoted | Expect::Ended) => None,
        (
            Phase::RolledBack { .. } | Phase::FailedToStart { .. },
            Expect::RolledBack | Expect::Ended,
        ) => None,
        (Phase::RolledBack { reason } | Phase::FailedToStart { reason }, Expect::Promoted) => {
            Some(said(reason))
        }
        (Phase::Promoted, Expect::RolledBack) => Some(said(&format!(
            "promoted before its abort took effect: the alias serves version {}",
            d.to_version.clone().unwrap_or_default()
        ))),
        _ => return None,
    })
}

/// An answer owed to a waiter of a deployment that has ended: PUT `body`
/// to `url`, then remove the waiter.
#[derive(Debug, Clone, PartialEq)]
pub struct Owed {
    pub waiter: String,
    pub url: String,
    pub body: Vec<u8>,
}

/// The answers owed for deployment `id` if it has ended (none while it is
/// under way). Asked by the orchestrator when the table's stream shows the
/// end, and by the provider when a deployment it waits on may have ended
/// first; a waiter that cannot be read is dropped, said in the log.
pub async fn answers_owed<S: Deployments>(store: &S, id: &str) -> Result<Vec<Owed>, StoreError> {
    let d = store.load(id).await?.deployment;
    if !d.phase.is_terminal() {
        return Ok(Vec::new());
    }
    let mut owed = Vec::new();
    for (waiter, data) in store.waiters(id).await? {
        match serde_json::from_str::<Waiting>(&data) {
            Ok(waiting) => owed.extend(waiting.answer(&d).map(|body| Owed {
                waiter,
                url: waiting.reply.response_url,
                body,
            })),
            Err(e) => {
                tracing::error!(deployment_id = id, waiter, error = %e, "a waiter that cannot be read is dropped");
                store.remove_waiter(id, &waiter).await?;
            }
        }
    }
    Ok(owed)
}

/// How long an answer is tried before the caller's own retries take over.
pub const ORCHESTRATOR_PATIENCE: Duration = Duration::from_secs(120);
const PROVIDER_PATIENCE: Duration = Duration::from_secs(20);

/// PUTs an answer to its presigned URL, trying again (a second, then
/// doubling) while it fails for a passing reason, for up to `patience`. A
/// refusal (4xx: an expired or foreign URL) will not pass: logged, and done.
pub async fn put_answer(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    patience: Duration,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        // No content type: the URL is signed without one.
        let why = match http.put(url).body(body.clone()).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) if answer.status().is_client_error() => {
                tracing::error!(status = %answer.status(), "CloudFormation's response URL refused the answer: it may have expired, and the stack waits until its ServiceTimeout");
                return Ok(());
            }
            Ok(answer) => format!("the response URL answered {}", answer.status()),
            // Without the URL: it is a credential.
            Err(e) => format!("the response URL could not be reached: {}", e.without_url()),
        };
        tracing::warn!(error = %why, "CloudFormation answer not delivered yet");
        if started.elapsed() + pause > patience {
            return Err(why);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
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
    ) -> Self {
        RolloutProvider {
            operations: Operations::from_settings(config, settings),
            lambda: aws_sdk_lambda::Client::new(config),
            http: crate::aws::lambda_https_client(),
            metric_timing: settings.metric_timing,
        }
    }

    fn store(&self) -> &crate::store::Store {
        self.operations.store()
    }

    fn now(&self) -> Time {
        self.operations.engine().clock.now()
    }

    /// Handles one request: answers it now, or leaves the answer to a
    /// deployment's end. Returns the answer given or promised.
    pub async fn handle(&self, payload: &Value) -> Result<Answer, ProviderError> {
        let request: CloudFormationCustomResourceRequest = serde_json::from_value(payload.clone())
            .map_err(|e| ProviderError::Event(e.to_string()))?;
        let reply =
            |request_id, response_url, stack_id, logical_resource_id, was: Option<String>| {
                let was = was.unwrap_or_default();
                Reply {
                    response_url,
                    stack_id,
                    request_id,
                    logical_resource_id,
                    physical_resource_id: was.clone(),
                    failed_physical_resource_id: was,
                }
            };
        let (reply, answer) = match request {
            CloudFormationCustomResourceRequest::Create(r) => {
                let reply = reply(
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.logical_resource_id,
                    None,
                );
                self.create_or_update(reply, &r.resource_properties, None)
                    .await?
            }
            CloudFormationCustomResourceRequest::Update(r) => {
                let was = Some(r.physical_resource_id);
                let reply = reply(
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.logical_resource_id,
                    was,
                );
                let old = RolloutProperties::parse(&r.old_resource_properties).ok();
                self.create_or_update(reply, &r.resource_properties, old.as_ref())
                    .await?
            }
            CloudFormationCustomResourceRequest::Delete(r) => {
                let was = Some(r.physical_resource_id);
                let reply = reply(
                    r.request_id,
                    r.response_url,
                    r.stack_id,
                    r.logical_resource_id,
                    was,
                );
                let answer = match RolloutProperties::parse(&r.resource_properties) {
                    Ok(props) if props.physical_id() == reply.physical_resource_id => {
                        self.delete(&props, &reply).await?
                    }
                    // Never created, or replaced by another alias: nothing to do.
                    _ => Answer::success(""),
                };
                (reply, answer)
            }
            _ => return Err(ProviderError::Event("an unknown RequestType".into())),
        };
        if let Answer::Now {
            failed,
            version,
            deployment,
        } = &answer
        {
            tracing::info!(request_id = %reply.request_id, logical_resource_id = %reply.logical_resource_id, failed = ?failed, "answering CloudFormation");
            let body = reply.body(failed.as_deref(), version, deployment);
            put_answer(&self.http, &reply.response_url, body, PROVIDER_PATIENCE)
                .await
                .map_err(ProviderError::Answer)?;
        }
        Ok(answer)
    }

    /// A Create (`reply` names no resource yet) or an Update (`old`: its
    /// old properties, if they read): the resource is the alias the
    /// properties name; a FAILED answer names it as it was (a failed
    /// Create: one CloudFormation then deletes, as nothing).
    async fn create_or_update(
        &self,
        mut reply: Reply,
        properties: &Value,
        old: Option<&RolloutProperties>,
    ) -> Result<(Reply, Answer), ProviderError> {
        let parsed = RolloutProperties::parse(properties);
        if reply.failed_physical_resource_id.is_empty() {
            reply.failed_physical_resource_id = match &parsed {
                Ok(props) => props.physical_id(),
                Err(_) => format!("{}-not-created", reply.logical_resource_id),
            };
        }
        reply.physical_resource_id = match &parsed {
            Ok(props) => props.physical_id(),
            Err(_) => reply.failed_physical_resource_id.clone(),
        };
        let answer = match parsed {
            Ok(props) => self.roll_out(&props, old, &reply).await?,
            Err(why) => Answer::failed(why),
        };
        Ok((reply, answer))
    }

    /// `reply` waits for deployment `id`: answered when it ends, or now if
    /// it has ended already (its end may have been seen before the waiter
    /// was saved; answering twice says the same thing twice).
    async fn wait_for(
        &self,
        id: &str,
        reply: &Reply,
        expect: Expect,
        version: &str,
    ) -> Result<Answer, ProviderError> {
        let waiting = Waiting {
            reply: reply.clone(),
            expect,
            version: version.to_owned(),
            received_at: self.received_at(id, reply).await?,
        };
        let data = serde_json::to_string(&waiting).expect("a waiter serialises");
        let until = self.now() + chrono::Duration::hours(3);
        self.store()
            .add_waiter(id, &reply.request_id, &data, until)
            .await?;
        Ok(Answer::Later(id.to_owned()))
    }

    /// When this request was first handled: now, or as its waiter on `id`
    /// says if an earlier delivery saved one.
    async fn received_at(&self, id: &str, reply: &Reply) -> Result<Time, ProviderError> {
        let earlier = self
            .store()
            .waiters(id)
            .await?
            .into_iter()
            .find_map(|(name, data)| {
                let waiting: Waiting = serde_json::from_str(&data).ok()?;
                (name == reply.request_id).then_some(waiting.received_at)
            });
        Ok(earlier.unwrap_or_else(|| self.now()))
    }

    /// Answers what waits on `id` if it has ended already.
    async fn answer_if_ended(&self, id: &str) -> Result<(), ProviderError> {
        for owed in answers_owed(self.store(), id).await? {
            put_answer(&self.http, &owed.url, owed.body, PROVIDER_PATIENCE)
                .await
                .map_err(ProviderError::Answer)?;
            self.store().remove_waiter(id, &owed.waiter).await?;
        }
        Ok(())
    }

    /// The rollout of this resource (same stack, same logical id) holding
    /// any of the aliases `props` (or the `old` properties) name, if any.
    async fn own_holder(
        &self,
        props: &RolloutProperties,
        old: Option<&RolloutProperties>,
        reply: &Reply,
    ) -> Result<Option<Deployment>, ProviderError> {
        let engine = self.operations.engine();
        for (function, alias) in props
            .aliases()
            .chain(old.into_iter().flat_map(|o| o.aliases()))
        {
            let lock = crate::store::keys::Lock::alias(function, alias);
            let Some(holder) = engine.live_holder(&lock).await? else {
                continue;
            };
            // This request's own rollout, started by a delivery running beside this one.
            if holder == reply.deployment_id() {
                continue;
            }
            let ours = self
                .store()
                .waiters(&holder)
                .await?
                .iter()
                .any(|(_, data)| {
                    serde_json::from_str::<Waiting>(data).is_ok_and(|w| {
                        w.reply.stack_id == reply.stack_id
                            && w.reply.logical_resource_id == reply.logical_resource_id
                    })
                });
            if ours {
                return Ok(Some(self.store().load(&holder).await?.deployment));
            }
        }
        Ok(None)
    }

    /// Aborts `d` (this resource's earlier rollout), `reply` answered once it has ended.
    async fn abort_then_answer(
        &self,
        d: &Deployment,
        reply: &Reply,
        expect: Expect,
        version: &str,
        reason: String,
    ) -> Result<Answer, ProviderError> {
        let answer = self.wait_for(&d.id, reply, expect, version).await?;
        self.operations
            .engine()
            .steer(&d.id, Input::Abort { reason })
            .await?;
        self.answer_if_ended(&d.id).await?;
        Ok(answer)
    }

    /// A Create or Update: each alias made, left as it is, or rolled out.
    async fn roll_out(
        &self,
        props: &RolloutProperties,
        old: Option<&RolloutProperties>,
        reply: &Reply,
    ) -> Result<Answer, ProviderError> {
        let spec = match props.spec(&self.metric_timing) {
            Ok(spec) => spec,
            Err(why) => return Ok(Answer::failed(why)),
        };
        let targets = props.targets().expect("read by spec already");
        let version = &targets[0].version;
        // This very request, delivered again: the rollout it started,
        // answered again if it has ended (its waiter is gone once answered).
        let id = reply.deployment_id();
        match self.store().load(&id).await {
            Ok(stored) => {
                return Ok(match outcome(&stored.deployment, Expect::Promoted) {
                    Some(failed) => Answer::Now {
                        failed,
                        version: version.clone(),
                        deployment: id,
                    },
                    None => Answer::Later(id),
                });
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // This resource's earlier rollout still under way: CloudFormation
        // stopped waiting for it. Sent back to the versions it started
        // from (the stack's rollback), it is aborted, and this request
        // answered once it has rolled back.
        if let Some(earlier) = self.own_holder(props, old, reply).await? {
            if sends_back(&earlier, &targets) {
                let reason = format!(
                    "CloudFormation stopped waiting for it, and rolls {} back to {}",
                    reply.logical_resource_id,
                    versions_text(&targets)
                );
                return self
                    .abort_then_answer(&earlier, reply, Expect::RolledBack, version, reason)
                    .await;
            }
            return Ok(Answer::failed(format!(
                "this resource's earlier rollout, Sluice deployment {}, is still under way ({}); it ends by its deadline, {}",
                earlier.id,
                earlier.status_text(),
                earlier
                    .deadline
                    .map_or("unknown".to_owned(), |d| d.to_string())
            )));
        }
        // Each alias: to create, to roll out, or serving its version already.
        let cloud = &self.operations.engine().cloud;
        let mut to_create = Vec::new();
        let mut to_roll_out = Vec::new();
        let mut problems = Vec::new();
        for (m, target) in targets.iter().enumerate() {
            match cloud.read_alias(&target.function, &target.alias).await {
                Ok(None) => to_create.push(target),
                Ok(Some(alias)) if alias.version == target.version && alias.weights.is_empty() => {}
                Ok(Some(_)) => to_roll_out.push(m),
                Err(EngineError::Refused(why)) => problems.push(why),
                Err(e) => return Err(e.into()),
            }
        }
        for target in &to_create {
            if let Some(why) = cloud
                .unusable_function(&target.function, Some(&target.version))
                .await?
            {
                problems.push(format!(
                    "version {} of {} {why}",
                    target.version, target.function
                ));
            }
        }
        // The members to move, as one deployment, checked as the API checks
        // one: by `start`, and first here when an alias is to be created
        // (so a refused request writes nothing) or a problem is named
        // already (so every problem is named at once). Each check reads
        // every member, within the control-plane quota.
        let rollout = (!to_roll_out.is_empty()).then(|| only_members(spec, &to_roll_out));
        if let Some(rollout) = &rollout
            && !(to_create.is_empty() && problems.is_empty())
        {
            match self.operations.check(rollout).await {
                Ok(_) => {}
                Err(OperationError::Invalid(why) | OperationError::Conflict(why)) => {
                    problems.push(why);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !problems.is_empty() {
            return Ok(Answer::failed(problems.join("; ")));
        }
        let rollout = match rollout {
            Some(rollout) => match self.rollout_deadline(props, &id, reply).await? {
                Ok(deadline) => Some((rollout, deadline)),
                Err(why) => return Ok(Answer::failed(why)),
            },
            None => None,
        };
        for target in to_create {
            if let Err(why) = self.create_alias(target).await? {
                return Ok(Answer::failed(why));
            }
        }
        let Some((rollout, deadline)) = rollout else {
            return Ok(Answer::success(version));
        };
        let answer = self.wait_for(&id, reply, Expect::Promoted, version).await?;
        match self.operations.start(&id, rollout, Some(deadline)).await {
            Ok(_) => Ok(answer),
            Err(OperationError::Invalid(why) | OperationError::Conflict(why)) => {
                // Refused because a delivery beside this one started it: its answer is owed.
                if self.store().load(&id).await.is_ok() {
                    return Ok(answer);
                }
                self.store().remove_waiter(&id, &reply.request_id).await?;
                Ok(Answer::failed(why))
            }
            // Passing (the table, the Lambda API): the invocation fails and
            // Lambda delivers it again; the waiter is the same then.
            Err(e) => Err(e.into()),
        }
    }

    /// When request `id`'s rollout is aborted: before CloudFormation stops
    /// waiting for it, by the margin to roll back and answer; the inner
    /// error is CloudFormation's answer when that time has passed.
    async fn rollout_deadline(
        &self,
        props: &RolloutProperties,
        id: &str,
        reply: &Reply,
    ) -> Result<Result<Time, String>, ProviderError> {
        let waits = props
            .service_timeout
            .unwrap_or(DEFAULT_SERVICE_TIMEOUT_SECS);
        let received = self.received_at(id, reply).await?;
        let deadline = received + chrono::Duration::seconds(waits as i64)
            - chrono::Duration::from_std(DEADLINE_MARGIN).expect("short");
        if deadline <= self.now() {
            return Ok(Err(format!(
                "the request, first handled at {received}, is too late: CloudFormation's wait is nearly over"
            )));
        }
        Ok(Ok(deadline))
    }

    /// Creates `target`'s alias on its version (checked usable already);
    /// the inner error is CloudFormation's answer.
    async fn create_alias(&self, target: &Target) -> Result<Result<(), String>, ProviderError> {
        let created = self
            .operations
            .engine()
            .cloud
            .create_alias(
                &target.function,
                &target.alias,
                &target.version,
                "made by Sluice's Custom::SluiceRollout",
            )
            .await?;
        match created {
            Ok(_) => Ok(Ok(())),
            Err(e) => {
                let service = e.as_service_error();
                // Made meanwhile (another delivery of this request): tried again.
                if service.is_some_and(|s| s.is_resource_conflict_exception()) {
                    return Err(ProviderError::Aws(
                        "the alias was created meanwhile; the request is tried again".into(),
                    ));
                }
                match service.map(|s| s.to_string()) {
                    Some(why) => Ok(Err(format!(
                        "CreateAlias {}:{}: {why}",
                        target.function, target.alias
                    ))),
                    None => Err(ProviderError::Aws(format!("CreateAlias: {e}"))),
                }
            }
        }
    }

    /// A Delete: the alias stays; this resource's rollout still under way
    /// is aborted, and the delete answered once it has ended.
    async fn delete(
        &self,
        props: &RolloutProperties,
        reply: &Reply,
    ) -> Result<Answer, ProviderError> {
        let Some(earlier) = self.own_holder(props, None, reply).await? else {
            return Ok(Answer::success(""));
        };
        let reason = format!(
            "the stack {} deleted {}",
            reply.stack_id, reply.logical_resource_id
        );
        self.abort_then_answer(&earlier, reply, Expect::Ended, "", reason)
            .await
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
                    ("!Ref", Y::String(r)) if r == "GreeterWorker.Version" => {
                        json!("arn:aws:lambda:us-east-1:123456789012:function:greeter-worker:3")
                    }
                    ("!Ref", Y::String(r)) if r == "Greeter" => json!("greeter"),
                    ("!Ref", Y::String(r)) if r == "GreeterWorker" => json!("greeter-worker"),
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
        assert_eq!(
            spec.group,
            vec![MemberSpec {
                function: "greeter-worker".into(),
                alias: "live".into(),
                source: VersionSource::Version("3".into()),
            }]
        );
    }

    #[test]
    fn a_version_arn_gives_its_number_and_must_be_the_functions() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:greeter:7";
        let p = RolloutProperties::parse(&props(json!({"Version": arn}))).unwrap();
        assert_eq!(p.targets().unwrap()[0].version, "7");
        let other = "arn:aws:lambda:us-east-1:123456789012:function:other:7";
        let p = RolloutProperties::parse(&props(json!({"Version": other}))).unwrap();
        assert!(
            p.spec(&MetricTiming::default())
                .unwrap_err()
                .contains("not an ARN of a version of greeter")
        );
        let p = RolloutProperties::parse(&props(json!({"Version": 4}))).unwrap();
        assert_eq!(p.targets().unwrap()[0].version, "4");
        let p = RolloutProperties::parse(&props(json!({"Version": "live"}))).unwrap();
        assert!(
            p.spec(&MetricTiming::default())
                .unwrap_err()
                .contains("source.version")
        );
    }

    #[test]
    fn a_group_is_read_member_by_member_and_checked_as_the_api_checks_one() {
        let timing = MetricTiming::default();
        let worker_arn = "arn:aws:lambda:us-east-1:123456789012:function:greeter-worker:2";
        let p = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter-worker", "Alias": "live", "Version": worker_arn},
            {"FunctionName": "greeter-cron", "Alias": "live", "Version": 5},
        ]})))
        .unwrap();
        let spec = p.spec(&timing).unwrap();
        assert_eq!(
            spec.group,
            vec![
                MemberSpec {
                    function: "greeter-worker".into(),
                    alias: "live".into(),
                    source: VersionSource::Version("2".into()),
                },
                MemberSpec {
                    function: "greeter-cron".into(),
                    alias: "live".into(),
                    source: VersionSource::Version("5".into()),
                },
            ]
        );
        assert_eq!(
            p.physical_id(),
            "greeter:live",
            "the resource is its own alias"
        );

        // A misspelt member field is refused by name, never dropped.
        let typo = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter-worker", "Alias": "live", "Versoin": 2},
        ]})))
        .unwrap_err();
        assert!(
            typo.contains("Group[0]") && typo.contains("unknown field `Versoin`"),
            "{typo}"
        );
        // Every bad member named at once: an ARN of another function, an
        // alias twice, a bad name.
        let bad = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter-worker", "Alias": "live",
             "Version": "arn:aws:lambda:us-east-1:123456789012:function:other:2"},
            {"FunctionName": "greeter-cron", "Alias": "live",
             "Version": "arn:aws:lambda:us-east-1:123456789012:function:greeter:2"},
        ]})))
        .unwrap()
        .spec(&timing)
        .unwrap_err();
        assert!(
            bad.contains("Group[0].Version: arn:aws:lambda:us-east-1:123456789012:function:other:2 is not an ARN of a version of greeter-worker")
                && bad.contains("Group[1].Version")
                && bad.contains("of greeter-cron"),
            "{bad}"
        );
        let twice = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter", "Alias": "live", "Version": 4},
        ]})))
        .unwrap()
        .spec(&timing)
        .unwrap_err();
        assert!(
            twice.contains("greeter:live is in the group twice"),
            "{twice}"
        );
        let members: Vec<Value> = (0..20)
            .map(|i| json!({"FunctionName": format!("f{i}"), "Alias": "live", "Version": 1}))
            .collect();
        let too_many = RolloutProperties::parse(&props(json!({ "Group": members })))
            .unwrap()
            .spec(&timing)
            .unwrap_err();
        assert!(too_many.contains("21 functions"), "{too_many}");
    }

    #[test]
    fn a_rollout_moves_only_the_members_that_need_it() {
        let p = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter-worker", "Alias": "live", "Version": 2},
            {"FunctionName": "greeter-cron", "Alias": "live", "Version": 5},
        ]})))
        .unwrap();
        let spec = p.spec(&MetricTiming::default()).unwrap();
        let moving = only_members(spec.clone(), &[1, 2]);
        assert_eq!(
            (moving.function.as_str(), moving.source.clone()),
            ("greeter-worker", VersionSource::Version("2".into()))
        );
        assert_eq!(moving.group.len(), 1);
        assert_eq!(moving.group[0].function, "greeter-cron");
        assert_eq!(
            (moving.config, moving.pre_traffic_hook),
            (spec.config.clone(), spec.pre_traffic_hook.clone())
        );
        assert_eq!(only_members(spec.clone(), &[0, 1, 2]), spec);
    }

    #[test]
    fn a_stack_rollback_is_one_sending_every_member_back() {
        let p = RolloutProperties::parse(&props(json!({"Group": [
            {"FunctionName": "greeter-worker", "Alias": "live", "Version": 2},
        ]})))
        .unwrap();
        let spec = p.spec(&MetricTiming::default()).unwrap();
        let (mut earlier, _) = Deployment::create("cfn-1", spec, Time::default());
        earlier.from_version = Some("3".into());
        earlier.group = vec![crate::domain::deployment::MemberState {
            from_version: Some("1".into()),
            ..Default::default()
        }];
        let target = |function: &str, version: &str| Target {
            function: function.into(),
            alias: "live".into(),
            version: version.into(),
        };
        let back = [target("greeter", "3"), target("greeter-worker", "1")];
        assert!(sends_back(&earlier, &back));
        assert_eq!(
            versions_text(&back),
            "greeter:live on 3, greeter-worker:live on 1"
        );
        // One member sent elsewhere: not a rollback of this rollout.
        assert!(!sends_back(
            &earlier,
            &[target("greeter", "3"), target("greeter-worker", "2")]
        ));
        // A member the request no longer names (the old properties had a
        // smaller group) is not wanted moved either.
        assert!(sends_back(&earlier, &[target("greeter", "3")]));
        assert!(sends_back(&earlier, &[target("other", "3")]));
        assert_eq!(versions_text(&[target("greeter", "3")]), "version 3");
        // Not prepared yet: it has moved nothing, whatever it is asked.
        let (unprepared, _) = Deployment::create(
            "cfn-2",
            p.spec(&MetricTiming::default()).unwrap(),
            Time::default(),
        );
        assert!(sends_back(&unprepared, &[target("greeter", "9")]));
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
            why.contains("takes at least 1860 s") && why.contains("CloudFormation waits 1800 s"),
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
    /// the same body, and no content type (the URL is signed without one);
    /// a URL that refuses it for good (an expired one) is not tried again.
    #[tokio::test]
    async fn an_answer_is_tried_again_while_it_may_pass() {
        use std::sync::{Arc, Mutex};
        /// Each PUT: its path, content type and body.
        type Puts = Arc<Mutex<Vec<(String, Option<String>, Vec<u8>)>>>;
        let seen: Puts = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(axum::routing::put(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let mut seen = recorded.lock().unwrap();
                    let content_type = headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.push((uri.path().to_owned(), content_type, body.to_vec()));
                    let tries = seen.iter().filter(|(p, ..)| p == uri.path()).count();
                    match uri.path() {
                        "/flaky" if tries == 1 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "/flaky" => axum::http::StatusCode::OK,
                        "/expired" => axum::http::StatusCode::FORBIDDEN,
                        _ => axum::http::StatusCode::BAD_GATEWAY,
                    }
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let body = b"{\"Status\":\"SUCCESS\"}".to_vec();
        let patience = Duration::from_secs(2);
        put_answer(&http, &format!("{base}/flaky"), body.clone(), patience)
            .await
            .unwrap();
        put_answer(&http, &format!("{base}/expired"), body.clone(), patience)
            .await
            .unwrap();
        let why = put_answer(&http, &format!("{base}/down"), body.clone(), patience)
            .await
            .unwrap_err();
        assert!(why.contains("502"), "{why}");
        let seen = seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen.iter().map(|(p, ..)| p.as_str()).collect();
        assert_eq!(paths, ["/flaky", "/flaky", "/expired", "/down", "/down"]);
        assert!(
            seen.iter()
                .all(|(_, content_type, sent)| content_type.is_none() && *sent == body)
        );
    }

    fn reply() -> Reply {
        Reply {
            response_url: "https://example/put".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1".into(),
            request_id: "r-1".into(),
            logical_resource_id: "GreeterRollout".into(),
            physical_resource_id: "greeter:prod".into(),
            failed_physical_resource_id: "greeter:live".into(),
        }
    }

    #[test]
    fn an_answer_copies_the_request_and_fits_cloudformations_limit() {
        // Quotes and control characters grow as JSON: cut until it fits.
        let long = "\"\u{1}".repeat(3000);
        let body = reply().body(Some(&long), "", "");
        assert!(body.len() <= 4096, "{} bytes", body.len());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["Status"], "FAILED");
        assert_eq!(body["RequestId"], "r-1");
        assert!(body["Reason"].as_str().unwrap().ends_with('…'));
        assert_eq!(
            body["PhysicalResourceId"], "greeter:live",
            "a failure names the resource as it was"
        );
        let ok: Value = serde_json::from_slice(&reply().body(None, "3", "cfn-1")).unwrap();
        assert_eq!(
            (
                ok["Status"].clone(),
                ok["PhysicalResourceId"].clone(),
                ok["Data"].clone()
            ),
            (
                json!("SUCCESS"),
                json!("greeter:prod"),
                json!({"Version": "3", "DeploymentId": "cfn-1"})
            )
        );
    }

    #[test]
    fn each_waiter_is_answered_for_what_it_expects() {
        let (d, _) = Deployment::create(
            "cfn-1",
            RolloutProperties::parse(&props(json!({})))
                .unwrap()
                .spec(&MetricTiming::default())
                .unwrap(),
            chrono::Utc::now(),
        );
        let ended = |phase: Phase| Deployment { phase, ..d.clone() };
        let rolled_back = ended(Phase::RolledBack {
            reason: "alarm x is in ALARM".into(),
        });
        let promoted = ended(Phase::Promoted);
        let status = |expect, d: &Deployment| {
            let waiting = Waiting {
                reply: reply(),
                expect,
                version: "3".into(),
                received_at: chrono::Utc::now(),
            };
            let body: Value = serde_json::from_slice(&waiting.answer(d)?).unwrap();
            Some((
                body["Status"].as_str().unwrap().to_owned(),
                body["Reason"].as_str().unwrap_or("").to_owned(),
            ))
        };
        assert_eq!(status(Expect::Promoted, &promoted).unwrap().0, "SUCCESS");
        assert_eq!(
            status(Expect::Promoted, &rolled_back).unwrap(),
            (
                "FAILED".into(),
                "Sluice deployment cfn-1: alarm x is in ALARM".into()
            )
        );
        assert_eq!(
            status(Expect::RolledBack, &rolled_back).unwrap().0,
            "SUCCESS"
        );
        assert!(
            status(Expect::RolledBack, &promoted)
                .unwrap()
                .1
                .contains("promoted before its abort")
        );
        assert_eq!(status(Expect::Ended, &promoted).unwrap().0, "SUCCESS");
        assert_eq!(status(Expect::Ended, &d), None, "not ended: no answer yet");
    }
}
