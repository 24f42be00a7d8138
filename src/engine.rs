//! Runs deployments: load, decide, save, then execute the commands through
//! the AWS SDK and feed their results back, until the deployment waits (a
//! bake, a queue) or ends. The shifter function is a thin `main` over this.
//!
//! Everything the engine does is repeatable: a worker that dies between any
//! two AWS calls leaves a saved phase whose commands `resume` issues again.

use crate::aws::AwsCloud;
use crate::clock::{Clock, SystemClock};
use crate::domain::analysis::{Measurement, MetricTiming};
pub use crate::ports::EngineError;
use crate::ports::{
    AliasState, AliasWrite, Cloud, Deployments, FaultPoint, Invocation, MetricQuery, Readiness,
};

use crate::batch::{Deadline, ITEMS_AT_ONCE, Item, run_items, sqs_response, stream_response};
use crate::budget::Budget;
use crate::domain::deployment::{
    AliasLeft, AliasUpdate, BackStage, Command, Deployment, DeploymentSpec, Event, EventKind, Gate,
    HookInvocation, Input, Phase, PreparedMember, Time, VersionSource, decide, events_of, pending,
    settled_at_once, token_digest,
};
use crate::domain::hooks::{
    CodeDeployHookEvent, HookMember, HookRequest, HookResponse, HookStatus,
};
use crate::drive::{self, Machine, SteerOutcome, Steered};
use crate::events::{
    HandedOver, QueueMessage, ShifterEvent, TimerMessage, parse_shifter_event, queue_items,
};
use crate::metrics::{self, Metric};
use crate::settings::{DEFAULT_STACK_NAME, Settings};
use crate::store::keys::Lock;
use crate::store::{
    IN_FLIGHT_GRACE_SECS, LockOutcome, STUCK_AFTER_SECS, Store, StoreError, Stored, due_at,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// SQS delays a message by 15 minutes at most; longer waits re-arm on arrival.
pub const MAX_TIMER_DELAY_SECS: i64 = 900;
/// Retries of a transient failure (1, 2, 4, 8 and 16 s apart) before the
/// sweep is left to repair it: a long outage is the sweep's.
const TRANSIENT_RETRIES: u32 = 5;

/// SQS delays are whole seconds, so timers are sent to arrive up to a second
/// early and the rest is waited out in the handler: shifts stay on schedule.
const TIMER_EARLY_WAIT: Duration = Duration::from_secs(1);

/// An alias as found for a start: whole, or why no deployment can start
/// from it (redelivering the deployment would only be refused again); a
/// transient failure stays an error.
fn whole_alias(
    function: &str,
    alias: &str,
    found: Result<Option<AliasState>, EngineError>,
) -> Result<Result<AliasState, String>, EngineError> {
    match found {
        Ok(Some(a)) if a.weights.is_empty() => Ok(Ok(a)),
        Ok(Some(_)) => Ok(Err(format!(
            "alias {function}:{alias} is split between versions; it must serve one version to start"
        ))),
        Ok(None) => Ok(Err(format!("alias {function}:{alias} does not exist"))),
        Err(EngineError::Refused(reason)) => Ok(Err(reason)),
        Err(e) => Err(e),
    }
}

/// The lock that keeps one deployment at a time on member `m`'s alias.
fn alias_lock(d: &Deployment, m: usize) -> Lock {
    let (function, alias) = d.target(m);
    Lock::alias(function, alias)
}

/// Whether an alias update moves the new version forward (or a step back
/// down): one that fails for good rolls the deployment back.
fn moves_forward(update: AliasUpdate) -> bool {
    matches!(update, AliasUpdate::Step(_) | AliasUpdate::StepBack(_))
}

/// How often an alias update is tried again when the alias changed between
/// its read and its write.
const ALIAS_WRITE_ATTEMPTS: usize = 5;

/// The engine over its ports (see `ports`): DynamoDB, the AWS SDK and the
/// wall clock in the functions, in-memory models in the simulation.
#[derive(Clone)]
pub struct Engine<S = Store, C = AwsCloud, K = SystemClock> {
    pub(crate) store: S,
    pub(crate) cloud: C,
    pub(crate) clock: K,
    /// How long a hook may take before its gate fails.
    pub(crate) hook_timeout: Duration,
    /// The dimension of the stack-wide metrics it records.
    pub(crate) stack_name: String,
    /// When CloudWatch has Lambda's periods, for the analysis.
    pub(crate) metric_timing: MetricTiming,
}

impl<S, C, K> Engine<S, C, K> {
    pub fn new(store: S, cloud: C, clock: K, hook_timeout: Duration) -> Self {
        Engine {
            store,
            cloud,
            clock,
            hook_timeout,
            stack_name: DEFAULT_STACK_NAME.into(),
            metric_timing: MetricTiming::default(),
        }
    }

    /// The same engine reading Lambda's metrics on `timing` (a scaled local stack's).
    pub fn timed(self, metric_timing: MetricTiming) -> Self {
        Engine {
            metric_timing,
            ..self
        }
    }

    /// The same engine recording its stack-wide metrics under `stack_name`.
    pub fn named(self, stack_name: impl Into<String>) -> Self {
        Engine {
            stack_name: stack_name.into(),
            ..self
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    pub fn hook_timeout(&self) -> Duration {
        self.hook_timeout
    }

    /// The same engine over another cloud (a test's, with faults).
    pub fn with_cloud<C2>(&self, cloud: C2) -> Engine<S, C2, K>
    where
        S: Clone,
        K: Clone,
    {
        Engine {
            store: self.store.clone(),
            cloud,
            clock: self.clock.clone(),
            hook_timeout: self.hook_timeout,
            stack_name: self.stack_name.clone(),
            metric_timing: self.metric_timing,
        }
    }

    /// The same engine over another table client.
    pub fn with_store<S2>(&self, store: S2) -> Engine<S2, C, K>
    where
        C: Clone,
        K: Clone,
    {
        Engine {
            store,
            cloud: self.cloud.clone(),
            clock: self.clock.clone(),
            hook_timeout: self.hook_timeout,
            stack_name: self.stack_name.clone(),
            metric_timing: self.metric_timing,
        }
    }
}

fn split(commands: Vec<Command>) -> (Vec<Event>, Vec<Command>) {
    let mut events = Vec::new();
    let mut actions = Vec::new();
    for c in commands {
        match c {
            Command::Record(e) => events.push(e),
            other => actions.push(other),
        }
    }
    (events, actions)
}

impl Engine {
    /// The engine over DynamoDB, the AWS SDK and the wall clock.
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Engine {
            store: Store::from_settings(config, settings),
            cloud: AwsCloud::new(
                config,
                settings.timer_queue_url.clone(),
                Budget::from_settings(config, settings),
            ),
            clock: SystemClock,
            hook_timeout: settings.hook_timeout,
            stack_name: settings.stack_name.clone(),
            metric_timing: settings.metric_timing,
        }
    }
}

impl<S: Deployments, C: Cloud, K: Clock> Engine<S, C, K> {
    /// Handles one event of the shifter's sources; for timer and stream
    /// batches, returns the partial-batch answer naming the items to deliver
    /// again. `deadline` is the invocation's (Lambda's context): no item is
    /// started without the time for its gates.
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<serde_json::Value, EngineError> {
        let event = parse_shifter_event(payload).map_err(|e| EngineError::Event(e.to_string()))?;
        // A drive runs at most a step's two gates before it waits again.
        let deadline = deadline.map(|at| Deadline {
            at,
            per_item: self.hook_timeout * 2 + Duration::from_secs(10),
        });
        match event {
            ShifterEvent::Queue(messages) => {
                let items = queue_items(
                    messages,
                    |timer| timer.deployment_id.clone(),
                    |work| work.id().to_owned(),
                );
                let again = run_items(items, deadline, |body| async move {
                    let done = match body {
                        Ok(message) => self.run_queued(&message).await,
                        Err(reason) => return Err(EngineError::Event(reason)),
                    };
                    match done {
                        Ok(_) | Err(EngineError::Store(StoreError::NotFound(_))) => Ok(()),
                        Err(e) => Err(e),
                    }
                })
                .await;
                Ok(sqs_response(again))
            }
            ShifterEvent::Created(items) => {
                // Handed over, not started here: see `HandedOver`.
                let items = items
                    .into_iter()
                    .map(|item| Item {
                        id: item.sequence_number,
                        key: item.id.clone(),
                        value: item.id,
                    })
                    .collect();
                let again = run_items(items, deadline, |id| async move {
                    self.cloud.hand_over(&HandedOver::Arrived(id), 0).await
                })
                .await;
                Ok(stream_response(again))
            }
            ShifterEvent::Reconcile => {
                let (seen, failures) = self.reconcile().await?;
                tracing::info!(seen, failed = failures.len(), "reconcile sweep");
                Ok(serde_json::json!({ "seen": seen, "failed": failures.len() }))
            }
            ShifterEvent::AlarmChanged { alarm, in_alarm } => {
                if in_alarm {
                    self.alarm_raised(&alarm).await?;
                }
                Ok(serde_json::Value::Null)
            }
        }
    }

    /// Rolls back every running deployment that watches `alarm`, side by
    /// side. Each is tried; if any fails, the event fails after all were
    /// tried, and its retry finds the ones rolled back already ended.
    pub async fn alarm_raised(&self, alarm: &str) -> Result<usize, EngineError> {
        let watching = self.store.watching(alarm).await?;
        let hit = watching.len();
        let failed: Vec<EngineError> = futures::stream::iter(watching)
            .map(|stored| async move {
                let input = Input::AlarmRaised {
                    alarm: alarm.to_owned(),
                };
                // The index may show a phase the deployment has left (still
                // `Created` while it shifts), where the alarm changes
                // nothing: decided on the saved state instead.
                let (next, commands) = decide(&stored.deployment, &input, self.now());
                let stored = if next == stored.deployment && commands.is_empty() {
                    self.store.load(&stored.deployment.id).await?
                } else {
                    stored
                };
                self.drive(stored, VecDeque::from([input]), Vec::new(), 0)
                    .await
            })
            .buffer_unordered(ITEMS_AT_ONCE)
            .filter_map(|driven| async move { driven.err() })
            .collect()
            .await;
        match failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(hit),
        }
    }

    /// Saves a new deployment and takes it up as its arrival on the table's
    /// stream would: for tests and benchmarks that run the engine without
    /// the stream. Sluice itself only saves new deployments (`create`).
    pub async fn start(&self, id: &str, spec: DeploymentSpec) -> Result<Deployment, EngineError> {
        self.create(id, spec).await?;
        self.arrived(id).await
    }

    /// Saves a new deployment: the table's stream hands it to a shifter.
    /// One saved already under `id` (a repeat) is left as it is.
    pub async fn create(&self, id: &str, spec: DeploymentSpec) -> Result<(), EngineError> {
        let (d, commands) = Deployment::create(id, spec, self.now());
        match self.store.create(&d, &events_of(&commands)).await {
            Ok(_) => {
                tracing::info!(deployment_id = id, "deployment created");
                Ok(())
            }
            Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies an outside input (a timer, an alarm, the lock freed) and drives on.
    pub async fn apply(&self, id: &str, input: Input) -> Result<Deployment, EngineError> {
        let stored = self.store.load(id).await?;
        self.drive(stored, VecDeque::from([input]), Vec::new(), 0)
            .await
    }

    /// An operator's input (or the orchestrator's abort), decided and saved
    /// here, then run by a shifter: the commands the decision issued are
    /// handed to its queue (`HandedOver::SteeredDeployment`), so the caller
    /// runs no gate and writes no alias.
    pub async fn steer(
        &self,
        id: &str,
        input: Input,
    ) -> Result<SteerOutcome<Deployment>, EngineError> {
        let retry = matches!(input, Input::Retry { .. });
        match drive::steer(self, id, input).await? {
            Steered::Unchanged(stored) => {
                let d = stored.deployment;
                if let (true, Some(retried_as)) = (retry, &d.retried_as) {
                    // Retried by a caller that died before saving the new
                    // deployment: saved now (a no-op if it was).
                    self.create(retried_as, d.spec.clone()).await?;
                }
                Ok(SteerOutcome {
                    state: d,
                    changed: false,
                    woken: false,
                })
            }
            Steered::Saved { saved, actions } => {
                // A retry's new deployment is saved here, not run: the
                // table's stream hands it to a shifter.
                let mut commands = Vec::new();
                for action in actions {
                    match action {
                        Command::StartDeployment { id, spec } => self.create(&id, *spec).await?,
                        other => commands.push(other),
                    }
                }
                let woken = drive::wake(self, &saved, commands).await;
                Ok(SteerOutcome {
                    state: saved.deployment,
                    changed: true,
                    woken,
                })
            }
        }
    }

    /// Runs what a steer decided (`HandedOver::SteeredDeployment`).
    pub async fn run_steered(
        &self,
        id: &str,
        version: u64,
        commands: Vec<Command>,
    ) -> Result<Deployment, EngineError> {
        // On the heap: a drive's future is large, and callers nest it.
        Box::pin(drive::run_steered(self, id, version, commands)).await
    }

    /// A new deployment, from the table's stream: prepared unless a worker
    /// already has it (a record delivered again, or one started inline), so
    /// a gate under way is not run a second time; the sweep repairs a worker
    /// that died.
    pub async fn arrived(&self, id: &str) -> Result<Deployment, EngineError> {
        let stored = self.store.load(id).await?;
        // Saved since its creation (version 1) and still `Created`: a worker
        // has claimed it and is preparing it. A record delivered again must
        // not prepare it beside that worker (a second upload, a publish in
        // conflict); the sweep repairs a worker that died, after the grace.
        if stored.deployment.phase != Phase::Created || stored.version > 1 {
            return Ok(stored.deployment);
        }
        self.resume_stored(stored, 0).await
    }

    /// The deployment holding `lock`, if it is still under way: a holder
    /// that ended without releasing it (its worker died first, or a steer's
    /// release was never run) is released for it.
    pub async fn live_holder(&self, lock: &Lock) -> Result<Option<String>, EngineError> {
        let Some(holder) = self.store.lock_holder(lock).await? else {
            return Ok(None);
        };
        let ended = match self.store.load(&holder).await {
            Ok(h) => h.deployment.phase.is_terminal(),
            Err(StoreError::NotFound(_)) => true,
            Err(e) => return Err(e.into()),
        };
        if !ended {
            return Ok(Some(holder));
        }
        // Not knowing how the holder left the alias, the next reads it.
        self.store.release_lock(lock, &holder, None).await?;
        Ok(None)
    }

    /// Re-issues what the saved phase needs: the reconcile sweep's repair.
    pub async fn resume(&self, id: &str) -> Result<Deployment, EngineError> {
        let stored = self.store.load(id).await?;
        self.resume_stored(stored, 0).await
    }

    /// The sweep's repair of a deployment it listed as due, if it still is
    /// once read: the index lags the worker that has just moved it on, and
    /// that worker's gate must not be run twice.
    pub async fn resume_if_due(&self, id: &str) -> Result<Option<Deployment>, EngineError> {
        let stored = self.store.load(id).await?;
        let grace = chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS);
        if due_at(&stored.deployment, grace).is_none_or(|due| due > self.now()) {
            return Ok(None);
        }
        self.resume_stored(stored, 0).await.map(Some)
    }

    async fn resume_stored(&self, stored: Stored, attempt: u32) -> Result<Deployment, EngineError> {
        let d = &stored.deployment;
        let mut inputs = VecDeque::new();
        // Queued behind a holder that may have ended without releasing the lock.
        if let Phase::Queued { member, .. } = d.phase
            && self.live_holder(&alias_lock(d, member)).await?.is_none()
        {
            inputs.push_back(Input::LockFreed);
        }
        if let Some((step, at)) = d.wake()
            && at <= self.now()
        {
            inputs.push_back(Input::TimerFired { step, at: None });
        }
        if !inputs.is_empty() {
            return self.drive(stored, inputs, Vec::new(), attempt).await;
        }
        let actions = pending(d, self.now());
        if actions.is_empty() || d.phase.is_terminal() {
            return self.drive(stored, inputs, actions, attempt).await;
        }
        // Claimed first, and the sweep's grace counts from the claim.
        Box::pin(drive::claim_and_drive(self, stored, actions, attempt)).await
    }

    /// Does what a message of the shifter's queue asks: a timer, a new
    /// deployment handed over, or one handed back after a transient failure.
    pub async fn run_queued(
        &self,
        message: &QueueMessage<TimerMessage>,
    ) -> Result<Deployment, EngineError> {
        match message {
            QueueMessage::Timer(timer) => self.timer(timer).await,
            QueueMessage::HandedOver(HandedOver::Arrived(id)) => self.arrived(id).await,
            QueueMessage::HandedOver(HandedOver::Retry {
                id,
                version,
                attempt,
            }) => self.take_up(id, *version, *attempt).await,
            QueueMessage::HandedOver(HandedOver::SteeredDeployment {
                id,
                version,
                commands,
            }) => self.run_steered(id, *version, commands.clone()).await,
            QueueMessage::HandedOver(other) => Err(EngineError::Event(format!(
                "the shifter does not take {other}"
            ))),
        }
    }

    /// Takes up a deployment handed back at `version` after a transient
    /// failure (`HandedOver::Retry`), unless another worker has saved it since.
    pub async fn take_up(
        &self,
        id: &str,
        version: u64,
        attempt: u32,
    ) -> Result<Deployment, EngineError> {
        let stored = self.store.load(id).await?;
        if stored.version != version {
            tracing::info!(deployment_id = id, "not taken up: moved on since");
            return Ok(stored.deployment);
        }
        self.resume_stored(stored, attempt).await
    }

    /// After a transient failure of a command (throttled, out of budget, no
    /// answer), hands the deployment back to the queue to be taken up again
    /// once the cause may have passed, rather than after the sweep's grace.
    /// What the table itself refused, and what is not transient, is left
    /// to the sweep and to the caller.
    async fn hand_back(&self, stored: &Stored, error: &EngineError, attempt: u32) {
        let (delay, attempt) = match error {
            // Queueing, not failing: its retries are not counted.
            EngineError::OutOfBudget { ahead, .. } => {
                let until_near = ahead.saturating_sub(crate::budget::LONGEST_WAIT);
                (until_near.as_secs() as i64 + 1, attempt)
            }
            EngineError::Aws(_) if attempt < TRANSIENT_RETRIES => (1 << attempt, attempt + 1),
            _ => return,
        };
        let work = HandedOver::Retry {
            id: stored.deployment.id.clone(),
            version: stored.version,
            attempt,
        };
        let delay = delay.clamp(0, MAX_TIMER_DELAY_SECS) as i32;
        match self.cloud.hand_over(&work, delay).await {
            Ok(()) => {
                tracing::info!(deployment_id = %stored.deployment.id, delay, attempt, "handed back after a transient failure")
            }
            Err(e) => {
                tracing::warn!(deployment_id = %stored.deployment.id, error = %e, "could not hand back; the sweep will repair it")
            }
        }
    }

    /// Resumes every deployment that is due; returns how many it touched and
    /// the failures. Then counts what is stuck, for the alarm on it.
    pub async fn reconcile(&self) -> Result<(usize, Vec<(String, EngineError)>), EngineError> {
        let ids = self.store.due(self.now()).await?;
        // Side by side, so one slow gate holds back only its own deployment.
        let failures: Vec<(String, EngineError)> = futures::stream::iter(ids.clone())
            .map(|id| async move {
                let failed = self.resume_if_due(&id).await.err();
                if let Some(e) = &failed {
                    tracing::warn!(deployment_id = %id, error = %e, "reconcile could not advance");
                }
                failed.map(|e| (id, e))
            })
            .buffer_unordered(ITEMS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let stuck = self.store.stuck(self.now()).await?;
        for id in &stuck {
            tracing::error!(deployment_id = %id, "deployment stuck: overdue for over {STUCK_AFTER_SECS} s");
        }
        metrics::record(
            Metric::StuckDeployments,
            &self.stack_name,
            stuck.len() as f64,
        );
        Ok((ids.len(), failures))
    }

    /// A timer message from the queue.
    pub async fn timer(&self, message: &TimerMessage) -> Result<Deployment, EngineError> {
        let stored = self.store.load(&message.deployment_id).await?;
        // The deadline's own timer, come early (SQS delays 15 minutes at
        // most): sent on again, nothing decided or saved.
        if let Some(at) = message.at
            && stored.deployment.abort_at() == Some(at)
            && at - self.now() > chrono::Duration::from_std(TIMER_EARLY_WAIT).expect("short")
        {
            self.cloud.send_timer(message, self.timer_delay(at)).await?;
            return Ok(stored.deployment);
        }
        if let Some(wake) = message.at
            && stored.deployment.wake() == Some((message.step, wake))
            && let Ok(early) = (wake - self.now()).to_std()
            && early <= TIMER_EARLY_WAIT
        {
            self.clock.sleep(early).await;
        }
        let input = Input::TimerFired {
            step: message.step,
            at: message.at,
        };
        self.drive(stored, VecDeque::from([input]), Vec::new(), 0)
            .await
    }

    /// SQS's delay for a timer due `at`: rounded down, the handler waiting
    /// out the last second (`TIMER_EARLY_WAIT`); at most 15 minutes.
    fn timer_delay(&self, at: Time) -> i32 {
        (at - self.now())
            .num_seconds()
            .clamp(0, MAX_TIMER_DELAY_SECS) as i32
    }

    async fn drive(
        &self,
        stored: Stored,
        inputs: VecDeque<Input>,
        actions: Vec<Command>,
        attempt: u32,
    ) -> Result<Deployment, EngineError> {
        // On the heap: a drive's future is large, and callers nest it.
        Box::pin(drive::drive(self, stored, inputs, actions, attempt)).await
    }

    /// Makes one command happen; returns the fact it produced, if any.
    async fn execute_command(
        &self,
        d: &Deployment,
        command: Command,
    ) -> Result<Option<Input>, EngineError> {
        match command {
            Command::Prepare => self.prepare(d).await.map(Some),
            Command::RunGate { gate, step, weight } => {
                self.run_gate(d, gate, step, weight).await.map(Some)
            }
            Command::SetAlias {
                primary,
                additional,
                update,
                member,
            } => match self.set_alias(d, member, primary, additional, update).await {
                // Refused for good: a fact for the deployment (a shift rolls
                // back; a rollback leaves that alias to a person), so the
                // other members' writes go on.
                Err(EngineError::Refused(reason)) => Ok(Some(Input::AliasWriteFailed {
                    update,
                    member,
                    reason,
                })),
                written => written,
            },
            Command::StartTimer { step, at } => {
                let message = TimerMessage {
                    deployment_id: d.id.clone(),
                    step,
                    at: Some(at),
                };
                self.cloud
                    .send_timer(&message, self.timer_delay(at))
                    .await?;
                Ok(None)
            }
            Command::Measure { step, from, to } => Ok(Some(self.measure(d, step, from, to).await)),
            Command::InvokeHook {
                gate,
                step,
                weight,
                token,
                deadline,
            } => {
                let request = hook_request(d, gate, step, weight, deadline, Some(token.clone()));
                let payload = match d.spec.hook_invocation {
                    HookInvocation::CodeDeploy => serde_json::to_vec(&CodeDeployHookEvent {
                        deployment_id: d.id.clone(),
                        lifecycle_event_hook_execution_id: token.clone(),
                    }),
                    _ => serde_json::to_vec(&request),
                }
                .expect("hook events serialise");
                self.start_hook(d, gate, step, payload, &token)
                    .await
                    .map(Some)
            }
            Command::ReleaseLock => {
                for m in 0..d.members() {
                    self.release_and_wake(d, m, d.alias_left(m).as_ref())
                        .await?;
                }
                Ok(None)
            }
            Command::StartDeployment { id, spec } => {
                self.create(&id, *spec).await?;
                Ok(None)
            }
            Command::Record(_) => Ok(None),
        }
    }

    /// Releases member `m`'s alias lock, keeping `left` beside it, and wakes
    /// the longest-waiting deployment of that alias: saved and handed to a
    /// worker of its own, not driven here, so a chain of queued deployments
    /// is never a chain of nested drives. If the wake fails (say the index
    /// is still being built after an upgrade), the reconcile sweep wakes it
    /// later: the release stands.
    async fn release_and_wake(
        &self,
        d: &Deployment,
        m: usize,
        left: Option<&AliasLeft>,
    ) -> Result<(), EngineError> {
        self.store
            .release_lock(&alias_lock(d, m), &d.id, left)
            .await?;
        let (function, alias) = d.target(m);
        match self.store.queued_for(function, alias).await {
            Ok(queued) => {
                if let Some(next) = queued.first()
                    && let Err(e) = self.steer(next, Input::LockFreed).await
                {
                    tracing::warn!(deployment_id = %next, error = %e, "could not wake the next deployment");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read what is queued for the alias");
            }
        }
        Ok(())
    }

    /// Sets member `member`'s alias's weights: one `UpdateAlias`, conditional on the
    /// revision Sluice's last write left (saved with the deployment), so it
    /// costs one control-plane call. Lambda refuses it if anyone wrote the
    /// alias since; only then is the alias read, to tell whose write it was:
    /// - the deployment has moved on (this worker was overtaken, by a
    ///   rollback say): nothing is written, so a late write never splits the
    ///   alias again;
    /// - this very write landed (its answer or its save was lost): done;
    /// - Sluice's own earlier write: written again on the new revision;
    /// - before the first shift, by the worker that entered it, at the first
    ///   request it sent (so no write of this deployment's can have landed),
    ///   the alias whole on the old version: it changed without moving
    ///   traffic since Sluice last saw it (an edited description, a
    ///   re-created alias), and is written again on the new revision;
    /// - anything else is a person's: never written over
    ///   (`Input::AliasChangedByHand`).
    async fn set_alias(
        &self,
        d: &Deployment,
        member: usize,
        primary: String,
        additional: Option<(String, f64)>,
        update: AliasUpdate,
    ) -> Result<Option<Input>, EngineError> {
        let weights = fractions(&additional);
        let (function, alias) = d.target(member);
        let state = d.member(member);
        let mut revision = state.alias_revision.clone();
        if revision.is_none() {
            // Saved before revisions were kept: the alias is read first.
            let Some(current) = self.alias_unless_moved_on(d, member, update).await? else {
                return Ok(None);
            };
            revision = current.revision;
        }
        for attempt in 0..ALIAS_WRITE_ATTEMPTS {
            if self
                .cloud
                .checkpoint(FaultPoint::AliasWrite { deployment: &d.id })
                .await
            {
                return Err(EngineError::Injected("UpdateAlias".into()));
            }
            let written = self
                .cloud
                .write_alias(function, alias, &primary, &weights, revision.as_deref())
                .await?;
            let after_retry = match written {
                AliasWrite::Written { revision } => {
                    return Ok(Some(Input::AliasUpdated {
                        update,
                        revision,
                        member,
                    }));
                }
                AliasWrite::Stale { after_retry } => after_retry,
            };
            let Some(current) = self.alias_unless_moved_on(d, member, update).await? else {
                return Ok(None);
            };
            if current.routes(&primary, &weights) {
                return Ok(Some(Input::AliasUpdated {
                    update,
                    revision: current.revision,
                    member,
                }));
            }
            let left_by_sluice = d
                .routings_left_by_sluice(member)
                .iter()
                .any(|(primary, additional)| current.routes(primary, &fractions(additional)));
            let untouched_start = attempt == 0
                && !after_retry
                && d.claims == 0
                && state.weight == 0.0
                && matches!(update, AliasUpdate::Step(_))
                && current.weights.is_empty()
                && state.from_version.as_deref() == Some(current.version.as_str());
            if !left_by_sluice && !untouched_start {
                tracing::warn!(deployment_id = %d.id, found = %current, alias = %d.target_name(member), "the alias was changed outside Sluice");
                metrics::emit(Metric::ManualAliasChanges, &self.stack_name);
                return Ok(Some(Input::AliasChangedByHand {
                    found: current.to_string(),
                    revision: current.revision,
                    member,
                }));
            }
            tracing::info!(deployment_id = %d.id, "the alias changed since Sluice's last write, not its traffic; writing again");
            revision = current.revision;
        }
        Err(EngineError::Aws(format!(
            "UpdateAlias: the alias changed under every one of {ALIAS_WRITE_ATTEMPTS} attempts"
        )))
    }

    /// The alias as it is, unless the saved deployment has moved on from
    /// `d` (its worker was overtaken). Read first, then the saved phase:
    /// any write that lands after this read was decided on a phase saved
    /// after this check saw its own.
    async fn alias_unless_moved_on(
        &self,
        d: &Deployment,
        member: usize,
        update: AliasUpdate,
    ) -> Result<Option<AliasState>, EngineError> {
        let (function, alias) = d.target(member);
        let Some(current) = self.cloud.read_alias(function, alias).await? else {
            return Err(EngineError::Aws(format!(
                "GetAlias: alias {function}:{alias} does not exist"
            )));
        };
        let saved = self.store.load(&d.id).await?.deployment;
        if saved.phase != d.phase {
            tracing::info!(deployment_id = %d.id, ?update, now = ?saved.phase, "alias write skipped: the deployment moved on");
            return Ok(None);
        }
        Ok(Some(current))
    }

    /// Takes every member's alias lock, in one order (by function and
    /// alias), so two groups never each hold what the other waits for;
    /// a lock held by another deployment gives back the ones taken here
    /// and queues. Then prepares each member, in the group's order.
    async fn prepare(&self, d: &Deployment) -> Result<Input, EngineError> {
        let mut order: Vec<usize> = (0..d.members()).collect();
        order.sort_by_key(|m| d.target(*m));
        let mut left: Vec<Option<AliasLeft>> = vec![None; d.members()];
        let mut taken = Vec::new();
        for m in order {
            match self.take_lock(d, m).await? {
                Ok(found) => {
                    left[m] = found;
                    taken.push(m);
                }
                Err(holder) => {
                    // Given back as found, with what the last deployment left.
                    for t in taken {
                        self.release_and_wake(d, t, left[t].as_ref()).await?;
                    }
                    return Ok(Input::LockBusy { holder, member: m });
                }
            }
        }
        // Every alias found whole before any version is published.
        let mut found = Vec::new();
        for (m, last) in left.iter().enumerate() {
            match self.alias_found(d, m, last.clone()).await? {
                Ok(alias) => found.push(alias),
                Err(reason) => return self.cannot_start(d, &left, m, reason).await,
            }
        }
        let mut prepared = Vec::new();
        for (m, (current, from_left)) in found.into_iter().enumerate() {
            match self.version_ready(d, m, current, from_left).await? {
                Ok(member) => prepared.push(member),
                Err(reason) => return self.cannot_start(d, &left, m, reason).await,
            }
        }
        let mut prepared = prepared.into_iter();
        let own = prepared.next().expect("the deployment's own function");
        let group = prepared.collect();
        Ok(Input::Prepared {
            from_version: own.from_version,
            to_version: own.to_version,
            function_arn: own.function_arn,
            revision: own.revision,
            metric_timing: Some(self.metric_timing),
            group,
        })
    }

    /// Takes member `m`'s alias lock: how the last deployment left the
    /// alias, or the live holder that has it.
    async fn take_lock(
        &self,
        d: &Deployment,
        m: usize,
    ) -> Result<Result<Option<AliasLeft>, String>, EngineError> {
        let lock = alias_lock(d, m);
        match self.store.acquire_lock(&lock, &d.id, self.now()).await? {
            LockOutcome::Acquired { left } => Ok(Ok(left)),
            LockOutcome::Busy { holder } => {
                // Taken again once a holder that ended without releasing it is released.
                if self.live_holder(&lock).await?.is_some() {
                    return Ok(Err(holder));
                }
                match self.store.acquire_lock(&lock, &d.id, self.now()).await? {
                    LockOutcome::Acquired { left } => Ok(Ok(left)),
                    LockOutcome::Busy { holder } => Ok(Err(holder)),
                }
            }
        }
    }

    /// Why member `m` cannot start, once every lock taken is given back as
    /// found (with what the last deployment left beside it).
    async fn cannot_start(
        &self,
        d: &Deployment,
        left: &[Option<AliasLeft>],
        m: usize,
        reason: String,
    ) -> Result<Input, EngineError> {
        for (taken, left) in left.iter().enumerate() {
            self.release_and_wake(d, taken, left.as_ref()).await?;
        }
        let reason = if d.members() > 1 {
            format!("{}: {reason}", d.target_name(m))
        } else {
            reason
        };
        Ok(Input::PrepareFailed { reason })
    }

    /// Member `m`'s alias, found whole (and whether as its last deployment
    /// left it), or why it cannot start.
    async fn alias_found(
        &self,
        d: &Deployment,
        m: usize,
        left: Option<AliasLeft>,
    ) -> Result<Result<(AliasState, bool), String>, EngineError> {
        let (function, alias) = d.target(m);
        let (found, from_left) = match self.alias_at_start(function, alias, left).await {
            Ok((found, from_left)) => (Ok(found), from_left),
            Err(e) => (Err(e), false),
        };
        Ok(whole_alias(function, alias, found)?.map(|current| (current, from_left)))
    }

    /// Member `m`'s new version ready (published from its artifact, or
    /// resolved) beside its alias as found, or why it cannot start.
    async fn version_ready(
        &self,
        d: &Deployment,
        m: usize,
        mut current: AliasState,
        from_left: bool,
    ) -> Result<Result<PreparedMember, String>, EngineError> {
        let (function, alias) = d.target(m);
        // The version must be `Active` before its first gate invokes it.
        let readiness = match d.spec.source_of(m) {
            VersionSource::Version(v) => self.cloud.ready_version(function, v).await?,
            VersionSource::Artifact {
                bucket,
                key,
                object_version,
            } => {
                self.cloud
                    .publish(function, bucket, key, object_version.as_deref())
                    .await?
            }
        };
        let to_version = match readiness {
            Readiness::Ready(v) => v,
            Readiness::Refused(reason) => return Ok(Err(reason)),
        };
        if from_left && to_version == current.version {
            // Nothing to shift, so no write to find a split: read it.
            let read = self.cloud.read_alias(function, alias).await;
            current = match whole_alias(function, alias, read)? {
                Ok(read) => read,
                Err(reason) => return Ok(Err(reason)),
            };
        }
        Ok(Ok(PreparedMember {
            from_version: current.version.clone(),
            to_version,
            // `function:alias` → `function`.
            function_arn: current
                .arn
                .as_deref()
                .and_then(|arn| arn.rsplit_once(':'))
                .map(|(function, _)| function.to_owned()),
            revision: current.revision,
        }))
    }

    /// The alias a deployment starts from. As the last deployment left it
    /// when that is known and the alias still serves that version
    /// (`GetFunction`, outside the control-plane quota): no `GetAlias`, and
    /// the first shift's write names the revision it left, so Lambda refuses
    /// it if anyone has written the alias since (`set_alias` tells a split,
    /// a person's, from a change that moved no traffic). Otherwise read.
    /// Also says whether it started from what was left.
    async fn alias_at_start(
        &self,
        function: &str,
        alias: &str,
        left: Option<AliasLeft>,
    ) -> Result<(Option<AliasState>, bool), EngineError> {
        if let Some(left) = left
            && self.cloud.alias_version(function, alias).await?.as_deref() == Some(&left.version)
        {
            let state = AliasState {
                version: left.version,
                weights: HashMap::new(),
                revision: Some(left.revision),
                arn: left.function_arn.map(|arn| format!("{arn}:{alias}")),
            };
            return Ok((Some(state), true));
        }
        Ok((self.cloud.read_alias(function, alias).await?, false))
    }

    /// Invokes an asynchronous hook with `payload`; its report comes by its token.
    async fn start_hook(
        &self,
        d: &Deployment,
        gate: Gate,
        step: usize,
        payload: Vec<u8>,
        token: &str,
    ) -> Result<Input, EngineError> {
        let hook = d.hook(gate).unwrap_or_default();
        match self.cloud.start_hook(hook, payload).await? {
            Invocation::NotRun(why) | Invocation::Raised(why) => Ok(Input::GateResult {
                gate,
                step,
                passed: false,
                reason: format!("hook {hook} could not be invoked: {why}"),
            }),
            Invocation::Answered(_) => Ok(Input::HookInvoked {
                gate,
                step,
                token_sha256: token_digest(token),
            }),
        }
    }

    /// Reads CloudWatch for `step`'s analysis. A failure is a fact for the
    /// deployment to weigh (read again, or its missing-data policy), not an
    /// error that holds the worker.
    async fn measure(&self, d: &Deployment, step: usize, from: Time, to: Time) -> Input {
        let p99 = d
            .spec
            .analysis
            .as_ref()
            .is_some_and(|a| a.max_p99_duration_ms.is_some());
        let mut measured = Vec::new();
        // Every member's, one after another: a group's reads are few (one
        // a period) and CloudWatch's quota is the account's.
        for m in 0..d.members() {
            if !d.moves(m) {
                // Left on its version: nothing new to judge, nothing read.
                measured.push(Measurement {
                    from,
                    to,
                    new: Default::default(),
                    old: Default::default(),
                });
                continue;
            }
            let (function, alias) = d.target(m);
            let state = d.member(m);
            let query = MetricQuery {
                function: function.to_owned(),
                alias: alias.to_owned(),
                new_version: state.to_version.unwrap_or_default(),
                old_version: state.from_version.unwrap_or_default(),
                from,
                to,
                period_secs: d.metric_timing.period_secs,
                p99,
            };
            match self.cloud.measure(&query).await {
                Ok((new, old)) => measured.push(Measurement { from, to, new, old }),
                Err(e) if d.members() > 1 => {
                    return Input::MeasureFailed {
                        step,
                        reason: format!("{}: {e}", d.target_name(m)),
                    };
                }
                Err(e) => {
                    return Input::MeasureFailed {
                        step,
                        reason: e.to_string(),
                    };
                }
            }
        }
        let measurement = measured.remove(0);
        Input::Measured {
            step,
            measurement,
            group: measured,
        }
    }

    async fn run_gate(
        &self,
        d: &Deployment,
        gate: Gate,
        step: usize,
        weight: f64,
    ) -> Result<Input, EngineError> {
        if let Some(passed) = settled_at_once(d, &Command::RunGate { gate, step, weight }) {
            return Ok(passed);
        }
        let verdict = |passed: bool, reason: String| Input::GateResult {
            gate,
            step,
            passed,
            reason,
        };
        if !d.spec.alarms.is_empty() {
            let found = self.cloud.alarms_in_alarm(&d.spec.alarms).await?;
            for name in &d.spec.alarms {
                match found.get(name) {
                    None => return Ok(verdict(false, format!("alarm {name} does not exist"))),
                    // An alarm rolls back at once, whatever the rollback policy.
                    Some(true) => {
                        return Ok(Input::AlarmRaised {
                            alarm: name.clone(),
                        });
                    }
                    Some(false) => {}
                }
            }
        }
        let Some(hook) = d.hook(gate) else {
            return Ok(verdict(true, "no hook; alarms OK".into()));
        };
        if d.spec.hook_invocation.reports_later() {
            // Invoked once its token's digest is saved (`Command::InvokeHook`).
            return Ok(Input::HookStarted {
                gate,
                step,
                token: callback_token(&d.id),
            });
        }
        let deadline = self.now()
            + chrono::Duration::from_std(self.hook_timeout).unwrap_or(chrono::Duration::MAX);
        let request = hook_request(d, gate, step, weight, deadline, None);
        let payload = match self
            .cloud
            .invoke_hook(hook, &request, self.hook_timeout)
            .await?
        {
            Invocation::Answered(payload) => payload,
            Invocation::Raised(message) => {
                return Ok(verdict(false, format!("hook {hook} failed: {message}")));
            }
            Invocation::NotRun(why) => {
                return Ok(verdict(false, format!("hook {hook} could not run: {why}")));
            }
        };
        match serde_json::from_slice::<HookResponse>(&payload) {
            Ok(answer) => Ok(verdict(
                answer.status == HookStatus::Succeeded,
                answer.summary(),
            )),
            Err(e) => Ok(verdict(
                false,
                format!("hook {hook} answered in an unknown shape: {e}"),
            )),
        }
    }
}

impl<S: Deployments, C: Cloud, K: Clock> Machine for Engine<S, C, K> {
    type State = Deployment;
    type Saved = Stored;
    type Input = Input;
    type Command = Command;
    type Event = Event;
    type Error = EngineError;

    fn id(d: &Deployment) -> &str {
        &d.id
    }

    fn decide(d: &Deployment, input: &Input, now: Time) -> (Deployment, Vec<Command>) {
        decide(d, input, now)
    }

    fn split(commands: Vec<Command>) -> (Vec<Event>, Vec<Command>) {
        split(commands)
    }

    fn settled_at_once(d: &Deployment, command: &Command) -> Option<Input> {
        settled_at_once(d, command)
    }

    fn claimed(d: &Deployment, now: Time) -> Deployment {
        Deployment {
            updated_at: now,
            claims: d.claims + 1,
            ..d.clone()
        }
    }

    fn now(&self) -> Time {
        self.clock.now()
    }

    fn span(&self, id: &str) -> tracing::Span {
        tracing::info_span!("deployment", deployment_id = %id)
    }

    async fn load(&self, id: &str) -> Result<Stored, StoreError> {
        self.store.load(id).await
    }

    async fn save(
        &self,
        d: &Deployment,
        expected: u64,
        events: &[Event],
    ) -> Result<Stored, StoreError> {
        self.store.save(d, expected, events).await
    }

    /// A save whose alias write this worker makes next takes that write's
    /// budget slot beside it (a steer's save does not: its worker writes,
    /// in its own process, and a slot reserved here would go unused).
    async fn save_to_run(
        &self,
        d: &Deployment,
        expected: u64,
        events: &[Event],
    ) -> Result<Stored, StoreError> {
        let writes_alias = matches!(
            d.phase,
            Phase::Shifting { .. }
                | Phase::RollingBack { .. }
                | Phase::SteppingBack {
                    stage: BackStage::Shifting,
                    ..
                }
        );
        // Only the save that enters the phase (or claims it) issues its
        // writes; one that records a member's write landed issues none.
        if writes_alias
            && d.landed.is_empty()
            && let Some(first) = (0..d.members()).find(|m| d.moves(*m))
        {
            // The first write's slot is taken beside the save; a group's
            // later writes take theirs as they come, in order (a slot
            // reserved for them now would be past by the time they run).
            let (function, alias) = d.target(first);
            // On the heap: the budget's future is large, and every drive
            // (and a test thread's stack, in a debug build) carries this one.
            let reserved = Box::pin(self.cloud.reserve_alias_call(function, alias));
            let (saved, ()) = tokio::join!(self.store.save(d, expected, events), reserved);
            return saved;
        }
        self.store.save(d, expected, events).await
    }

    fn recorded(&self, _before: &Deployment, after: &Stored, events: &[Event]) {
        for e in events {
            log_event(&after.deployment, e);
            count(&after.deployment, e);
        }
    }

    fn execute<'a>(
        &'a self,
        stored: &'a Stored,
        command: Command,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Option<Input>, EngineError>> {
        Box::pin(async move {
            let d = &stored.deployment;
            let stop = FaultPoint::Before {
                deployment: &d.id,
                command: &command,
            };
            if self.cloud.checkpoint(stop).await {
                return Err(EngineError::Injected(format!("{command:?}")));
            }
            let forward_write = match &command {
                Command::SetAlias { update, member, .. } if moves_forward(*update) => {
                    Some((*update, *member))
                }
                _ => None,
            };
            let done = self.execute_command(d, command).await;
            match (&done, forward_write) {
                // Still failing after its retries: the deployment rolls
                // back rather than wait half-shifted for the sweep.
                (Err(EngineError::Aws(reason)), Some((update, member)))
                    if attempt >= TRANSIENT_RETRIES =>
                {
                    return Ok(Some(Input::AliasWriteFailed {
                        update,
                        member,
                        reason: format!("{reason} (after {TRANSIENT_RETRIES} retries)"),
                    }));
                }
                (Err(e), _) => self.hand_back(stored, e, attempt).await,
                _ => {}
            }
            done
        })
    }

    async fn wake(
        &self,
        id: &str,
        version: u64,
        commands: Vec<Command>,
    ) -> Result<(), EngineError> {
        let work = HandedOver::SteeredDeployment {
            id: id.to_owned(),
            version,
            commands,
        };
        self.cloud.hand_over(&work, 0).await
    }
}

/// What a hook is sent: the deployment, the step and its weight, the gate
/// and its deadline, and for an asynchronous hook the token it reports with.
fn hook_request(
    d: &Deployment,
    gate: Gate,
    step: usize,
    weight: f64,
    deadline: Time,
    callback_token: Option<String>,
) -> HookRequest {
    HookRequest {
        deployment_id: d.id.clone(),
        function: d.spec.function.clone(),
        alias: d.spec.alias.clone(),
        from_version: d.from_version.clone().unwrap_or_default(),
        to_version: d.to_version.clone().unwrap_or_default(),
        from_version_arn: version_arn(&d.function_arn, &d.from_version),
        to_version_arn: version_arn(&d.function_arn, &d.to_version),
        step: step + 1,
        steps: d.schedule.steps.len(),
        weight,
        gate,
        stepping_back: matches!(d.phase, Phase::SteppingBack { .. }),
        group: (1..d.members())
            .map(|m| {
                let (function, alias) = d.target(m);
                let state = d.member(m);
                HookMember {
                    function: function.to_owned(),
                    alias: alias.to_owned(),
                    from_version_arn: version_arn(&state.function_arn, &state.from_version),
                    to_version_arn: version_arn(&state.function_arn, &state.to_version),
                    from_version: state.from_version.unwrap_or_default(),
                    to_version: state.to_version.unwrap_or_default(),
                }
            })
            .collect(),
        deadline: Some(deadline),
        callback_token,
        smoke_tests: d.spec.smoke_tests.clone(),
        smoke_tests_from: d.spec.smoke_tests_from.clone(),
    }
}

/// A version's qualified ARN, from its function's unqualified one.
fn version_arn(function_arn: &Option<String>, version: &Option<String>) -> Option<String> {
    Some(format!("{}:{}", function_arn.as_ref()?, version.as_ref()?))
}

/// A single-use callback token: the deployment's id (so a report finds
/// it), then 244 random bits from the OS's generator. Only its digest is saved.
pub fn callback_token(deployment_id: &str) -> String {
    format!(
        "{deployment_id}.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The deployment a callback token is for.
pub fn token_deployment(token: &str) -> Option<&str> {
    token
        .rsplit_once('.')
        .map(|(id, _)| id)
        .filter(|id| !id.is_empty())
}

/// Counts what a saved timeline line means in Sluice's metrics.
/// A timeline line as a log event, with what the dashboard's Logs Insights
/// widgets show and filter on (template.yaml; a test holds them to these
/// fields).
pub fn log_event(d: &Deployment, event: &Event) {
    tracing::info!(
        deployment_id = %d.id,
        function = %d.spec.function,
        alias = %d.spec.alias,
        from_version = d.from_version.as_deref().unwrap_or(""),
        to_version = d.to_version.as_deref().unwrap_or(""),
        weight = d.weight,
        phase = crate::store::phase_name(&d.phase),
        kind = ?event.kind,
        "{}",
        event.message
    );
}

fn count(d: &Deployment, event: &Event) {
    let metric = match event.kind {
        EventKind::Shifted => {
            // Later steps are due at planned times; the first starts the schedule.
            if let Some(planned) = d.planned_at
                && d.weight > d.step_weight(0)
            {
                let late = (event.at - planned).num_milliseconds().max(0);
                metrics::record(Metric::StepLatency, &d.spec.function, late as f64);
            }
            return;
        }
        EventKind::Prepared => Metric::DeploymentsStarted,
        EventKind::Promoted => Metric::DeploymentsPromoted,
        EventKind::RolledBack => Metric::DeploymentsRolledBack,
        EventKind::GatePassed => Metric::GatesPassed,
        EventKind::GateFailed => Metric::GatesFailed,
        _ => return,
    };
    metrics::emit(metric, &d.spec.function);
}

/// Lambda's routing weights (0 to 1) for an additional version at a percent.
fn fractions(additional: &Option<(String, f64)>) -> HashMap<String, f64> {
    additional
        .iter()
        .map(|(version, percent)| (version.clone(), percent / 100.0))
        .collect()
}
