//! What an operator can do, for the `sluice` CLI and the `api` function alike:
//! see pipelines, executions and deployments, and steer them. An input the
//! current state does not take is refused with the reason, never ignored.

use crate::clock::Clock;
use crate::domain::deployment::{
    Deployment, DeploymentSpec, Event, Input as DeploymentInput, MAX_ASYNC_HOOK_SECS, OnBusy,
    VersionSource, events_of, token_digest,
};
use crate::domain::execution::{
    ActionRef, ActionState, Execution, ExecutionEvent, Input as ExecutionInput, StopMode,
};
use crate::domain::hooks::{HookResponse, HookStatus};
use crate::domain::limits;
use crate::domain::pipeline::{ActionKind, PipelineDefinition};
use crate::engine::token_deployment;
use crate::orchestrator::Orchestrator;
use crate::ports::{Actions, Cloud, EngineError, OrchestratorError};
use crate::ports::{Deployments, Executions};
use crate::settings::Settings;
use crate::store::keys::Lock;
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::time::Duration;

/// How long an operator's steer of a deployment waits for its shifter.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// A deployment request that was accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    pub deployment: String,
    /// The deployment holding the alias, which this one waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// A well-formed request the current state refuses.
    #[error("{0}")]
    Conflict(String),
    /// A request that cannot succeed as written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
}

fn not_found(what: &'static str, id: &str) -> impl FnOnce(StoreError) -> OperationError {
    let id = id.to_owned();
    move |e| match e {
        StoreError::NotFound(_) => OperationError::NotFound { what, id },
        other => OperationError::Store(other),
    }
}

/// Pipelines, the executions still running, and the active deployments.
#[derive(Debug, Serialize)]
pub struct Status {
    pub pipelines: Vec<String>,
    pub executions: Vec<Execution>,
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Serialize)]
pub struct DeploymentView {
    pub deployment: Deployment,
    pub timeline: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct ExecutionView {
    pub execution: Execution,
    pub timeline: Vec<ExecutionEvent>,
}

/// What applying a definition did; `diff` is unified, stored → new.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub pipeline: String,
    pub changed: bool,
    pub applied: bool,
    pub diff: String,
}

/// An operator's steer of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentAction {
    /// Skip the remaining waits (the gates still run).
    Promote,
    Pause,
    Resume,
    /// Put 100% back on the old version.
    Abort {
        reason: String,
    },
    /// Deploy the same thing again, as a new deployment.
    Retry,
}

impl DeploymentAction {
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentAction::Promote => "promote",
            DeploymentAction::Pause => "pause",
            DeploymentAction::Resume => "resume",
            DeploymentAction::Abort { .. } => "abort",
            DeploymentAction::Retry => "retry",
        }
    }
}

/// What an asynchronous hook says by its callback token.
#[derive(Debug, Clone, PartialEq)]
pub enum HookCallback {
    /// Its verdict: the gate passes or fails with it.
    Report(HookResponse),
    /// It is still at work: its deadline moves a timeout on.
    Heartbeat,
}

/// An operator's steer of an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionAction {
    /// Answer the approval the execution waits on.
    Approval {
        approved: bool,
        by: String,
        comment: String,
    },
    Stop {
        mode: StopMode,
        reason: String,
    },
    /// Run the failed stage again: its failed actions only, or all of them.
    RetryStage {
        failed_only: bool,
    },
}

impl ExecutionAction {
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionAction::Approval { approved: true, .. } => "approve",
            ExecutionAction::Approval {
                approved: false, ..
            } => "reject",
            ExecutionAction::Stop { .. } => "stop",
            ExecutionAction::RetryStage { .. } => "retry-stage",
        }
    }
}

/// A new deployment id: short enough to type, random enough not to collide.
pub fn new_deployment_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[derive(Clone)]
pub struct Operations {
    orchestrator: Orchestrator,
}

impl Operations {
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Operations::new(Orchestrator::from_settings(config, settings))
    }

    pub fn new(orchestrator: Orchestrator) -> Self {
        Operations { orchestrator }
    }

    pub fn store(&self) -> &Store {
        &self.orchestrator.engine.store
    }

    pub fn engine(&self) -> &crate::engine::Engine {
        &self.orchestrator.engine
    }

    pub async fn status(&self) -> Result<Status, OperationError> {
        let store = self.store();
        let pipelines = store.definitions().await?.into_iter().map(|d| d.name);
        let mut executions = Vec::new();
        for id in store.running_executions_all().await? {
            executions.push(store.load_execution(&id).await?.execution);
        }
        let mut deployments = Vec::new();
        for id in store.active().await? {
            deployments.push(store.load(&id).await?.deployment);
        }
        Ok(Status {
            pipelines: pipelines.collect(),
            executions,
            deployments,
        })
    }

    /// Checks a deployment request against AWS as it is made (the function,
    /// its alias serving one version, the version or artifact, each hook:
    /// one cheap read each), then starts it. Nothing is written for a
    /// request that cannot start; a busy alias refuses or queues as asked.
    pub async fn deploy(&self, spec: DeploymentSpec) -> Result<Submitted, OperationError> {
        self.start(&new_deployment_id(), spec, None).await
    }

    /// `deploy` as `id`, aborted if still under way at `deadline`.
    pub async fn start(
        &self,
        id: &str,
        spec: DeploymentSpec,
        deadline: Option<crate::domain::deployment::Time>,
    ) -> Result<Submitted, OperationError> {
        let holders = self.check(&spec).await?;
        let (mut d, commands) = Deployment::create(id, spec, self.orchestrator.engine.clock.now());
        d.deadline = deadline;
        self.store().create(&d, &events_of(&commands)).await?;
        Ok(Submitted {
            deployment: id.to_owned(),
            queued_behind: holders.into_iter().flatten().next(),
        })
    }

    /// Every check `start` makes before it writes anything, each problem
    /// named; returns each member's alias's holder (another live
    /// deployment), if any.
    pub async fn check(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<Option<String>>, OperationError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(OperationError::Invalid(problems.join("; ")));
        }
        // Each member's alias: held by another deployment, or free.
        let mut holders = Vec::new();
        for (function, alias) in spec.targets() {
            let lock = Lock::alias(function, alias);
            holders.push(self.orchestrator.engine.live_holder(&lock).await?);
        }
        if let OnBusy::Refuse = spec.on_busy
            && let Some((m, holder)) = holders
                .iter()
                .enumerate()
                .find_map(|(m, h)| h.as_ref().map(|h| (m, h)))
        {
            let (function, alias) = spec.targets().nth(m).expect("a member");
            return Err(OperationError::Conflict(format!(
                "{function}:{alias} is busy with deployment {holder}, and this one was asked to refuse if busy"
            )));
        }
        let mut problems = Vec::new();
        for (m, holder) in holders.iter().enumerate() {
            problems.extend(self.target_problems(spec, m, holder.is_some()).await?);
        }
        problems.extend(self.hook_problems(spec).await?);
        if !problems.is_empty() {
            return Err(OperationError::Invalid(problems.join("; ")));
        }
        Ok(holders)
    }

    /// What is wrong with member `m` of the request (0: its own function)
    /// as AWS has it, each named: the function, its alias serving one
    /// version, the version or artifact. `busy`: another deployment holds
    /// the alias, so it may be split now; that one leaves it whole before
    /// this one starts.
    async fn target_problems(
        &self,
        spec: &DeploymentSpec,
        m: usize,
        busy: bool,
    ) -> Result<Vec<String>, OperationError> {
        let cloud = &self.orchestrator.engine.cloud;
        let (function, alias) = spec.targets().nth(m).expect("a member");
        if let Some(why) = cloud.unusable_function(function, None).await? {
            return Ok(vec![format!("function {function} {why}")]);
        }
        let mut problems = Vec::new();
        match cloud.read_alias(function, alias).await {
            Ok(Some(a)) if !a.weights.is_empty() && !busy => problems.push(format!(
                "alias {function}:{alias} is split between versions; it must serve one version to start"
            )),
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("alias {function}:{alias} does not exist")),
            Err(EngineError::Refused(why)) => problems.push(why),
            Err(e) => return Err(e.into()),
        }
        match spec.source_of(m) {
            VersionSource::Version(v) => {
                if let Some(why) = cloud.unusable_function(function, Some(v)).await? {
                    problems.push(format!("version {v} of {function} {why}"));
                }
            }
            VersionSource::Artifact {
                bucket,
                key,
                object_version,
            } => {
                let actions = &self.orchestrator.actions;
                if actions.head_object(bucket, key).await?.is_none() {
                    problems.push(format!("artifact s3://{bucket}/{key} does not exist"));
                } else if let Some(version) = object_version
                    && !actions.has_object_version(bucket, key, version).await?
                {
                    problems.push(format!(
                        "version {version} of artifact s3://{bucket}/{key} does not exist"
                    ));
                }
            }
        }
        Ok(problems)
    }

    /// What is wrong with the request's hooks: each must be a function Sluice may invoke.
    async fn hook_problems(&self, spec: &DeploymentSpec) -> Result<Vec<String>, OperationError> {
        let cloud = &self.orchestrator.engine.cloud;
        let mut problems = Vec::new();
        for hook in [&spec.pre_traffic_hook, &spec.post_traffic_hook]
            .into_iter()
            .flatten()
        {
            if let Some(why) = cloud.unusable_function(hook, None).await? {
                problems.push(format!(
                    "hook {hook} {why} (Sluice may invoke its own hooks and the functions ManagedFunctions names)"
                ));
            }
        }
        Ok(problems)
    }

    pub async fn deployment(&self, id: &str) -> Result<DeploymentView, OperationError> {
        let deployment = self
            .store()
            .load(id)
            .await
            .map_err(not_found("deployment", id))?
            .deployment;
        let timeline = self.store().events(id).await?;
        Ok(DeploymentView {
            deployment,
            timeline,
        })
    }

    /// Applies an operator's steer; one that changes nothing is a conflict.
    pub async fn steer_deployment(
        &self,
        id: &str,
        action: DeploymentAction,
    ) -> Result<Deployment, OperationError> {
        if let DeploymentAction::Abort { reason } = &action {
            limits::text("reason", reason).map_err(OperationError::Invalid)?;
        }
        let before = self
            .store()
            .load(id)
            .await
            .map_err(not_found("deployment", id))?;
        let what = action.name();
        let refused = |why: String| {
            Err(OperationError::Conflict(format!(
                "cannot {what} deployment {id}: {why}"
            )))
        };
        if let (DeploymentAction::Pause, false) = (&action, before.deployment.has_bake_ahead()) {
            return refused(format!(
                "it has no bake left to pause at ({})",
                before.deployment.status_text()
            ));
        }
        let retry = matches!(action, DeploymentAction::Retry);
        let input = match action {
            DeploymentAction::Promote => DeploymentInput::Promote,
            DeploymentAction::Pause => DeploymentInput::Pause,
            DeploymentAction::Resume => DeploymentInput::Resume,
            DeploymentAction::Abort { reason } => DeploymentInput::Abort { reason },
            DeploymentAction::Retry => DeploymentInput::Retry {
                new_id: new_deployment_id(),
            },
        };
        let steered = self.orchestrator.engine.steer(id, input).await?;
        if !steered.changed {
            let d = &steered.state;
            return match (&d.retried_as, retry) {
                (Some(new_id), true) => refused(format!("it was already retried as {new_id}")),
                _ => refused(format!("it is {}", d.status_text())),
            };
        }
        if !steered.woken {
            return Ok(steered.state);
        }
        self.settled(steered.state).await
    }

    /// An asynchronous hook's report or heartbeat. A token that no gate
    /// waits for (unknown, forged, used, or its gate over) is not found;
    /// one whose deadline has passed is refused. Either way nothing changes.
    pub async fn hook_callback(
        &self,
        token: &str,
        callback: HookCallback,
    ) -> Result<Deployment, OperationError> {
        let unknown = || OperationError::NotFound {
            what: "waiting hook for this callback token",
            id: "(unknown, used, or its gate is over)".into(),
        };
        let id = token_deployment(token).ok_or_else(unknown)?;
        let stored = match self.store().load(id).await {
            Ok(stored) => stored,
            Err(StoreError::NotFound(_)) => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        // Digests, not tokens, are compared: what a timing could tell of
        // a digest says nothing of the token that would match it.
        let digest = token_digest(token);
        if stored
            .deployment
            .waiting_hook()
            .is_none_or(|w| w.token_sha256 != digest)
        {
            return Err(unknown());
        }
        let heartbeat = matches!(callback, HookCallback::Heartbeat);
        let input = match callback {
            // The hook's own words, only shown: cut rather than refused, so
            // a long failure message still fails the gate.
            HookCallback::Report(answer) => DeploymentInput::HookReported {
                token: token.to_owned(),
                passed: answer.status == HookStatus::Succeeded,
                reason: limits::shortened(&answer.summary()),
            },
            HookCallback::Heartbeat => DeploymentInput::HookHeartbeat {
                token: token.to_owned(),
            },
        };
        let steered = self.orchestrator.engine.steer(id, input).await?;
        if steered.changed {
            return Ok(steered.state);
        }
        let now = self.orchestrator.engine.clock.now();
        let waiting = steered
            .state
            .waiting_hook()
            .filter(|w| w.token_sha256 == digest && now < w.deadline);
        Err(OperationError::Conflict(match waiting {
            Some(w) if heartbeat => format!(
                "deployment {id}'s hook has had the {MAX_ASYNC_HOOK_SECS} s a hook may take in all: its deadline stays {}, by which it must report",
                w.deadline
            ),
            _ => format!(
                "deployment {id}'s gate no longer takes this token: its deadline passed ({})",
                steered.state.status_text()
            ),
        }))
    }

    /// The deployment once its shifter has run what a steer asked for (a
    /// rollback, a shift), or as saved when that takes longer than
    /// `SETTLE_WAIT` (a gate under way): the answer comes well inside the
    /// api function's timeout, and no operator's call runs a gate itself.
    async fn settled(&self, steered: Deployment) -> Result<Deployment, OperationError> {
        let clock = &self.orchestrator.engine.clock;
        let until = clock.now() + chrono::Duration::from_std(SETTLE_WAIT).expect("a short wait");
        let mut d = steered;
        let mut pause = Duration::from_millis(50);
        while d.needs_worker(clock.now()) && clock.now() < until {
            clock.sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            d = self.store().load(&d.id).await?.deployment;
        }
        Ok(d)
    }

    pub async fn execution(&self, id: &str) -> Result<ExecutionView, OperationError> {
        let execution = self
            .store()
            .load_execution(id)
            .await
            .map_err(not_found("execution", id))?
            .execution;
        let timeline = self.store().execution_events(id).await?;
        Ok(ExecutionView {
            execution,
            timeline,
        })
    }

    /// Applies an operator's steer; one that changes nothing is a conflict.
    pub async fn steer_execution(
        &self,
        id: &str,
        action: ExecutionAction,
    ) -> Result<Execution, OperationError> {
        match &action {
            ExecutionAction::Approval { comment, .. } => limits::text("comment", comment),
            ExecutionAction::Stop { reason, .. } => limits::text("reason", reason),
            ExecutionAction::RetryStage { .. } => Ok(()),
        }
        .map_err(OperationError::Invalid)?;
        let before = self
            .store()
            .load_execution(id)
            .await
            .map_err(not_found("execution", id))?
            .execution;
        let what = action.name();
        let input = match action {
            ExecutionAction::Approval {
                approved,
                by,
                comment,
            } => ExecutionInput::Approval {
                at: waiting_approval(&before).ok_or_else(|| {
                    OperationError::Conflict(format!(
                        "execution {id} is not waiting for an approval (it is {} in stage {})",
                        before.status,
                        before.stage_name()
                    ))
                })?,
                approved,
                by,
                comment,
            },
            ExecutionAction::Stop { mode, reason } => ExecutionInput::Stop { mode, reason },
            ExecutionAction::RetryStage { failed_only } => {
                ExecutionInput::RetryStage { failed_only }
            }
        };
        let steered = self.orchestrator.steer(id, input).await?;
        if !steered.changed {
            let e = &steered.state;
            return Err(OperationError::Conflict(format!(
                "cannot {what} execution {id}: it is {} in stage {}",
                e.status,
                e.stage_name()
            )));
        }
        Ok(steered.state)
    }

    /// Validates a definition (YAML or JSON), diffs it against the stored one
    /// and saves it unless `dry_run`. With `name`, the definition must be
    /// named so: a request for one pipeline never writes another.
    pub async fn apply_pipeline(
        &self,
        text: &str,
        name: Option<&str>,
        dry_run: bool,
    ) -> Result<Applied, OperationError> {
        limits::bytes("the definition", text.len(), limits::MAX_DEFINITION_BYTES)
            .map_err(OperationError::Invalid)?;
        let definition = PipelineDefinition::parse(text).map_err(|invalid| {
            let lines: Vec<String> = invalid.0.iter().map(|p| p.to_string()).collect();
            OperationError::Invalid(format!("not a valid pipeline: {}", lines.join("; ")))
        })?;
        if let Some(name) = name.filter(|n| *n != definition.name) {
            return Err(OperationError::Invalid(format!(
                "the definition is named {:?}, not {name:?}",
                definition.name
            )));
        }
        let render = |d: &PipelineDefinition| {
            serde_json::to_string_pretty(d).expect("definitions serialise") + "\n"
        };
        let old = self
            .store()
            .definition(&definition.name)
            .await?
            .as_ref()
            .map(render)
            .unwrap_or_default();
        let new = render(&definition);
        let diff = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .header("stored", "new")
            .to_string();
        let changed = old != new;
        if changed && !dry_run {
            self.store()
                .put_definition(&definition, self.orchestrator.engine.clock.now())
                .await?;
        }
        Ok(Applied {
            pipeline: definition.name,
            changed,
            applied: changed && !dry_run,
            diff,
        })
    }

    pub async fn pipelines(&self) -> Result<Vec<String>, OperationError> {
        let all = self.store().definitions().await?;
        Ok(all.into_iter().map(|d| d.name).collect())
    }

    pub async fn pipeline(&self, name: &str) -> Result<PipelineDefinition, OperationError> {
        self.store()
            .definition(name)
            .await?
            .ok_or_else(|| OperationError::NotFound {
                what: "pipeline",
                id: name.to_owned(),
            })
    }
}

/// The approval action an execution waits on, if any.
fn waiting_approval(e: &Execution) -> Option<ActionRef> {
    let stage = e.definition.stages.get(e.stage)?;
    e.actions.iter().enumerate().find_map(|(i, run)| {
        let waiting = matches!(run.state, ActionState::Running { .. })
            && matches!(stage.actions.get(i)?.kind, ActionKind::Approval(_));
        waiting.then_some(ActionRef {
            stage: e.stage,
            action: i,
            attempt: run.attempt,
        })
    })
}
