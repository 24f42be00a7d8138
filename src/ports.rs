//! The ports: what the engine and the orchestrator need from the world,
//! as traits, with the values they pass and the errors they return. The
//! table's items (deployments, locks, executions: `Store` implements them),
//! the cloud (aliases, versions, alarms, hooks, the shifter's queue) and the
//! outside world of pipeline actions (Lambda, S3, CodePipeline, the
//! orchestrator's queue); the clock is `crate::clock`'s. The functions plug
//! in DynamoDB and the AWS SDK (`crate::aws`); the deterministic simulation
//! (tests/simulation) plugs in in-memory models with the same conditional
//! semantics.

use crate::domain::analysis::Counts;
use crate::domain::deployment::{AliasLeft, Command, Deployment, Event, Time};
use crate::domain::execution::{Execution, ExecutionEvent};
use crate::domain::hooks::HookRequest;
use crate::events::{HandedOver, PipelineTimer, TimerMessage};
use crate::store::keys::{Key, Lock};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A transient AWS failure: the phase is saved and will be retried.
    #[error("{0}")]
    Aws(String),
    /// Sluice's share of the control-plane quota is spoken for `ahead`:
    /// transient, retried once it frees.
    #[error("{what}: the Lambda control-plane budget is spoken for {} ms ahead", .ahead.as_millis())]
    OutOfBudget { what: String, ahead: Duration },
    /// AWS refused the request and would refuse it again (a denied
    /// permission, a refused parameter): the caller decides what fails.
    #[error("{0}")]
    Refused(String),
    #[error("stopped before {0} by fault injection")]
    Injected(String),
    #[error("event: {0}")]
    Event(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A transient AWS failure: the saved state is retried.
    #[error("{0}")]
    Aws(String),
    #[error("event: {0}")]
    Event(String),
}

/// What the table's ports return.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else saved first: reload and decide again.
    #[error("{0} was changed by another worker")]
    Conflict(Key),
    #[error("{0} already exists")]
    AlreadyExists(Key),
    #[error("{0} not found")]
    NotFound(Key),
    #[error("stored {key} cannot be read: {detail}")]
    Corrupt { key: Key, detail: String },
    #[error("DynamoDB: {0}")]
    Aws(String),
}

/// A deployment as loaded, with the version to save against.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub deployment: Deployment,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Taken; with the alias as the last deployment to hold the lock left
    /// it, when that one knew (`Deployment::alias_left`).
    Acquired {
        left: Option<AliasLeft>,
    },
    Busy {
        holder: String,
    },
}

/// An execution as loaded, with the version to save against.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredExecution {
    pub execution: Execution,
    pub version: u64,
}

/// What recording a push's execution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionStart {
    Started,
    /// This pipeline already runs (or ran) this commit: the id of that execution.
    AlreadyStarted(String),
}

/// An error that carries a transient AWS failure as text.
pub trait AwsFailure {
    fn aws_failure(text: String) -> Self;
}

/// A transient AWS failure of `call`, with what the SDK said.
pub fn aws<E: AwsFailure>(call: &str, e: impl std::fmt::Debug) -> E {
    E::aws_failure(format!("{call}: {e:?}"))
}

impl AwsFailure for EngineError {
    fn aws_failure(text: String) -> Self {
        EngineError::Aws(text)
    }
}

impl AwsFailure for OrchestratorError {
    fn aws_failure(text: String) -> Self {
        OrchestratorError::Aws(text)
    }
}

impl AwsFailure for StoreError {
    fn aws_failure(text: String) -> Self {
        StoreError::Aws(text)
    }
}

/// The deployment and lock items of the table. Every write is conditional:
/// `save` on the version loaded, `create` on the id being free,
/// `acquire_lock` on the lock being free or already ours.
pub trait Deployments: Send + Sync {
    fn create(
        &self,
        d: &Deployment,
        events: &[Event],
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send;
    fn save(
        &self,
        d: &Deployment,
        expected: u64,
        events: &[Event],
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send;
    /// A consistent read.
    fn load(&self, id: &str) -> impl Future<Output = Result<Stored, StoreError>> + Send;
    /// Ids of every unfinished deployment.
    fn active(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Unfinished deployments that watch `alarm`, as the active index has
    /// them: maybe a moment behind, so a save on one conflicts and is
    /// decided again on what is saved.
    fn watching(&self, alarm: &str)
    -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send;
    /// Ids of unfinished deployments due by `now`.
    fn due(&self, now: Time) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    fn stuck(&self, now: Time) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Deployments queued for an alias, longest waiting first.
    fn queued_for(
        &self,
        function: &str,
        alias: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    fn acquire_lock(
        &self,
        lock: &Lock,
        id: &str,
        now: Time,
    ) -> impl Future<Output = Result<LockOutcome, StoreError>> + Send;
    fn lock_holder(
        &self,
        lock: &Lock,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Releases the lock if `id` holds it, keeping how it `left` the alias
    /// for the next holder (`None`: not known); otherwise does nothing.
    fn release_lock(
        &self,
        lock: &Lock,
        id: &str,
        left: Option<&AliasLeft>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Someone waits for deployment `id` to end (a CloudFormation request,
    /// `custom_resource`): `data` to tell it, kept under `waiter` until
    /// removed, or until `until` when no one waits any more.
    fn add_waiter(
        &self,
        id: &str,
        waiter: &str,
        data: &str,
        until: Time,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The waiters of deployment `id`: (waiter, data).
    fn waiters(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
    fn remove_waiter(
        &self,
        id: &str,
        waiter: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Execution items, next to the deployments. Every write is conditional, as
/// for deployments; `start_execution` also claims the (pipeline, commit).
pub trait Executions: Deployments {
    /// Records a new execution, unless its commit already started one.
    fn start_execution(
        &self,
        e: &Execution,
        events: &[ExecutionEvent],
    ) -> impl Future<Output = Result<ExecutionStart, StoreError>> + Send;
    fn load_execution(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;
    fn save_execution(
        &self,
        e: &Execution,
        expected: u64,
        events: &[ExecutionEvent],
    ) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;
    fn due_executions(
        &self,
        now: Time,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// A pipeline's executions in progress or not started yet.
    fn live_executions(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Every execution not finished for good.
    fn running_executions_all(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// A pipeline's queued executions, longest waiting first.
    fn queued_executions(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// What an analysis reads: the calls through `function:alias` that each
/// version served over the whole periods `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    pub function: String,
    pub alias: String,
    pub new_version: String,
    pub old_version: String,
    pub from: Time,
    pub to: Time,
    pub period_secs: u32,
    /// Also the new version's p99 duration over the whole window.
    pub p99: bool,
}

/// An alias as read: what it serves and the revision a write must name.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasState {
    pub version: String,
    /// Extra versions and their weights (0 to 1); empty when whole.
    pub weights: HashMap<String, f64>,
    pub revision: Option<String>,
    /// The alias's ARN, as Lambda gives it.
    pub arn: Option<String>,
}

/// Lambda keeps weights as doubles: a routing read back is compared to the
/// one written within this.
const WEIGHT_TOLERANCE: f64 = 1e-9;

impl AliasState {
    /// Whether the alias sends traffic as `primary` plus `weights` would.
    pub fn routes(&self, primary: &str, weights: &HashMap<String, f64>) -> bool {
        let nonzero = |w: &HashMap<String, f64>| w.values().filter(|f| **f > 0.0).count();
        self.version == primary
            && nonzero(&self.weights) == nonzero(weights)
            && weights.iter().all(|(version, fraction)| {
                *fraction <= 0.0
                    || self
                        .weights
                        .get(version)
                        .is_some_and(|f| (f - fraction).abs() < WEIGHT_TOLERANCE)
            })
    }
}

/// As a timeline says it: "version 1", "version 1 with 30% on version 2".
impl std::fmt::Display for AliasState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version {}", self.version)?;
        let mut extra: Vec<_> = self.weights.iter().filter(|(_, w)| **w > 0.0).collect();
        extra.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (version, weight)) in extra.into_iter().enumerate() {
            let joint = if i == 0 { " with" } else { " and" };
            let percent = (weight * 100.0 * 1e6).round() / 1e6;
            write!(f, "{joint} {percent}% on version {version}")?;
        }
        Ok(())
    }
}

/// How a conditional alias write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasWrite {
    /// The alias is now at `revision`.
    Written { revision: Option<String> },
    /// Someone wrote the alias since the revision named. `after_retry`:
    /// this was not the first attempt sent (an earlier one went unanswered
    /// or was refused), so an earlier attempt may have landed.
    Stale { after_retry: bool },
}

/// Whether a version can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// This version exists and is `Active`.
    Ready(String),
    /// It cannot be used, and trying again will not change that: why.
    Refused(String),
}

/// How a synchronous invocation ended, short of throttling (an `Err`,
/// retried later): hooks and pipeline invoke actions alike.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// The function ran and answered this payload.
    Answered(Vec<u8>),
    /// The function ran and raised this error message.
    Raised(String),
    /// The function could not be run (missing, denied, timed out).
    NotRun(String),
}

/// Where a worker is about to act on the cloud: the checkpoints where
/// tests inject faults through the port (`Cloud::checkpoint`).
#[derive(Debug)]
pub enum FaultPoint<'a> {
    /// Before `deployment`'s worker executes a command.
    Before {
        deployment: &'a str,
        command: &'a Command,
    },
    /// In an alias update of `deployment`: the write, conditional on the
    /// revision Sluice last left, is about to be sent.
    AliasWrite { deployment: &'a str },
}

/// Lambda, CloudWatch and the timer queue, as the engine uses them.
pub trait Cloud: Send + Sync {
    /// `None` if the alias does not exist.
    fn read_alias(
        &self,
        function: &str,
        alias: &str,
    ) -> impl Future<Output = Result<Option<AliasState>, EngineError>> + Send;
    /// Sets the alias if its revision is still `revision`.
    fn write_alias(
        &self,
        function: &str,
        alias: &str,
        primary: &str,
        weights: &HashMap<String, f64>,
        revision: Option<&str>,
    ) -> impl Future<Output = Result<AliasWrite, EngineError>> + Send;
    /// The version an alias serves as its primary, by `GetFunction` (outside
    /// the control-plane quota); `None` if the alias does not exist. It
    /// cannot tell a split alias from a whole one.
    fn alias_version(
        &self,
        function: &str,
        alias: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    /// Whether `version` exists and can be invoked, once it is `Active`.
    fn ready_version(
        &self,
        function: &str,
        version: &str,
    ) -> impl Future<Output = Result<Readiness, EngineError>> + Send;
    /// Publishes the artifact as a new version and waits until it is `Active`.
    /// `Err` is for what is worth trying again (throttled, a conflicting
    /// update, Lambda unavailable); `Refused` for what is not.
    fn publish(
        &self,
        function: &str,
        bucket: &str,
        key: &str,
        object_version: Option<&str>,
    ) -> impl Future<Output = Result<Readiness, EngineError>> + Send;
    /// Whether each named alarm that exists is in ALARM.
    fn alarms_in_alarm(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<HashMap<String, bool>, EngineError>> + Send;
    fn invoke_hook(
        &self,
        hook: &str,
        request: &HookRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<Invocation, EngineError>> + Send;
    /// Invokes an asynchronous hook with its event: `Answered` once Lambda took it.
    fn start_hook(
        &self,
        hook: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Invocation, EngineError>> + Send;
    /// Both versions' numbers over the query's periods (new, old): one
    /// CloudWatch request for all series.
    fn measure(
        &self,
        query: &MetricQuery,
    ) -> impl Future<Output = Result<(Counts, Counts), EngineError>> + Send;
    /// Has `message` delivered back to the engine after `delay_secs`.
    fn send_timer(
        &self,
        message: &TimerMessage,
        delay_secs: i32,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Puts `work` on the engine's queue, to be done by a worker of its own
    /// after `delay_secs` (0 to 900).
    fn hand_over(
        &self,
        work: &HandedOver,
        delay_secs: i32,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Takes the control-plane budget's slot for the next call on an alias
    /// now, side by side with the save that authorises the call, which
    /// then waits for that slot instead of asking for one. A cloud without
    /// a budget has nothing to take.
    fn reserve_alias_call(&self, function: &str, alias: &str) -> impl Future<Output = ()> + Send {
        let _ = (function, alias);
        async {}
    }
    /// Whether the worker stops at `point`, after any wait there. The cloud
    /// never stops one; a test's port stops or holds workers here, so the
    /// engine under test is the production engine.
    fn checkpoint(&self, point: FaultPoint<'_>) -> impl Future<Output = bool> + Send {
        let _ = point;
        async { false }
    }
}

/// A CodePipeline execution as an action sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineRun {
    Running,
    Succeeded,
    /// Failed, stopped, superseded or cancelled: the status.
    Ended(String),
    /// CodePipeline refuses to say, for good (access denied, no such execution).
    Refused(String),
}

/// The outside world of pipeline actions.
pub trait Actions: Send + Sync {
    fn invoke(
        &self,
        function: &str,
        event: &serde_json::Value,
    ) -> impl Future<Output = Result<Invocation, OrchestratorError>> + Send;
    /// `None` if the object is not there (yet); else its version id, if any.
    fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Option<String>>, OrchestratorError>> + Send;
    /// Starts a CodePipeline execution (`token` makes a repeat start nothing
    /// new), optionally at a commit of one source action: its id, or why
    /// CodePipeline refuses it for good (no such pipeline, access denied).
    fn start_pipeline(
        &self,
        pipeline: &str,
        token: &str,
        source: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<Result<String, String>, OrchestratorError>> + Send;
    fn pipeline_run(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> impl Future<Output = Result<PipelineRun, OrchestratorError>> + Send;
    /// Stops a CodePipeline execution: at once if `abandon`, else once its
    /// actions in progress finish. One that has ended already, or is being
    /// stopped, is left as it is.
    fn stop_pipeline(
        &self,
        pipeline: &str,
        execution_id: &str,
        abandon: bool,
        reason: &str,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// Has `timer` delivered back to the orchestrator after `delay_secs`.
    fn send_timer(
        &self,
        timer: &PipelineTimer,
        delay_secs: i32,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// Puts `work` on the orchestrator's queue, to be done by a worker of its own.
    fn hand_over(
        &self,
        work: &HandedOver,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// Puts what a change tells on the reporter's queue (left out where
    /// the stack has no reporter).
    fn report(
        &self,
        report: &crate::notices::Report,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// PUTs a CloudFormation custom resource's answer to its presigned URL.
    fn answer_cloudformation(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
}
