//! Runs pipeline executions: load, decide, save, then execute the commands
//! and feed their results back, as the engine does for deployments. The
//! orchestrator function is a thin `main` over this.
//!
//! Deploy actions create a deployment whose id names the action
//! (`<execution>~<stage>.<action>.<attempt>`); the shifter runs it, and its
//! end, seen on the table's stream, is the action's result.

use crate::aws::{AwsActions, AwsCloud};
use crate::clock::{Clock, SystemClock};
pub use crate::ports::OrchestratorError;
use crate::ports::{Actions, Cloud, Executions, Invocation, PipelineRun};

use crate::batch::{Deadline, ITEMS_AT_ONCE, Item, run_items, sqs_response, stream_response};
use crate::domain::deployment::{
    Deployment, DeploymentSpec, Input as DeploymentInput, MemberSpec, Phase, VersionSource,
};
use crate::domain::execution::{
    ActionRef, ActionState, Command, Execution, ExecutionEvent, Input, Status, StopMode, decide,
    events_of, pending,
};
use crate::domain::pipeline::{
    ActionKind, ArtifactAction, CodePipelineAction, DeployAction, ExecutionMode, InvokeAction,
    TemplateContext, render,
};
use crate::drive::{self, Machine, SteerOutcome, Steered, Time};
use crate::engine::{Engine, EngineError, MAX_TIMER_DELAY_SECS};
use crate::events::{
    HandedOver, OrchestratorEvent, PipelineTimer, QueueMessage, parse_orchestrator_event,
    queue_items,
};
use crate::metrics::{self, Metric};
use crate::settings::Settings;
use crate::store::keys::Lock;
use crate::store::pipelines::execution_due_at;
use crate::store::{LockOutcome, Store, StoreError, StoredExecution};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The time an item of a batch is given before it is started: the
/// orchestrator's work is saves and short calls, but for invoke actions.
const ITEM_TIME: Duration = Duration::from_secs(60);

/// How often an artifact action looks for its object when no notification
/// came, and a codepipeline action at the execution it started.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The deployment a deploy action starts.
pub fn deployment_id(execution: &str, at: &ActionRef) -> String {
    format!("{execution}~{}.{}.{}", at.stage, at.action, at.attempt)
}

/// The execution an item of work moves: an execution's own id, or the one
/// a deployment was started by.
fn execution_key(id: &str) -> String {
    deployment_origin(id).map_or_else(|| id.to_owned(), |(execution, _)| execution)
}

/// The execution action a deployment was started by, if any.
pub fn deployment_origin(deployment_id: &str) -> Option<(String, ActionRef)> {
    let (execution, rest) = deployment_id.split_once('~')?;
    let mut parts = rest.split('.').map(str::parse::<u64>);
    let (Some(Ok(stage)), Some(Ok(action)), Some(Ok(attempt)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((
        execution.to_owned(),
        ActionRef {
            stage: stage as usize,
            action: action as usize,
            attempt: attempt as u32,
        },
    ))
}

/// What a stream record gives the orchestrator to pass on.
enum StreamWork {
    HandOver(HandedOver),
    Report(crate::notices::Report),
}

/// The orchestrator over the engine's ports and its own (see `ports`).
#[derive(Clone)]
pub struct Orchestrator<S = Store, C = AwsCloud, K = SystemClock, A = AwsActions> {
    /// Deployments are the engine's: the orchestrator creates them and aborts
    /// them. Its table and clock are the orchestrator's too.
    pub(crate) engine: Engine<S, C, K>,
    pub(crate) actions: A,
    pub(crate) artifact_bucket: String,
}

impl<S, C, K, A> Orchestrator<S, C, K, A> {
    pub fn new(engine: Engine<S, C, K>, actions: A, artifact_bucket: String) -> Self {
        Orchestrator {
            engine,
            actions,
            artifact_bucket,
        }
    }

    pub fn engine(&self) -> &Engine<S, C, K> {
        &self.engine
    }

    pub fn actions(&self) -> &A {
        &self.actions
    }

    pub fn artifact_bucket(&self) -> &str {
        &self.artifact_bucket
    }
}

fn split(commands: Vec<Command>) -> (Vec<ExecutionEvent>, Vec<Command>) {
    let events = events_of(&commands);
    let actions = commands
        .into_iter()
        .filter(|c| !matches!(c, Command::Record(_)))
        .collect();
    (events, actions)
}

impl Orchestrator {
    /// The orchestrator over the engine's ports and the AWS SDK's.
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        let engine = Engine::from_settings(config, settings);
        let mut actions = AwsActions::new(
            &engine.cloud,
            config,
            settings.pipeline_timer_queue_url.clone(),
        );
        actions.report_queue_url = settings.reporting.queue_url.clone();
        Orchestrator {
            engine,
            actions,
            artifact_bucket: settings.artifact_bucket.clone(),
        }
    }
}

impl<S: Executions, C: Cloud, K: Clock, A: Actions> Orchestrator<S, C, K, A> {
    /// Handles one event of the orchestrator's sources; for timer and stream
    /// batches, returns the partial-batch answer naming the items to deliver
    /// again. `deadline` is the invocation's: an item is started only with a
    /// minute left (an invoke action may take longer: cut by the timeout, it
    /// is delivered again and repeats nothing done).
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<serde_json::Value, OrchestratorError> {
        let event = parse_orchestrator_event(payload)
            .map_err(|e| OrchestratorError::Event(e.to_string()))?;
        let deadline = deadline.map(|at| Deadline {
            at,
            per_item: ITEM_TIME,
        });
        match event {
            OrchestratorEvent::Queue(messages) => {
                let items = queue_items(
                    messages,
                    |timer| timer.execution_id.clone(),
                    |work| execution_key(work.id()),
                );
                let again = run_items(items, deadline, |body| async move {
                    let done = match body {
                        Ok(QueueMessage::Timer(timer)) => self.timer(&timer).await.map(|_| ()),
                        Ok(QueueMessage::HandedOver(HandedOver::Arrived(id))) => {
                            self.arrived(&id).await.map(|_| ())
                        }
                        Ok(QueueMessage::HandedOver(HandedOver::DeploymentFinished(id))) => {
                            self.deployment_finished(&id).await
                        }
                        Ok(QueueMessage::HandedOver(HandedOver::SteeredExecution {
                            id,
                            version,
                            commands,
                        })) => self.run_steered(&id, version, commands).await.map(|_| ()),
                        Ok(QueueMessage::HandedOver(
                            other @ (HandedOver::Retry { .. }
                            | HandedOver::SteeredDeployment { .. }),
                        )) => Err(OrchestratorError::Event(format!(
                            "the orchestrator does not take {other}"
                        ))),
                        Err(reason) => Err(OrchestratorError::Event(reason)),
                    };
                    match done {
                        Err(OrchestratorError::Store(StoreError::NotFound(_))) => Ok(()),
                        other => other,
                    }
                })
                .await;
                Ok(sqs_response(again))
            }
            OrchestratorEvent::Table {
                new_executions,
                finished_deployments,
                reports,
            } => {
                // Handed over, not done here: see `HandedOver`. Only the
                // deployments a pipeline started concern the orchestrator.
                let handed_over = new_executions
                    .into_iter()
                    .map(|i| (i.sequence_number, HandedOver::Arrived(i.id)))
                    .chain(
                        finished_deployments
                            .into_iter()
                            .filter(|i| {
                                deployment_origin(&i.id).is_some()
                                    || crate::custom_resource::is_rollout(&i.id)
                            })
                            .map(|i| (i.sequence_number, HandedOver::DeploymentFinished(i.id))),
                    )
                    .map(|(sequence_number, work)| Item {
                        id: sequence_number,
                        key: execution_key(work.id()),
                        value: StreamWork::HandOver(work),
                    });
                // What the change tells goes to the reporter's queue.
                let reported = reports.into_iter().map(|(sequence_number, report)| Item {
                    id: sequence_number,
                    key: report.subject_id().to_owned(),
                    value: StreamWork::Report(report),
                });
                let items = handed_over.chain(reported).collect();
                let again = run_items(items, deadline, |work| async move {
                    match work {
                        StreamWork::HandOver(work) => self.actions.hand_over(&work).await,
                        StreamWork::Report(report) => self.actions.report(&report).await,
                    }
                })
                .await;
                Ok(stream_response(again))
            }
            OrchestratorEvent::ObjectCreated { bucket, key } => {
                let woken = self.object_created(&bucket, &key).await?;
                Ok(serde_json::json!({ "woken": woken }))
            }
            OrchestratorEvent::Reconcile => {
                let (seen, failed) = self.reconcile().await?;
                Ok(serde_json::json!({ "seen": seen, "failed": failed }))
            }
        }
    }

    /// Resumes every execution that is due; returns how many it looked at
    /// and how many it could not move.
    pub async fn reconcile(&self) -> Result<(usize, usize), OrchestratorError> {
        let due = self.engine.store.due_executions(self.now()).await?;
        // Side by side, so one slow action holds back only its own execution.
        let failed = futures::stream::iter(due.clone())
            .map(|id| async move {
                let failed = self.resume_if_due(&id).await.err();
                if let Some(e) = &failed {
                    tracing::warn!(execution_id = %id, error = %e, "reconcile could not advance");
                }
                failed.is_some()
            })
            .buffer_unordered(ITEMS_AT_ONCE)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        Ok((due.len(), failed))
    }

    /// A new execution, from the table's stream: it starts, or in queued
    /// mode waits for its turn. A record delivered again finds it started
    /// and does nothing: an action under way is not run twice (the sweep
    /// repairs a worker that died).
    pub async fn arrived(&self, id: &str) -> Result<Execution, OrchestratorError> {
        let stored = self.engine.store.load_execution(id).await?;
        let e = &stored.execution;
        if e.status != Status::Queued {
            return Ok(stored.execution);
        }
        match e.definition.execution_mode {
            ExecutionMode::Parallel => {}
            ExecutionMode::Superseded => {
                // Older runs of the pipeline stop at their next stage boundary
                // (or at once, if not started).
                for other in self.engine.store.live_executions(&e.pipeline).await? {
                    if other != e.id && self.older(&other, e).await? {
                        self.apply(&other, Input::Supersede { by: e.id.clone() })
                            .await?;
                    }
                }
            }
            ExecutionMode::Queued => {
                return self.take_turn(&e.pipeline).await.map(|_| e.clone());
            }
        }
        self.drive(stored, VecDeque::from([Input::Start]), Vec::new())
            .await
    }

    async fn older(&self, other: &str, than: &Execution) -> Result<bool, OrchestratorError> {
        let other = self.engine.store.load_execution(other).await?.execution;
        Ok((other.created_at, &other.id) < (than.created_at, &than.id))
    }

    /// Queued mode: the longest-waiting execution starts if the pipeline's turn is free.
    async fn take_turn(&self, pipeline: &str) -> Result<(), OrchestratorError> {
        let queued = self.engine.store.queued_executions(pipeline).await?;
        let Some(next) = queued.first() else {
            return Ok(());
        };
        let turn = Lock::pipeline_turn(pipeline);
        match self
            .engine
            .store
            .acquire_lock(&turn, next, self.now())
            .await?
        {
            LockOutcome::Acquired { .. } => {
                Box::pin(self.apply(next, Input::Start)).await?;
            }
            LockOutcome::Busy { holder } => {
                // A holder that is no longer running frees the turn (it died before releasing).
                let done = match self.engine.store.load_execution(&holder).await {
                    Ok(h) => !h.execution.status.is_running(),
                    Err(StoreError::NotFound(_)) => true,
                    Err(e) => return Err(e.into()),
                };
                if done {
                    self.engine.store.release_lock(&turn, &holder, None).await?;
                    Box::pin(self.take_turn(pipeline)).await?;
                }
            }
        }
        Ok(())
    }

    /// Applies an outside input (a timer, a deployment's end, a newer
    /// execution) and drives on.
    pub async fn apply(&self, id: &str, input: Input) -> Result<Execution, OrchestratorError> {
        let stored = self.engine.store.load_execution(id).await?;
        self.drive(stored, VecDeque::from([input]), Vec::new())
            .await
    }

    /// An operator's input (an approval, a stop, a retry), decided and saved
    /// here, then run by the orchestrator: the commands the decision issued
    /// are handed to its queue (`HandedOver::SteeredExecution`), so the
    /// caller runs no action.
    pub async fn steer(
        &self,
        id: &str,
        input: Input,
    ) -> Result<SteerOutcome<Execution>, OrchestratorError> {
        Ok(match drive::steer(self, id, input).await? {
            Steered::Unchanged(stored) => SteerOutcome {
                state: stored.execution,
                changed: false,
                woken: false,
            },
            Steered::Saved { saved, actions } => {
                let woken = drive::wake(self, &saved, actions).await;
                SteerOutcome {
                    state: saved.execution,
                    changed: true,
                    woken,
                }
            }
        })
    }

    /// Runs what a steer decided (`HandedOver::SteeredExecution`).
    pub async fn run_steered(
        &self,
        id: &str,
        version: u64,
        commands: Vec<Command>,
    ) -> Result<Execution, OrchestratorError> {
        drive::run_steered(self, id, version, commands).await
    }

    /// Re-issues what the saved state needs (the reconcile sweep's repair).
    pub async fn resume(&self, id: &str) -> Result<Execution, OrchestratorError> {
        let stored = self.engine.store.load_execution(id).await?;
        self.resume_stored(stored).await
    }

    /// The sweep's repair of an execution it listed as due, if it still is
    /// once read: the index lags the worker that has just moved it on, and
    /// that worker's action must not be run twice.
    pub async fn resume_if_due(&self, id: &str) -> Result<Option<Execution>, OrchestratorError> {
        let stored = self.engine.store.load_execution(id).await?;
        if execution_due_at(&stored.execution)
            .flatten()
            .is_none_or(|due| due > self.now())
        {
            return Ok(None);
        }
        self.resume_stored(stored).await.map(Some)
    }

    async fn resume_stored(&self, stored: StoredExecution) -> Result<Execution, OrchestratorError> {
        if stored.execution.status == Status::Queued {
            if stored.execution.definition.execution_mode != ExecutionMode::Queued {
                // Its arrival did not start it.
                return self
                    .drive(stored, VecDeque::from([Input::Start]), Vec::new())
                    .await;
            }
            // Its turn may have been freed without it being woken.
            self.take_turn(&stored.execution.pipeline).await?;
            return Ok(self
                .engine
                .store
                .load_execution(&stored.execution.id)
                .await?
                .execution);
        }
        let actions = pending(&stored.execution, self.now());
        self.drive(stored, VecDeque::new(), actions).await
    }

    pub async fn timer(&self, timer: &PipelineTimer) -> Result<Execution, OrchestratorError> {
        if let (Some(mode), Some(run)) = (timer.stop, &timer.handle) {
            let e = self
                .engine
                .store
                .load_execution(&timer.execution_id)
                .await?
                .execution;
            // A failure again leaves the message to be delivered again.
            self.stop_codepipeline(&e, timer.at, run, mode).await?;
            return Ok(e);
        }
        if timer.recheck {
            let stored = self
                .engine
                .store
                .load_execution(&timer.execution_id)
                .await?;
            let still_running = stored
                .execution
                .actions
                .get(timer.at.action)
                .is_some_and(|a| {
                    a.attempt == timer.at.attempt && matches!(a.state, ActionState::Running { .. })
                })
                && stored.execution.stage == timer.at.stage;
            if !still_running {
                return Ok(stored.execution);
            }
            let result = match &timer.handle {
                Some(handle) => {
                    self.check_codepipeline(&stored.execution, timer.at, handle)
                        .await?
                }
                None => self.run_action(&stored.execution, timer.at).await?,
            };
            return self
                .drive(stored, result.into_iter().collect(), Vec::new())
                .await;
        }
        self.apply(&timer.execution_id, Input::TimerFired { at: timer.at })
            .await
    }

    /// A deployment ended: if an execution's deploy action started it, that
    /// action ends too; if a CloudFormation request waits for it, it is answered.
    pub async fn deployment_finished(&self, deployment_id: &str) -> Result<(), OrchestratorError> {
        if crate::custom_resource::is_rollout(deployment_id) {
            let store = &self.engine.store;
            for owed in crate::custom_resource::answers_owed(store, deployment_id).await? {
                self.actions
                    .answer_cloudformation(&owed.url, owed.body)
                    .await?;
                tracing::info!(deployment_id, waiter = %owed.waiter, "CloudFormation answered");
                store.remove_waiter(deployment_id, &owed.waiter).await?;
            }
            return Ok(());
        }
        let Some((execution, at)) = deployment_origin(deployment_id) else {
            return Ok(());
        };
        let d = self.engine.store.load(deployment_id).await?.deployment;
        if let Some(input) = deployment_result(&d, at) {
            match self.apply(&execution, input).await {
                Ok(_) | Err(OrchestratorError::Store(StoreError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// An object arrived: artifact actions waiting for it look again.
    pub async fn object_created(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<usize, OrchestratorError> {
        let mut woken = 0;
        for id in self.engine.store.running_executions_all().await? {
            let stored = self.engine.store.load_execution(&id).await?;
            let e = &stored.execution;
            let waiting: Vec<Command> = e
                .actions
                .iter()
                .enumerate()
                .filter(|(i, a)| {
                    matches!(a.state, ActionState::Running { .. })
                        && matches!(
                            &e.definition.stages[e.stage].actions[*i].kind,
                            ActionKind::Artifact(art)
                                if self.artifact_location(e, art) == (bucket.to_owned(), key.to_owned())
                        )
                })
                .map(|(i, a)| Command::RunAction {
                    at: ActionRef {
                        stage: e.stage,
                        action: i,
                        attempt: a.attempt,
                    },
                })
                .collect();
            if !waiting.is_empty() {
                woken += waiting.len();
                self.drive(stored, VecDeque::new(), waiting).await?;
            }
        }
        Ok(woken)
    }

    fn context(&self, e: &Execution) -> TemplateContext {
        TemplateContext {
            repo: e.push.repository.clone(),
            sha: e.push.sha.clone(),
            reference: e.push.reference.name().to_owned(),
            pipeline: e.pipeline.clone(),
            execution: e.id.clone(),
        }
    }

    fn render(&self, e: &Execution, text: &str) -> String {
        render(text, &self.context(e), &e.definition.variables)
    }

    fn artifact_location(
        &self,
        e: &Execution,
        art: &crate::domain::pipeline::ArtifactAction,
    ) -> (String, String) {
        (
            art.bucket
                .as_ref()
                .map(|b| self.render(e, b))
                .unwrap_or_else(|| self.artifact_bucket.clone()),
            self.render(e, &art.key),
        )
    }

    async fn drive(
        &self,
        stored: StoredExecution,
        inputs: VecDeque<Input>,
        actions: Vec<Command>,
    ) -> Result<Execution, OrchestratorError> {
        drive::drive(self, stored, inputs, actions, 0).await
    }

    /// Makes one command happen; returns the fact it produced, if any now.
    async fn execute_command(
        &self,
        e: &Execution,
        command: Command,
    ) -> Result<Option<Input>, OrchestratorError> {
        match command {
            Command::RunAction { at } => self.run_action(e, at).await,
            Command::StartTimer { at, when } => {
                self.send_timer(e, at, when).await?;
                Ok(None)
            }
            Command::CancelAction { at, mode } => {
                let reason = format!("execution {} stopped it", e.id);
                match &e.definition.stages[at.stage].actions[at.action].kind {
                    ActionKind::Deploy(_) if mode == StopMode::Abandon => {
                        // Decided and saved here; the shifter rolls it back.
                        let id = deployment_id(&e.id, &at);
                        let abort = DeploymentInput::Abort { reason };
                        match self.engine.steer(&id, abort).await {
                            Ok(_) | Err(EngineError::Store(StoreError::NotFound(_))) => {}
                            Err(err) => return Err(err.into()),
                        }
                    }
                    ActionKind::CodePipeline(c) => {
                        let run = match &e.actions[at.action].run {
                            Some(run) => Some(run.clone()),
                            // Its start may have gone through unrecorded: the
                            // attempt's token names that execution (one never
                            // started is started here, and stopped at once).
                            None if mode == StopMode::Abandon => {
                                self.start_codepipeline(e, at, c).await?.ok()
                            }
                            // Finish: the record's arrival tells it (`ActionRunStarted`).
                            None => None,
                        };
                        if let Some(run) = run
                            && let Err(err) = self.stop_codepipeline(e, at, &run, mode).await
                        {
                            tracing::warn!(execution_id = %e.id, run, error = %err, "the CodePipeline execution could not be stopped yet; trying again");
                            let again = PipelineTimer {
                                execution_id: e.id.clone(),
                                at,
                                recheck: false,
                                handle: Some(run),
                                stop: Some(mode),
                            };
                            let when = self.now()
                                + chrono::Duration::from_std(RECHECK_INTERVAL)
                                    .expect("a short duration");
                            self.enqueue(&again, when).await?;
                        }
                    }
                    _ => {}
                }
                // Told, or its stop scheduled: saved, so the sweep stops
                // looking for an abandoned action to tell.
                Ok((mode == StopMode::Abandon).then_some(Input::ActionStopped { at }))
            }
            Command::TakeTurn => {
                Box::pin(self.take_turn(&e.pipeline)).await?;
                Ok(None)
            }
            Command::ReleaseTurn => {
                if e.definition.execution_mode == ExecutionMode::Queued {
                    let turn = Lock::pipeline_turn(&e.pipeline);
                    self.engine.store.release_lock(&turn, &e.id, None).await?;
                    Box::pin(self.take_turn(&e.pipeline)).await?;
                }
                Ok(None)
            }
            Command::Record(_) => Ok(None),
        }
    }

    /// Wakes the action at `when`: a wait's end or its deadline.
    async fn send_timer(
        &self,
        e: &Execution,
        at: ActionRef,
        when: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), OrchestratorError> {
        let timer = PipelineTimer {
            execution_id: e.id.clone(),
            at,
            recheck: false,
            handle: None,
            stop: None,
        };
        self.enqueue(&timer, when).await
    }

    /// Looks at the action again in `RECHECK_INTERVAL`; `handle` names what it started.
    async fn recheck_later(
        &self,
        e: &Execution,
        at: ActionRef,
        handle: Option<String>,
    ) -> Result<(), OrchestratorError> {
        let timer = PipelineTimer {
            execution_id: e.id.clone(),
            at,
            recheck: true,
            handle,
            stop: None,
        };
        let when =
            self.now() + chrono::Duration::from_std(RECHECK_INTERVAL).expect("a short duration");
        self.enqueue(&timer, when).await
    }

    async fn enqueue(
        &self,
        timer: &PipelineTimer,
        when: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), OrchestratorError> {
        // Rounded up: a timer rounded down to no delay, for a deadline less
        // than a second away, would come back at once, early again, and spin.
        let millis = (when - self.now()).num_milliseconds();
        let delay = (millis.saturating_add(999) / 1000).clamp(0, MAX_TIMER_DELAY_SECS) as i32;
        self.actions.send_timer(timer, delay).await
    }

    /// Looks at a CodePipeline execution an action started: its result, or a recheck later.
    async fn check_codepipeline(
        &self,
        e: &Execution,
        at: ActionRef,
        execution_id: &str,
    ) -> Result<Option<Input>, OrchestratorError> {
        let ActionKind::CodePipeline(c) = &e.definition.stages[at.stage].actions[at.action].kind
        else {
            return Ok(None);
        };
        let pipeline = self.render(e, &c.pipeline);
        Ok(
            match self.actions.pipeline_run(&pipeline, execution_id).await? {
                PipelineRun::Succeeded => Some(Input::ActionSucceeded {
                    at,
                    detail: format!("CodePipeline {pipeline} execution {execution_id} succeeded"),
                    outputs: BTreeMap::from([
                        ("pipeline".to_owned(), pipeline),
                        ("pipeline_execution_id".to_owned(), execution_id.to_owned()),
                    ]),
                }),
                PipelineRun::Ended(status) => Some(Input::ActionFailed {
                    at,
                    reason: format!(
                        "CodePipeline {pipeline} execution {execution_id} ended {status}"
                    ),
                }),
                PipelineRun::Refused(reason) => Some(Input::ActionFailed {
                    at,
                    reason: format!(
                        "CodePipeline {pipeline} execution {execution_id} could not be read: {reason}"
                    ),
                }),
                PipelineRun::Running => {
                    self.recheck_later(e, at, Some(execution_id.to_owned()))
                        .await?;
                    None
                }
            },
        )
    }

    async fn run_action(
        &self,
        e: &Execution,
        at: ActionRef,
    ) -> Result<Option<Input>, OrchestratorError> {
        match &e.definition.stages[at.stage].actions[at.action].kind {
            ActionKind::Invoke(invoke) => self.run_invoke(e, at, invoke).await,
            ActionKind::Artifact(art) => self.run_artifact(e, at, art).await,
            ActionKind::Deploy(deploy) => self.run_deploy(e, at, deploy).await,
            // A person answers it; the deadline timer covers silence.
            ActionKind::Approval(_) => Ok(None),
            // Only a timer: it is not run.
            ActionKind::Wait(_) => Ok(None),
            ActionKind::CodePipeline(c) => self.run_codepipeline(e, at, c).await,
        }
    }

    /// Invokes the action's function with the execution's context.
    async fn run_invoke(
        &self,
        e: &Execution,
        at: ActionRef,
        invoke: &InvokeAction,
    ) -> Result<Option<Input>, OrchestratorError> {
        let action = &e.definition.stages[at.stage].actions[at.action];
        let function = self.render(e, &invoke.function);
        let event = serde_json::json!({
            "pipeline": e.pipeline,
            "execution": e.id,
            "stage": e.definition.stages[at.stage].name,
            "action": action.name,
            "attempt": at.attempt,
            "commit": {
                "repository": e.push.repository,
                "ref": e.push.reference.name(),
                "sha": e.push.sha,
            },
            "outputs": e.outputs,
            "payload": invoke.payload,
        });
        Ok(match self.actions.invoke(&function, &event).await? {
            Invocation::Answered(_) => {
                succeeded(at, format!("{function} answered"), BTreeMap::new())
            }
            Invocation::Raised(message) => failed(at, format!("{function} failed: {message}")),
            Invocation::NotRun(why) => {
                failed(at, format!("{function} could not be invoked: {why}"))
            }
        })
    }

    /// Looks for the artifact; succeeds once it is there.
    async fn run_artifact(
        &self,
        e: &Execution,
        at: ActionRef,
        art: &ArtifactAction,
    ) -> Result<Option<Input>, OrchestratorError> {
        let (bucket, key) = self.artifact_location(e, art);
        match self.actions.head_object(&bucket, &key).await? {
            Some(version_id) => {
                let mut outputs = BTreeMap::from([
                    ("bucket".to_owned(), bucket.clone()),
                    ("key".to_owned(), key.clone()),
                ]);
                if let Some(v) = version_id {
                    outputs.insert("version_id".into(), v);
                }
                Ok(succeeded(
                    at,
                    format!("s3://{bucket}/{key} is there"),
                    outputs,
                ))
            }
            None => {
                // Not built yet: the bucket's notification wakes it, a recheck covers a lost one.
                self.recheck_later(e, at, None).await?;
                Ok(None)
            }
        }
    }

    /// Saves the deployment the action asks for: the shifter runs it, and
    /// its end is the action's result.
    async fn run_deploy(
        &self,
        e: &Execution,
        at: ActionRef,
        deploy: &DeployAction,
    ) -> Result<Option<Input>, OrchestratorError> {
        let id = deployment_id(&e.id, &at);
        let source_of =
            |artifact: &Option<String>, version: &Option<String>| match (artifact, version) {
                (Some(artifact), _) => match e.outputs.get(artifact) {
                    Some(out) => Ok(VersionSource::Artifact {
                        bucket: out.get("bucket").cloned().unwrap_or_default(),
                        key: out.get("key").cloned().unwrap_or_default(),
                        object_version: out.get("version_id").cloned(),
                    }),
                    None => Err(format!("artifact {artifact} has no output")),
                },
                (None, Some(version)) => Ok(VersionSource::Version(self.render(e, version))),
                (None, None) => Err("no artifact or version".to_owned()),
            };
        let source = match source_of(&deploy.artifact, &deploy.version) {
            Ok(source) => source,
            Err(why) => return Ok(failed(at, why)),
        };
        let mut group = Vec::new();
        for (i, member) in deploy.group.iter().enumerate() {
            match source_of(&member.artifact, &member.version) {
                Ok(source) => group.push(MemberSpec {
                    function: self.render(e, &member.function),
                    alias: self.render(e, &member.alias),
                    source,
                }),
                Err(why) => return Ok(failed(at, format!("group[{i}]: {why}"))),
            }
        }
        let spec = DeploymentSpec {
            function: self.render(e, &deploy.function),
            alias: self.render(e, &deploy.alias),
            source,
            config: deploy.config.clone(),
            pre_traffic_hook: deploy.pre_traffic_hook.clone(),
            post_traffic_hook: deploy.post_traffic_hook.clone(),
            alarms: deploy.alarms.clone(),
            on_busy: deploy.on_busy,
            on_manual_change: deploy.on_manual_change,
            smoke_tests: deploy.smoke_tests.clone(),
            smoke_tests_from: deploy.smoke_tests_from.clone(),
            analysis: deploy.analysis.clone(),
            hook_invocation: deploy.hook_invocation,
            hook_timeout_seconds: deploy.hook_timeout_seconds,
            rollback: deploy.rollback,
            frozen_for_seconds: deploy.frozen_for_seconds,
            group,
        };
        // Names come from templates: checked once rendered, before
        // anything is written.
        let problems = spec.problems();
        if !problems.is_empty() {
            return Ok(failed(at, format!("deployment: {}", problems.join("; "))));
        }
        let (d, commands) = Deployment::create(&id, spec, self.now());
        let events = crate::domain::deployment::events_of(&commands);
        // Handed to the shifter's queue at once: the table's stream, polled
        // four times a second, would deliver it a poll later, and still does
        // if this hand-over is lost (the second arrival finds it taken up).
        // A repeat finds it created.
        match self.engine.store.create(&d, &events).await {
            Ok(_) => {
                if let Err(e) = self
                    .engine
                    .cloud
                    .hand_over(&HandedOver::Arrived(id.clone()), 0)
                    .await
                {
                    tracing::warn!(deployment_id = %id, error = %e, "not handed over; the stream delivers it");
                }
                Ok(None)
            }
            Err(StoreError::AlreadyExists(_)) => {
                let existing = self.engine.store.load(&id).await?.deployment;
                Ok(deployment_result(&existing, at))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Starts the CodePipeline execution of the action's attempt, or looks
    /// at the one it started.
    async fn run_codepipeline(
        &self,
        e: &Execution,
        at: ActionRef,
        c: &CodePipelineAction,
    ) -> Result<Option<Input>, OrchestratorError> {
        match self.start_codepipeline(e, at, c).await? {
            // Known already (a repeat): look at how it goes.
            Ok(id) if e.actions[at.action].run.as_ref() == Some(&id) => {
                self.check_codepipeline(e, at, &id).await
            }
            // Recorded first, so a stop can stop it; looked at later.
            Ok(id) => {
                self.recheck_later(e, at, Some(id.clone())).await?;
                Ok(Some(Input::ActionRunStarted { at, run: id }))
            }
            Err(reason) => Ok(failed(at, reason)),
        }
    }

    /// Stops the CodePipeline execution `run` that the action at `at` started.
    async fn stop_codepipeline(
        &self,
        e: &Execution,
        at: ActionRef,
        run: &str,
        mode: StopMode,
    ) -> Result<(), OrchestratorError> {
        let ActionKind::CodePipeline(c) = &e.definition.stages[at.stage].actions[at.action].kind
        else {
            return Ok(());
        };
        let pipeline = self.render(e, &c.pipeline);
        let reason = format!("execution {} stopped it", e.id);
        self.actions
            .stop_pipeline(&pipeline, run, mode == StopMode::Abandon, &reason)
            .await
    }

    /// Starts the CodePipeline execution of a codepipeline action's attempt:
    /// the same token for the same attempt, so a repeat starts nothing new
    /// and answers with the execution the first start made.
    async fn start_codepipeline(
        &self,
        e: &Execution,
        at: ActionRef,
        c: &CodePipelineAction,
    ) -> Result<Result<String, String>, OrchestratorError> {
        let pipeline = self.render(e, &c.pipeline);
        let token = format!("{}-{}-{}-{}", e.id, at.stage, at.action, at.attempt);
        let source = c
            .source_action
            .as_deref()
            .map(|action| (action, e.push.sha.as_str()));
        self.actions.start_pipeline(&pipeline, &token, source).await
    }
}

impl<S: Executions, C: Cloud, K: Clock, A: Actions> Machine for Orchestrator<S, C, K, A> {
    type State = Execution;
    type Saved = StoredExecution;
    type Input = Input;
    type Command = Command;
    type Event = ExecutionEvent;
    type Error = OrchestratorError;

    fn id(e: &Execution) -> &str {
        &e.id
    }

    fn decide(e: &Execution, input: &Input, now: Time) -> (Execution, Vec<Command>) {
        decide(e, input, now)
    }

    fn split(commands: Vec<Command>) -> (Vec<ExecutionEvent>, Vec<Command>) {
        split(commands)
    }

    fn claimed(e: &Execution, now: Time) -> Execution {
        Execution {
            updated_at: now,
            ..e.clone()
        }
    }

    fn now(&self) -> Time {
        self.engine.clock.now()
    }

    fn span(&self, id: &str) -> tracing::Span {
        tracing::info_span!("execution", execution_id = %id)
    }

    async fn load(&self, id: &str) -> Result<StoredExecution, StoreError> {
        self.engine.store.load_execution(id).await
    }

    async fn save(
        &self,
        e: &Execution,
        expected: u64,
        events: &[ExecutionEvent],
    ) -> Result<StoredExecution, StoreError> {
        self.engine.store.save_execution(e, expected, events).await
    }

    fn recorded(&self, before: &Execution, after: &StoredExecution, events: &[ExecutionEvent]) {
        for e in events {
            log_execution_event(&after.execution, e);
        }
        if after.execution.status != before.status {
            count_end(&after.execution, self.now());
        }
    }

    fn execute<'a>(
        &'a self,
        stored: &'a StoredExecution,
        command: Command,
        _attempt: u32,
    ) -> BoxFuture<'a, Result<Option<Input>, OrchestratorError>> {
        Box::pin(self.execute_command(&stored.execution, command))
    }

    async fn wake(
        &self,
        id: &str,
        version: u64,
        commands: Vec<Command>,
    ) -> Result<(), OrchestratorError> {
        let work = HandedOver::SteeredExecution {
            id: id.to_owned(),
            version,
            commands,
        };
        self.actions.hand_over(&work).await
    }
}

/// An action's failure, as its result.
fn failed(at: ActionRef, reason: String) -> Option<Input> {
    Some(Input::ActionFailed { at, reason })
}

/// An action's success, as its result.
fn succeeded(at: ActionRef, detail: String, outputs: BTreeMap<String, String>) -> Option<Input> {
    Some(Input::ActionSucceeded {
        at,
        detail,
        outputs,
    })
}

/// A finished deployment as its action's result; `None` while it runs.
fn deployment_result(d: &Deployment, at: ActionRef) -> Option<Input> {
    match &d.phase {
        Phase::Promoted => Some(Input::ActionSucceeded {
            at,
            detail: format!(
                "{}:{} now serves version {}",
                d.spec.function,
                d.spec.alias,
                d.to_version.clone().unwrap_or_default()
            ),
            outputs: BTreeMap::from([
                ("deployment".to_owned(), d.id.clone()),
                (
                    "version".to_owned(),
                    d.to_version.clone().unwrap_or_default(),
                ),
            ]),
        }),
        Phase::RolledBack { reason } | Phase::FailedToStart { reason } => {
            Some(Input::ActionFailed {
                at,
                reason: format!("deployment {}: {reason}", d.id),
            })
        }
        _ => None,
    }
}

/// Counts an execution's end, and how long it took from the push.
fn count_end(e: &Execution, now: chrono::DateTime<chrono::Utc>) {
    match e.status {
        Status::Succeeded => metrics::emit(Metric::ExecutionsSucceeded, &e.pipeline),
        Status::Failed { .. } => metrics::emit(Metric::ExecutionsFailed, &e.pipeline),
        Status::Stopped { .. } | Status::Superseded { .. } => {}
        Status::Queued | Status::InProgress => return,
    }
    let took = (now - e.created_at).num_milliseconds().max(0);
    metrics::record(Metric::ExecutionDuration, &e.pipeline, took as f64 / 1000.0);
}

/// An execution's timeline line as a log event, with what the dashboard's
/// Logs Insights widget shows (template.yaml; a test holds it to these fields).
pub fn log_execution_event(e: &Execution, event: &ExecutionEvent) {
    tracing::info!(
        execution_id = %e.id,
        pipeline = %e.pipeline,
        status = crate::store::pipelines::status_name(&e.status),
        stage = e.stage_name(),
        commit = crate::domain::clip(&e.push.sha, 7),
        "{}",
        event.message
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_id_names_the_action_that_started_it() {
        let at = ActionRef {
            stage: 3,
            action: 0,
            attempt: 2,
        };
        let id = deployment_id("9a1f3c2-0c1e2d3f", &at);
        assert_eq!(id, "9a1f3c2-0c1e2d3f~3.0.2");
        assert_eq!(
            deployment_origin(&id),
            Some(("9a1f3c2-0c1e2d3f".into(), at))
        );
        for other in ["d-1", "x~1.2", "x~1.2.3.4", "x~a.b.c", "x~1.2.-3"] {
            assert_eq!(deployment_origin(other), None, "{other}");
        }
    }
}
