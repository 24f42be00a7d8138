//! Deterministic simulation of the engine: the real `Engine` (its drive loop,
//! conditional saves, alias compare-and-set, reconcile and queueing) over
//! in-memory models of the table, the cloud and the clock (`model`).
//!
//! Each world runs deployments of several functions on one seeded die
//! (`dice`): table and cloud calls fail before or after taking effect, workers
//! die at any point between two side effects or are overtaken there by
//! another delivery, timers are lost, duplicated, delayed and reordered, and
//! operators pause, resume, promote, abort and retry, and people set an
//! alias by hand mid-deployment. Then the faults stop.
//! After every delivery the invariants are checked; at the end every
//! deployment must have finished within its schedule plus the sweep's grace.
//!
//! `SLUICE_SIM_WORLDS` (100) worlds of `SLUICE_SIM_DEPLOYMENTS` (100)
//! deployments, from `SLUICE_SIM_SEED`. A failing world is cut down to the
//! fewest deployments that still fail, and its replay is printed.

mod contract;
mod dice;
mod model;
#[path = "../support/mod.rs"]
mod support;

use dice::Dice;
use model::{
    AliasModel, GateName, MemoryActions, MemoryCloud, MemoryTable, Passed, SimClock, Written,
};
use sluice::clock::Clock;
use sluice::domain::deployment::{
    Command, Deployment, DeploymentSpec, EventKind, Gate, Input, MemberSpec, OnBusy,
    OnManualChange, Phase, RollbackPolicy, Time, VersionSource,
};
use sluice::domain::execution::{
    ActionState, Command as ExecutionCommand, Input as ExecutionInput, Status, StopMode,
};
use sluice::domain::pipeline::{GitRef, PipelineDefinition, Push};
use sluice::engine::{Engine, EngineError};
use sluice::events::HandedOver;
use sluice::events::PipelineTimer;
use sluice::events::TimerMessage;
use sluice::orchestrator::{Orchestrator, OrchestratorError};
use sluice::ports::FaultPoint;
use sluice::source::start_executions;
use sluice::store::{IN_FLIGHT_GRACE_SECS, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use support::FaultHook;

type SimEngine = Engine<MemoryTable, MemoryCloud, SimClock>;
type SimOrchestrator = Orchestrator<MemoryTable, MemoryCloud, SimClock, MemoryActions>;

const FUNCTIONS: [&str; 4] = ["orders", "payments", "search", "email"];
const ALIAS: &str = "live";
const ALARMS: [&str; 2] = ["errors", "latency"];
/// Marks the key of a failure's freeze among the freezes answered.
const FAILURE_FREEZE: &str = "failure until ";
/// As template.yaml has them.
const RECONCILE_EVERY_SECS: i64 = 60;
/// How long an analysed deployment watches its new version at 100%.
const ANALYSIS_WATCH_SECS: u64 = 120;
const TIMER_VISIBILITY_SECS: i64 = 1800;
const TIMER_MAX_RECEIVES: u32 = 5;
const STREAM_RETRIES: u32 = 10;
const PIPELINE_TIMER_VISIBILITY_SECS: i64 = 5400;
const ARTIFACT_BUCKET: &str = "artifacts";
/// One pipeline per execution mode, each deploying its own function.
const PIPELINES: [(&str, &str); 3] = [
    ("orders", "queued"),
    ("payments", "superseded"),
    ("search", "parallel"),
];
const ASYNC_RETRIES: u32 = 2;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Something delivered to the engine, as a trigger of the shifter would.
#[derive(Debug, Clone)]
enum Work {
    /// An operator or a pipeline starts a deployment (retried on failure).
    Start {
        id: String,
        spec: Box<DeploymentSpec>,
        attempt: u32,
    },
    /// The table's stream: a deployment item was created.
    Created {
        id: String,
        attempt: u32,
    },
    /// The timer queue.
    Timer {
        message: TimerMessage,
        receives: u32,
    },
    /// The timer queue: a deployment handed back after a transient failure.
    Retry {
        id: String,
        version: u64,
        attempt: u32,
        receives: u32,
    },
    /// The schedule.
    Reconcile,
    Operator {
        id: String,
        input: Input,
    },
    /// An alarm changes state (EventBridge, retried on failure).
    Alarm {
        name: String,
        in_alarm: bool,
        attempt: u32,
    },
    /// The faults stop; paused deployments are resumed and alarms clear.
    Calm,
    /// A push reaches the source function (retried by its sender on failure).
    Push {
        push: Box<Push>,
        attempt: u32,
    },
    /// The table's stream: an execution was started.
    Arrived {
        id: String,
        attempt: u32,
    },
    /// The table's stream: a deployment ended.
    Finished {
        id: String,
        attempt: u32,
    },
    /// The pipeline timer queue.
    PipelineTimer {
        timer: Box<PipelineTimer>,
        receives: u32,
    },
    /// The pipeline schedule's sweep.
    PipelineReconcile,
    /// The build uploads a commit's artifact.
    Upload {
        key: String,
    },
    /// The bucket's notification.
    ObjectCreated {
        key: String,
    },
    /// A person answers the execution's approval when it gets there.
    Approve {
        id: String,
        approved: bool,
        patience: u32,
    },
    /// A person stops or retries an execution.
    ExecutionOperator {
        id: String,
        input: ExecutionInput,
    },
    /// The pipeline timer queue: an execution steered by an operator, with
    /// the commands the steer decided.
    ExecutionSteered {
        id: String,
        version: u64,
        commands: Vec<ExecutionCommand>,
        receives: u32,
    },
    /// The timer queue: a deployment steered by an operator or the
    /// orchestrator, with the commands the steer decided.
    Steered {
        id: String,
        version: u64,
        commands: Vec<Command>,
        receives: u32,
    },
    /// On call, a person changes the alias a deployment is moving, by hand:
    /// back to the old version whole, or to a weight of their own.
    HandWrite {
        id: String,
        rollback: bool,
    },
}

fn describe(work: &Work) -> String {
    match work {
        Work::Start { id, spec, attempt } => format!(
            "start {id}: {} {:?} {} (attempt {attempt})",
            spec.function, spec.source, spec.config
        ),
        Work::Created { id, attempt } => format!("stream: {id} created (attempt {attempt})"),
        Work::Timer { message, receives } => format!(
            "timer {} step {} (receive {receives})",
            message.deployment_id, message.step
        ),
        Work::Retry {
            id,
            version,
            attempt,
            receives,
        } => format!("retry {attempt} of {id} at version {version} (receive {receives})"),
        Work::Reconcile => "reconcile".into(),
        Work::Operator { id, input } => format!("operator {input:?} on {id}"),
        Work::Alarm { name, in_alarm, .. } => {
            format!("alarm {name} {}", if *in_alarm { "ALARM" } else { "OK" })
        }
        Work::Calm => "faults stop".into(),
        Work::Push { push, attempt } => format!(
            "push {} {} {} (attempt {attempt})",
            push.repository,
            push.reference.name(),
            &push.sha[..7]
        ),
        Work::Arrived { id, attempt } => {
            format!("stream: execution {id} started (attempt {attempt})")
        }
        Work::Finished { id, attempt } => format!("stream: {id} ended (attempt {attempt})"),
        Work::PipelineTimer { timer, receives } => format!(
            "pipeline timer {} {:?}{} (receive {receives})",
            timer.execution_id,
            timer.at,
            if timer.recheck { " recheck" } else { "" }
        ),
        Work::PipelineReconcile => "pipeline reconcile".into(),
        Work::Upload { key } => format!("upload {key}"),
        Work::ObjectCreated { key } => format!("s3 notification {key}"),
        Work::Approve { id, approved, .. } => format!("approval {approved} on {id}"),
        Work::ExecutionOperator { id, input } => format!("operator {input:?} on {id}"),
        Work::ExecutionSteered { id, version, .. } | Work::Steered { id, version, .. } => {
            format!("{id} steered to {version}")
        }
        Work::HandWrite { id, rollback } => format!(
            "by hand: {id}'s alias {}",
            if *rollback {
                "back to its old version"
            } else {
                "to a weight of a person's"
            }
        ),
    }
}

struct Sim {
    engine: OnceLock<SimEngine>,
    orchestrator: OnceLock<SimOrchestrator>,
    definitions: Vec<PipelineDefinition>,
    /// For execution ids: what the source function draws at random.
    suffixes: AtomicU64,
    table: MemoryTable,
    cloud: MemoryCloud,
    actions: MemoryActions,
    clock: SimClock,
    dice: Dice,
    start: Time,
    queue: Mutex<BTreeMap<(Time, u64), Work>>,
    seq: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// Each deployment's last forward shift: when, and to which step.
    shifted: Mutex<BTreeMap<String, (Time, usize)>>,
    /// Frozen deployments an operator has been scheduled to answer (those
    /// frozen on a failure keyed by `FAILURE_FREEZE` and their wait's end).
    answered_freezes: Mutex<BTreeSet<(String, usize, String)>>,
    /// CodePipeline runs still going when the execution that started them
    /// had ended (run → execution): each must be stopped in the end.
    stops_owed: Mutex<BTreeMap<String, String>>,
    /// How deep deliveries are nested (one overtaking another).
    depth: AtomicUsize,
}

impl Sim {
    fn now(&self) -> Time {
        *self.clock.0.lock().unwrap()
    }

    /// The simulated time since the world began, for the replay.
    fn elapsed(&self) -> String {
        format!("{:>9.3}s", (self.now() - self.start).as_seconds_f64())
    }

    fn schedule(&self, at: Time, work: Work) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.queue.lock().unwrap().insert((at, seq), work);
    }

    fn schedule_in(&self, secs: i64, work: Work) {
        self.schedule(self.now() + chrono::Duration::seconds(secs), work);
    }

    /// A message of the shifter's queue whose handling failed after its
    /// `receives`-th receive comes back after the visibility timeout, until
    /// the queue's redrive moves it to the dead-letter queue.
    fn receive_again(&self, receives: u32, again: Work) {
        if receives < TIMER_MAX_RECEIVES {
            self.schedule_in(TIMER_VISIBILITY_SECS, again);
        } else {
            self.dice.note("      -> to the dead-letter queue".into());
        }
    }

    fn violation(&self, what: String) {
        self.dice.note(format!("      VIOLATION: {what}"));
        self.violations.lock().unwrap().push(what);
    }

    /// Hands timer messages to the queue, with the network's faults.
    fn post_timers(&self) {
        let sent = std::mem::take(&mut self.cloud.state.lock().unwrap().sent);
        let rates = self.dice.rates();
        for (message, delay) in sent {
            if self.dice.chance(rates.timer_lost) {
                self.dice.note(format!("      timer {message:?} lost"));
                continue;
            }
            let mut at = self.now() + chrono::Duration::seconds(delay.into());
            if self.dice.chance(rates.timer_delayed) {
                at += chrono::Duration::seconds(self.dice.below(30) as i64);
            }
            if self.dice.chance(rates.timer_duplicated) {
                let again = at + chrono::Duration::milliseconds(self.dice.below(2000) as i64);
                self.schedule(
                    again,
                    Work::Timer {
                        message: message.clone(),
                        receives: 1,
                    },
                );
            }
            self.schedule(
                at,
                Work::Timer {
                    message,
                    receives: 1,
                },
            );
        }
        let pipeline_sent = std::mem::take(&mut self.actions.state.lock().unwrap().sent);
        for (timer, delay) in pipeline_sent {
            if self.dice.chance(rates.timer_lost) {
                self.dice
                    .note(format!("      pipeline timer {timer:?} lost"));
                continue;
            }
            let mut at = self.now() + chrono::Duration::seconds(delay.into());
            if self.dice.chance(rates.timer_delayed) {
                at += chrono::Duration::seconds(self.dice.below(30) as i64);
            }
            let work = |timer: &PipelineTimer| Work::PipelineTimer {
                timer: Box::new(timer.clone()),
                receives: 1,
            };
            if self.dice.chance(rates.timer_duplicated) {
                self.schedule(at + chrono::Duration::seconds(1), work(&timer));
            }
            self.schedule(at, work(&timer));
        }
        // The simulation delivers the stream's records to the workers itself;
        // what is handed over (a retry after a transient failure, mostly) is
        // delivered after its delay, like a timer.
        let to_shifter = std::mem::take(&mut self.cloud.state.lock().unwrap().handed_over);
        let to_orchestrator = std::mem::take(&mut self.actions.state.lock().unwrap().handed_over);
        for (work, delay) in to_shifter {
            let work = match work {
                HandedOver::Retry {
                    id,
                    version,
                    attempt,
                } => Work::Retry {
                    id,
                    version,
                    attempt,
                    receives: 1,
                },
                HandedOver::SteeredDeployment {
                    id,
                    version,
                    commands,
                } => Work::Steered {
                    id,
                    version,
                    commands,
                    receives: 1,
                },
                other => Work::Created {
                    id: other.id().to_owned(),
                    attempt: 1,
                },
            };
            self.schedule_in(1 + i64::from(delay), work);
        }
        for work in to_orchestrator {
            let work = match work {
                HandedOver::Arrived(id) => Work::Arrived { id, attempt: 1 },
                HandedOver::DeploymentFinished(id) => Work::Finished { id, attempt: 1 },
                HandedOver::SteeredExecution {
                    id,
                    version,
                    commands,
                } => Work::ExecutionSteered {
                    id,
                    version,
                    commands,
                    receives: 1,
                },
                other @ (HandedOver::Retry { .. } | HandedOver::SteeredDeployment { .. }) => {
                    self.violation(format!("{other} handed to the orchestrator"));
                    continue;
                }
            };
            self.schedule_in(1, work);
        }
        let stream = self.table.drain_stream();
        for id in stream.created {
            self.schedule_in(1, Work::Created { id, attempt: 1 });
        }
        for id in stream.finished {
            self.schedule_in(1, Work::Finished { id, attempt: 1 });
        }
        for id in stream.new_executions {
            self.schedule_in(
                1,
                Work::Arrived {
                    id: id.clone(),
                    attempt: 1,
                },
            );
            self.plan_operators(&id);
        }
    }

    /// What people do about a new execution: mostly approve it in time.
    fn plan_operators(&self, id: &str) {
        let later =
            |max: u64| self.now() + chrono::Duration::seconds(60 + self.dice.below(max) as i64);
        if self.dice.chance(0.9) {
            let approved = self.dice.chance(0.9);
            self.schedule(
                later(600),
                Work::Approve {
                    id: id.to_owned(),
                    approved,
                    patience: 60,
                },
            );
        }
        if self.dice.chance(0.05) {
            let mode = if self.dice.chance(0.5) {
                StopMode::Abandon
            } else {
                StopMode::Finish
            };
            self.schedule(
                later(1200),
                Work::ExecutionOperator {
                    id: id.to_owned(),
                    input: ExecutionInput::Stop {
                        mode,
                        reason: "operator".into(),
                    },
                },
            );
        }
        if self.dice.chance(0.2) {
            self.schedule(
                later(3600),
                Work::ExecutionOperator {
                    id: id.to_owned(),
                    input: ExecutionInput::RetryStage {
                        failed_only: self.dice.chance(0.5),
                    },
                },
            );
        }
    }

    /// An operator's resume, promote or abort of a frozen deployment tells
    /// Sluice to go on from the alias as the person left it.
    fn consent(&self, id: &str, input: &Input) {
        let Some(d) = self.table.peek(id) else { return };
        if matches!(d.phase, Phase::Frozen { .. })
            && matches!(input, Input::Resume | Input::Promote | Input::Abort { .. })
            && let Some(revision) = d.alias_revision.and_then(|r| r.parse().ok())
        {
            self.cloud.state.lock().unwrap().consented.insert((
                d.spec.function.clone(),
                d.spec.alias.clone(),
                revision,
            ));
        }
    }

    /// On call answers a frozen deployment, some minutes later: resumes it
    /// from the alias as found, or aborts it. One frozen on a failure is
    /// aborted, promoted (its gate run again), or left to the end of its
    /// wait.
    fn answer_freezes(&self) {
        for d in self.table.deployments() {
            if let Phase::FrozenOnFailure { step, until, .. } = &d.phase {
                let key = (d.id.clone(), *step, format!("{FAILURE_FREEZE}{until}"));
                if !self.answered_freezes.lock().unwrap().insert(key) {
                    continue;
                }
                let input = match self.dice.below(3) {
                    0 => Input::Abort {
                        reason: "on call rolled it back".into(),
                    },
                    1 => Input::Promote,
                    _ => continue,
                };
                self.schedule_in(
                    30 + self.dice.below(300) as i64,
                    Work::Operator { id: d.id, input },
                );
                continue;
            }
            let Phase::Frozen { step, found } = &d.phase else {
                continue;
            };
            let key = (
                d.id.clone(),
                *step,
                d.alias_revision.clone().unwrap_or_default(),
            );
            if !self.answered_freezes.lock().unwrap().insert(key) {
                continue;
            }
            let input = if self.dice.chance(0.5) {
                Input::Resume
            } else {
                Input::Abort {
                    reason: format!("on call found {found}"),
                }
            };
            self.schedule_in(
                30 + self.dice.below(300) as i64,
                Work::Operator { id: d.id, input },
            );
        }
    }

    /// The invariants, after every delivery.
    fn check(&self) {
        let (aliases, by_hand) = {
            let mut state = self.cloud.state.lock().unwrap();
            for w in std::mem::take(&mut state.written) {
                let before = (w.function.clone(), w.alias.clone(), w.before.revision);
                let writer = w.holder.as_ref().map(|h| h.id.clone());
                if state
                    .by_hand
                    .get(&before)
                    .is_some_and(|held| *held == writer)
                    && !state.consented.contains(&before)
                {
                    self.violation(format!(
                        "{}:{} written over a person's change (revision {}) without an operator's word",
                        w.function, w.alias, w.before.revision
                    ));
                }
                self.check_write(&w, &state.passed);
            }
            for gate in std::mem::take(&mut state.run_while_under_way) {
                self.violation(format!(
                    "{}'s {:?} gate of step {} run again while a worker had it under way",
                    gate.deployment,
                    gate.gate,
                    gate.step + 1
                ));
            }
            (state.aliases.clone(), state.by_hand.clone())
        };
        self.answer_freezes();
        for ((function, alias), state) in &aliases {
            if by_hand.contains_key(&(function.clone(), alias.clone(), state.revision)) {
                // As a person left it: Sluice does not touch it.
                continue;
            }
            let holder = self
                .table
                .peek_lock(function, alias)
                .and_then(|id| self.table.peek(&id));
            if !state.is_whole() {
                match &holder {
                    None => self.violation(format!(
                        "{function}:{alias} is split ({state:?}) and no deployment holds it"
                    )),
                    Some(h) if h.phase.is_terminal() => self.violation(format!(
                        "{function}:{alias} is split ({state:?}) but its holder {} has ended: {:?}",
                        h.id, h.phase
                    )),
                    Some(h) => {
                        let member = h.member(member_of(h, function, alias).unwrap_or(0));
                        let ours = [member.from_version.as_deref(), member.to_version.as_deref()];
                        let versions = std::iter::once(&state.version).chain(state.weights.keys());
                        for v in versions {
                            if !ours.contains(&Some(v.as_str())) {
                                self.violation(format!(
                                    "{function}:{alias} serves {v}, not a version of its holder {}",
                                    h.id
                                ));
                            }
                        }
                    }
                }
            }
        }
        // A group between its writes holds every member it moves, split or
        // whole, at the group's weight (a person's alias aside).
        self.table.each_active(|h| {
            let between_writes = matches!(
                h.phase,
                Phase::PreTraffic { .. }
                    | Phase::PostTraffic { .. }
                    | Phase::Baking { .. }
                    | Phase::FrozenOnFailure { .. }
            );
            if h.members() == 1 || h.group.is_empty() || !between_writes {
                return;
            }
            for m in (0..h.members()).filter(|m| h.moves(*m)) {
                let (function, alias) = h.target(m);
                let key = (function.to_owned(), alias.to_owned());
                let Some(state) = aliases.get(&key) else {
                    continue;
                };
                if by_hand.contains_key(&(key.0.clone(), key.1.clone(), state.revision)) {
                    continue;
                }
                let to = h.member(m).to_version.unwrap_or_default();
                let on_new = state.percent_on(&to);
                if (on_new - h.weight).abs() > 1e-6 {
                    self.violation(format!(
                        "{function}:{alias} is at {on_new}% on {to} while its group {} is at {}% in {:?}",
                        h.id, h.weight, h.phase
                    ));
                }
            }
        });
        let mut owners: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut groups = Vec::new();
        self.table.each_active(|d| {
            if owns_the_alias(&d.phase) {
                for (function, alias) in d.spec.targets() {
                    owners
                        .entry((function.to_owned(), alias.to_owned()))
                        .or_default()
                        .push(d.id.clone());
                }
            }
            groups.extend(group_problem(d));
        });
        for problem in groups {
            self.violation(problem);
        }
        self.check_executions();
        for ((function, alias), ids) in owners {
            if ids.len() > 1 {
                self.violation(format!(
                    "{function}:{alias} has {} active deployments: {ids:?}",
                    ids.len()
                ));
            }
            let holder = self.table.peek_lock(&function, &alias);
            if holder.as_ref() != ids.first() {
                self.violation(format!(
                    "{function}:{alias} is being deployed by {ids:?} but the lock is {holder:?}"
                ));
            }
        }
    }

    /// At most one execution per (pipeline, commit); in queued mode, at most
    /// one running per pipeline. A CodePipeline run still going once its
    /// execution has ended is owed a stop (checked at the world's end: a stop
    /// that failed is tried again later).
    fn check_executions(&self) {
        let mut by_commit: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let now = self.clock.now();
        self.table.each_execution(|e| {
            if e.status.is_final() {
                let going = self.actions.state.lock().unwrap().runs_going(&e.id, now);
                let mut owed = self.stops_owed.lock().unwrap();
                for run in going {
                    owed.entry(run).or_insert_with(|| e.id.clone());
                }
            }
            by_commit
                .entry((e.pipeline.clone(), e.push.sha.clone()))
                .or_default()
                .push(e.id.clone());
            if e.status == Status::InProgress
                && e.definition.execution_mode == sluice::domain::pipeline::ExecutionMode::Queued
            {
                running
                    .entry(e.pipeline.clone())
                    .or_default()
                    .push(e.id.clone());
            }
        });
        for ((pipeline, sha), ids) in by_commit {
            if ids.len() > 1 {
                self.violation(format!(
                    "{pipeline} runs commit {sha} {} times: {ids:?}",
                    ids.len()
                ));
            }
        }
        for (pipeline, ids) in running {
            if ids.len() > 1 {
                self.violation(format!("queued pipeline {pipeline} runs {ids:?} at once"));
            }
        }
    }

    /// A write that moves traffic onto a deployment's new version needs that
    /// step's passed PreTraffic gate, and the previous step's PostTraffic.
    fn check_write(&self, w: &Written, passed: &BTreeSet<Passed>) {
        let name = format!("{}:{}", w.function, w.alias);
        let Some(holder) = &w.holder else {
            if !w.after.is_whole() || w.after.version != w.before.version {
                self.violation(format!("{name} written with no holder: {:?}", w.after));
            }
            return;
        };
        let member = holder.member(member_of(holder, &w.function, &w.alias).unwrap_or(0));
        let Some(to) = member.to_version.as_deref() else {
            self.violation(format!(
                "{name} written by {} before it knew its versions",
                holder.id
            ));
            return;
        };
        let (before, after) = (w.before.percent_on(to), w.after.percent_on(to));
        // A gradual rollback only ever lowers the new version's weight.
        if after > before && matches!(holder.phase, Phase::SteppingBack { .. }) {
            self.violation(format!(
                "{name} raised from {before}% to {after}% on {to} while {} stepped back",
                holder.id
            ));
        }
        if after <= before || member.from_version.as_deref() == Some(to) {
            return;
        }
        let Some(step) = holder
            .schedule
            .steps
            .iter()
            .position(|s| (s.weight - after).abs() < 1e-6)
        else {
            self.violation(format!(
                "{name} set to {after}% on {to}, which is no step of {}",
                holder.id
            ));
            return;
        };
        // A bake is a bake: the next shift waits for the whole of it, unless promoted.
        let now = w.at;
        let mut shifted = self.shifted.lock().unwrap();
        let key = format!("{} {name}", holder.id);
        if let Some((at, previous)) = shifted.get(&key)
            && previous + 1 == step
            && !holder.skip_waits
        {
            let bake = holder.schedule.steps[*previous].bake;
            if (now - *at).to_std().unwrap_or_default() < bake {
                self.violation(format!(
                    "{name} set to step {} of {} {:.3}s after step {}, within its bake of {bake:?}",
                    step + 1,
                    holder.id,
                    (now - *at).as_seconds_f64(),
                    step
                ));
            }
        }
        shifted.insert(key, (now, step));
        drop(shifted);
        let gate = |gate, step| Passed {
            deployment: holder.id.clone(),
            gate,
            step,
        };
        if !passed.contains(&gate(GateName::Pre, step)) {
            self.violation(format!(
                "{name} set to {after}% for {} without a passed PreTraffic gate of step {}",
                holder.id,
                step + 1
            ));
        }
        if step > 0 && !passed.contains(&gate(GateName::Post, step - 1)) {
            self.violation(format!(
                "{name} set to {after}% for {} without a passed PostTraffic gate of step {}",
                holder.id, step
            ));
        }
    }
}

/// The member of `d` that moves `function:alias`, if any.
fn member_of(d: &Deployment, function: &str, alias: &str) -> Option<usize> {
    (0..d.members()).find(|m| d.target(*m) == (function, alias))
}

/// The release-group invariant of a saved state: every member at the same
/// step, or within one write of it while the step's writes land, or
/// rolling back together.
fn group_problem(d: &Deployment) -> Option<String> {
    if d.members() == 1 || d.group.is_empty() || d.phase.is_terminal() {
        return None;
    }
    let weights: Vec<f64> = (0..d.members())
        .filter(|m| d.moves(*m))
        .map(|m| d.member(m).weight)
        .collect();
    let step_weight = |step: usize| d.step_weight(step);
    let allowed: Vec<f64> = match &d.phase {
        Phase::RollingBack { .. } => return None,
        Phase::Shifting { step } => {
            vec![
                step_weight(*step),
                step.checked_sub(1).map_or(0.0, step_weight),
            ]
        }
        Phase::SteppingBack {
            step,
            stage: sluice::domain::deployment::BackStage::Shifting,
            ..
        } => vec![step_weight(*step), step_weight(*step + 1)],
        _ => vec![d.weight],
    };
    let off: Vec<f64> = weights
        .iter()
        .copied()
        .filter(|w| !allowed.iter().any(|a| (a - w).abs() < 1e-9))
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "group {} saved in {:?} with its members at {weights:?}",
            d.id, d.phase
        )
    })
}

/// Phases in which a deployment has the alias to itself.
fn owns_the_alias(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::PreTraffic { .. }
            | Phase::Shifting { .. }
            | Phase::PostTraffic { .. }
            | Phase::Baking { .. }
            | Phase::Frozen { .. }
            | Phase::FrozenOnFailure { .. }
            | Phase::SteppingBack { .. }
            | Phase::RollingBack { .. }
    )
}

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one piece of work to its end (or its worker's death), re-queues what
/// a real trigger would retry, then checks the invariants.
fn deliver(sim: Arc<Sim>, work: Work) -> Delivery {
    Box::pin(async move {
        let depth = sim.depth.load(Ordering::Relaxed);
        sim.dice.note(format!(
            "{} {}{}",
            sim.elapsed(),
            "  ".repeat(depth),
            describe(&work)
        ));
        let engine = sim.engine.get().expect("engine set").clone();
        let orchestrator = sim.orchestrator.get().expect("orchestrator set").clone();
        let failed = |e: &dyn std::fmt::Display| sim.dice.note(format!("      -> {e}"));
        let retry = |secs: i64, work: Work| sim.schedule_in(secs, work);
        match work {
            Work::Start { id, spec, attempt } => match engine.start(&id, (*spec).clone()).await {
                Ok(_) | Err(EngineError::Store(StoreError::AlreadyExists(_))) => {}
                Err(e) => {
                    failed(&e);
                    if attempt < 3 {
                        sim.schedule_in(
                            5,
                            Work::Start {
                                id,
                                spec,
                                attempt: attempt + 1,
                            },
                        );
                    }
                }
            },
            Work::Created { id, attempt } => {
                if let Err(e) = engine.arrived(&id).await {
                    failed(&e);
                    if attempt <= STREAM_RETRIES {
                        sim.schedule_in(
                            2,
                            Work::Created {
                                id,
                                attempt: attempt + 1,
                            },
                        );
                    }
                }
            }
            Work::Timer { message, receives } => match engine.timer(&message).await {
                Ok(_) | Err(EngineError::Store(StoreError::NotFound(_))) => {}
                Err(e) => {
                    failed(&e);
                    let again = Work::Timer {
                        message,
                        receives: receives + 1,
                    };
                    sim.receive_again(receives, again);
                }
            },
            Work::Retry {
                id,
                version,
                attempt,
                receives,
            } => match engine.take_up(&id, version, attempt).await {
                Ok(_) | Err(EngineError::Store(StoreError::NotFound(_))) => {}
                Err(e) => {
                    failed(&e);
                    let again = Work::Retry {
                        id,
                        version,
                        attempt,
                        receives: receives + 1,
                    };
                    sim.receive_again(receives, again);
                }
            },
            Work::Reconcile => {
                if let Err(e) = engine.reconcile().await {
                    failed(&e);
                }
                sim.schedule_in(RECONCILE_EVERY_SECS, Work::Reconcile);
            }
            Work::Operator { id, input } => {
                sim.consent(&id, &input);
                if let Err(e) = engine.steer(&id, input).await {
                    failed(&e);
                }
            }
            Work::HandWrite { id, rollback } => {
                if let Some(d) = sim.table.peek(&id).filter(|d| owns_the_alias(&d.phase))
                    && let m = sim.dice.below(d.members() as u64) as usize
                    && let state = d.member(m)
                    && let (Some(from), Some(to)) = (state.from_version, state.to_version)
                {
                    let (function, alias) = d.target(m);
                    sim.cloud.write_by_hand(function, alias, |a| {
                        a.version = from;
                        a.weights = if rollback {
                            BTreeMap::new()
                        } else {
                            // No step of any generated schedule.
                            BTreeMap::from([(to, 0.333)])
                        };
                    });
                }
            }
            Work::Alarm {
                name,
                in_alarm,
                attempt,
            } => {
                sim.cloud
                    .state
                    .lock()
                    .unwrap()
                    .alarms
                    .insert(name.clone(), in_alarm);
                if in_alarm && let Err(e) = engine.alarm_raised(&name).await {
                    failed(&e);
                    if attempt <= ASYNC_RETRIES {
                        sim.schedule_in(
                            60,
                            Work::Alarm {
                                name,
                                in_alarm,
                                attempt: attempt + 1,
                            },
                        );
                    }
                }
            }
            Work::Calm => {
                sim.dice.calm();
                for name in ALARMS {
                    sim.cloud
                        .state
                        .lock()
                        .unwrap()
                        .alarms
                        .insert(name.into(), false);
                }
                let paused: Vec<String> = sim
                    .table
                    .deployments()
                    .into_iter()
                    .filter(|d| {
                        (d.paused && !d.phase.is_terminal())
                            || matches!(d.phase, Phase::Frozen { .. })
                    })
                    .map(|d| d.id)
                    .collect();
                for id in paused {
                    sim.consent(&id, &Input::Resume);
                    if let Err(e) = engine.steer(&id, Input::Resume).await {
                        failed(&e);
                    }
                }
            }
            Work::Push { push, attempt } => {
                let suffix = || format!("{:08x}", sim.suffixes.fetch_add(1, Ordering::Relaxed));
                let started = start_executions(
                    &sim.table,
                    sim.definitions.clone(),
                    &push,
                    sim.now(),
                    suffix,
                )
                .await;
                if let Err(e) = started {
                    failed(&e);
                    if attempt < 3 {
                        let attempt = attempt + 1;
                        retry(10, Work::Push { push, attempt });
                    }
                }
            }
            Work::Arrived { id, attempt } => {
                if let Err(e) = orchestrator.arrived(&id).await {
                    failed(&e);
                    if attempt <= STREAM_RETRIES {
                        let attempt = attempt + 1;
                        retry(2, Work::Arrived { id, attempt });
                    }
                }
            }
            Work::Finished { id, attempt } => {
                if let Err(e) = orchestrator.deployment_finished(&id).await {
                    failed(&e);
                    if attempt <= STREAM_RETRIES {
                        let attempt = attempt + 1;
                        retry(2, Work::Finished { id, attempt });
                    }
                }
            }
            Work::PipelineTimer { timer, receives } => match orchestrator.timer(&timer).await {
                Ok(_) | Err(OrchestratorError::Store(StoreError::NotFound(_))) => {}
                Err(e) => {
                    failed(&e);
                    if receives < TIMER_MAX_RECEIVES {
                        let receives = receives + 1;
                        retry(
                            PIPELINE_TIMER_VISIBILITY_SECS,
                            Work::PipelineTimer { timer, receives },
                        );
                    } else {
                        sim.dice.note("      -> to the dead-letter queue".into());
                    }
                }
            },
            Work::PipelineReconcile => {
                if let Err(e) = orchestrator.reconcile().await {
                    failed(&e);
                }
                sim.schedule_in(RECONCILE_EVERY_SECS, Work::PipelineReconcile);
            }
            Work::Upload { key } => {
                sim.actions
                    .state
                    .lock()
                    .unwrap()
                    .objects
                    .insert((ARTIFACT_BUCKET.into(), key.clone()), "v1".into());
                if !sim.dice.chance(sim.dice.rates().timer_lost) {
                    sim.schedule_in(1, Work::ObjectCreated { key });
                }
            }
            Work::ObjectCreated { key } => {
                if let Err(e) = orchestrator.object_created(ARTIFACT_BUCKET, &key).await {
                    failed(&e);
                }
            }
            Work::Approve {
                id,
                approved,
                patience,
            } => {
                // Answers the approval once the execution waits on it.
                let waiting = sim.table.peek_execution(&id).and_then(|e| {
                    let stage = &e.definition.stages[e.stage];
                    stage
                        .actions
                        .iter()
                        .zip(&e.actions)
                        .enumerate()
                        .find(|(_, (action, run))| {
                            matches!(
                                action.kind,
                                sluice::domain::pipeline::ActionKind::Approval(_)
                            ) && matches!(run.state, ActionState::Running { .. })
                        })
                        .map(|(i, (_, run))| sluice::domain::execution::ActionRef {
                            stage: e.stage,
                            action: i,
                            attempt: run.attempt,
                        })
                        .filter(|_| e.status == Status::InProgress)
                });
                match waiting {
                    Some(at) => {
                        let input = ExecutionInput::Approval {
                            at,
                            approved,
                            by: "sim".into(),
                            comment: String::new(),
                        };
                        if let Err(e) = orchestrator.steer(&id, input).await {
                            failed(&e);
                        }
                    }
                    None if patience > 0 => {
                        let patience = patience - 1;
                        retry(
                            60,
                            Work::Approve {
                                id,
                                approved,
                                patience,
                            },
                        );
                    }
                    None => {}
                }
            }
            Work::ExecutionOperator { id, input } => {
                if let Err(e) = orchestrator.steer(&id, input).await {
                    failed(&e);
                }
            }
            Work::ExecutionSteered {
                id,
                version,
                commands,
                receives,
            } => match orchestrator
                .run_steered(&id, version, commands.clone())
                .await
            {
                Ok(_) | Err(OrchestratorError::Store(StoreError::NotFound(_))) => {}
                Err(e) => {
                    failed(&e);
                    if receives < TIMER_MAX_RECEIVES {
                        let receives = receives + 1;
                        retry(
                            PIPELINE_TIMER_VISIBILITY_SECS,
                            Work::ExecutionSteered {
                                id,
                                version,
                                commands,
                                receives,
                            },
                        );
                    }
                }
            },
            Work::Steered {
                id,
                version,
                commands,
                receives,
            } => match engine.run_steered(&id, version, commands.clone()).await {
                Ok(_) | Err(EngineError::Store(StoreError::NotFound(_))) => {}
                Err(e) => {
                    failed(&e);
                    let again = Work::Steered {
                        id,
                        version,
                        commands,
                        receives: receives + 1,
                    };
                    sim.receive_again(receives, again);
                }
            },
        }
        sim.post_timers();
        sim.check();
    })
}

/// At each fault point a worker may die; or another worker may act on the
/// same deployment right there (a duplicate of its trigger, an operator); or
/// the next delivery that is about due may run first.
fn fault_hook(sim: Weak<Sim>) -> FaultHook {
    Arc::new(move |point: FaultPoint<'_>| {
        let sim = sim.upgrade().expect("simulation alive");
        let point_kind = match point {
            FaultPoint::Before { .. } => PointKind::Before,
            FaultPoint::AliasWrite { .. } => PointKind::AliasWrite,
        };
        let (deployment, place) = match point {
            FaultPoint::Before {
                deployment,
                command,
            } => (deployment, format!("before {}", command_name(command))),
            FaultPoint::AliasWrite { deployment } => (deployment, "in its alias write".into()),
        };
        let gate = match point {
            FaultPoint::Before {
                deployment,
                command: Command::RunGate { gate, step, .. },
            } => Some(Passed {
                deployment: deployment.to_owned(),
                gate: match gate {
                    Gate::PreTraffic => GateName::Pre,
                    Gate::PostTraffic => GateName::Post,
                },
                step: *step,
            }),
            _ => None,
        };
        let deployment = deployment.to_owned();
        Box::pin(async move {
            if matches!(point_kind, PointKind::AliasWrite) {
                let d = sim.table.peek(&deployment).map(|d| d.phase);
                sim.dice
                    .note(format!("      {deployment} ({d:?}) is writing its alias"));
            }
            let rates = sim.dice.rates();
            if sim.dice.chance(rates.crash) {
                sim.dice
                    .note(format!("      {deployment}'s worker dies {place}"));
                return true;
            }
            if sim.depth.load(Ordering::Relaxed) > 0 {
                return false;
            }
            let rival = if sim.dice.chance(rates.interfere) {
                interference(&sim, &deployment)
            } else if sim.dice.chance(rates.preempt) {
                let soon = sim.now() + chrono::Duration::seconds(3);
                let mut queue = sim.queue.lock().unwrap();
                match queue.first_key_value() {
                    // The faults' end stays with the main loop, which
                    // fixes the deadline from it.
                    Some((&(at, _), work)) if at <= soon && !matches!(work, Work::Calm) => {
                        queue.pop_first().map(|((at, _), work)| {
                            advance(&sim.clock, at);
                            work
                        })
                    }
                    _ => None,
                }
            } else {
                None
            };
            if let Some(work) = rival {
                sim.dice
                    .note(format!("      {deployment}'s worker overtaken {place} by:"));
                sim.depth.fetch_add(1, Ordering::Relaxed);
                sim.cloud.state.lock().unwrap().gate_under_way = gate;
                deliver(sim.clone(), work).await;
                sim.cloud.state.lock().unwrap().gate_under_way = None;
                sim.depth.fetch_sub(1, Ordering::Relaxed);
            }
            false
        })
    })
}

enum PointKind {
    Before,
    AliasWrite,
}

/// Another worker acting on `id` at the same moment.
fn interference(sim: &Sim, id: &str) -> Option<Work> {
    let d = sim.table.peek(id)?;
    let id = id.to_owned();
    Some(match sim.dice.below(10) {
        0..=3 => Work::Created { id, attempt: 1 },
        4..=5 => match d.phase {
            // A timer delivered twice, or the one for a wake since moved.
            Phase::Baking { step, until } => Work::Timer {
                message: TimerMessage {
                    deployment_id: id,
                    step,
                    at: Some(d.bake_wake().unwrap_or(until)),
                },
                receives: 1,
            },
            _ => Work::Reconcile,
        },
        6..=7 => Work::Operator {
            id,
            input: Input::Abort {
                reason: "operator, mid-way".into(),
            },
        },
        8 => Work::Operator {
            id,
            input: Input::Promote,
        },
        _ => Work::Operator {
            id,
            input: Input::Pause,
        },
    })
}

fn command_name(command: &sluice::domain::deployment::Command) -> String {
    let text = format!("{command:?}");
    text.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn advance(clock: &SimClock, to: Time) {
    let mut now = clock.0.lock().unwrap();
    if *now < to {
        *now = to;
    }
}

/// What a world does: the same seed and count give the same plan.
struct Plan {
    seed: u64,
    /// Deployments started directly (by operators).
    deployments: usize,
    /// Pushes to the pipelines' repositories.
    pushes: usize,
}

fn pipeline_definitions() -> Vec<PipelineDefinition> {
    PIPELINES
        .iter()
        .map(|(function, mode)| {
            let text = format!(
                r#"
name: {function}
source:
  repository: acme/{function}
  branches:
    include: [main]
execution_mode: {mode}
stages:
  - name: build
    actions:
      - name: artifact
        kind: artifact
        config:
          key: "builds/{{repo}}/{{sha}}/app.zip"
          timeout: 10m
      - name: unit
        kind: invoke
        config:
          function: unit-tests
  - name: canary
    actions:
      - name: deploy
        kind: deploy
        config:
          function: {function}
          alias: live
          artifact: artifact
          config: "steps:10@30s,50@45s,100"
          pre_traffic_hook: pre-traffic
          post_traffic_hook: post-traffic
  - name: approve
    actions:
      - name: release
        kind: approval
        config:
          timeout: 20m
  - name: downstream
    actions:
      - name: soak
        kind: wait
        config:
          duration: 1m
      - name: integration
        kind: codepipeline
        config:
          pipeline: integration
"#
            );
            PipelineDefinition::parse(&text).expect("the simulation's pipelines are valid")
        })
        .collect()
}

/// Pushes to the pipelines' repositories, some delivered twice, some to
/// other branches; the build uploads most commits' artifacts a while later.
fn lay_out_pushes(sim: &Sim, plan: &Plan, dice: &Dice) -> Time {
    let secs = chrono::Duration::seconds;
    let mut at = sim.start;
    for _ in 0..plan.pushes {
        at += secs(dice.below(90) as i64);
        let (function, _) = PIPELINES[dice.below(PIPELINES.len() as u64) as usize];
        let repository = format!("acme/{function}");
        let sha: String = (0..40)
            .map(|_| char::from_digit(dice.below(16) as u32, 16).unwrap())
            .collect();
        let branch = if dice.chance(0.9) { "main" } else { "feature" };
        let push = Push {
            repository: repository.clone(),
            reference: GitRef::Branch(branch.into()),
            sha: sha.clone(),
            deleted: false,
            forced: false,
            changed_paths: None,
            message: None,
            author: None,
        };
        let deliver = |when| {
            sim.schedule(
                when,
                Work::Push {
                    push: Box::new(push.clone()),
                    attempt: 1,
                },
            )
        };
        deliver(at);
        if dice.chance(0.2) {
            // The webhook delivered again (a redelivery, another hook).
            deliver(at + chrono::Duration::milliseconds(dice.below(5000) as i64));
        }
        if dice.chance(0.95) {
            sim.schedule(
                at + secs(dice.below(300) as i64),
                Work::Upload {
                    key: format!("builds/{repository}/{sha}/app.zip"),
                },
            );
        }
    }
    at
}

fn config(dice: &Dice) -> String {
    let secs = |max| 1 + dice.below(max);
    match dice.below(6) {
        0 => format!("canary:{}:{}s", 1 + dice.below(50), secs(300)),
        1 => format!(
            "linear:{}:{}s",
            [10, 20, 25, 50][dice.below(4) as usize],
            secs(120)
        ),
        2 => "AllAtOnce".into(),
        3 => "Canary10Percent5Minutes".into(),
        _ => {
            let mut weight = 0;
            let mut steps = Vec::new();
            while weight < 100 {
                weight = (weight + 1 + dice.below(60) as u32).min(100);
                if weight == 100 {
                    steps.push("100".to_owned());
                } else {
                    steps.push(format!("{weight}@{}s", secs(90)));
                }
            }
            format!("steps:{}", steps.join(","))
        }
    }
}

/// Lays out a world's deployments, operators and alarms on its own dice, so
/// a shorter plan of the same seed is a prefix of a longer one.
fn lay_out(sim: &Sim, plan: &Plan) {
    let dice = Dice::new(plan.seed ^ 0x9e37_79b9_7f4a_7c15);
    let pushes_end = lay_out_pushes(sim, plan, &Dice::new(plan.seed ^ 0x51ce));
    let mut at = sim.start;
    let secs = chrono::Duration::seconds;
    let mut last = at;
    for n in 0..plan.deployments {
        at += secs(dice.below(45) as i64);
        let id = format!("d{n}");
        let function = FUNCTIONS[dice.below(FUNCTIONS.len() as u64) as usize];
        let source = match dice.below(10) {
            0 => VersionSource::Artifact {
                bucket: "artifacts".into(),
                key: format!("{function}/missing.zip"),
                object_version: None,
            },
            1..=5 => VersionSource::Artifact {
                bucket: "artifacts".into(),
                key: format!("{function}/{n}.zip"),
                object_version: None,
            },
            v => VersionSource::Version((v - 5).to_string()),
        };
        let mut spec = DeploymentSpec {
            function: function.into(),
            alias: ALIAS.into(),
            source,
            config: config(&dice).parse().expect("generated configs parse"),
            pre_traffic_hook: Some("pre-traffic".into()),
            post_traffic_hook: Some("post-traffic".into()),
            alarms: ALARMS
                .iter()
                .filter(|_| dice.chance(0.3))
                .map(|a| a.to_string())
                .collect(),
            on_manual_change: if dice.chance(0.5) {
                OnManualChange::Freeze
            } else {
                OnManualChange::Rollback
            },
            on_busy: if dice.chance(0.1) {
                OnBusy::Refuse
            } else {
                OnBusy::Queue
            },
            smoke_tests: vec![],
            smoke_tests_from: None,
            // Some judge their bakes on CloudWatch's late minutes (read on
            // timers, failing as the dice say), and watch after 100%.
            analysis: dice.chance(0.3).then(|| {
                serde_json::from_value(serde_json::json!({
                    "on_inconclusive": "fail", "watch_after_promotion_seconds": ANALYSIS_WATCH_SECS
                }))
                .expect("analysis settings parse")
            }),
            hook_invocation: Default::default(),
            hook_timeout_seconds: None,
            rollback: RollbackPolicy::Immediate,
            frozen_for_seconds: None,
            group: vec![],
        };
        // Some hold their split on a failure, for an operator or the end
        // of their wait; some step back down gradually.
        match dice.below(10) {
            0..=2 => {
                spec.rollback = RollbackPolicy::Freeze;
                spec.frozen_for_seconds = Some(60 + dice.below(600));
            }
            3..=5 => spec.rollback = RollbackPolicy::Gradual,
            _ => {}
        }
        // A quarter move one or two more functions in lockstep (a release group).
        if dice.chance(0.25) {
            let others: Vec<&str> = FUNCTIONS
                .iter()
                .copied()
                .filter(|f| *f != function)
                .collect();
            let first = dice.below(others.len() as u64) as usize;
            let size = 1 + dice.below(2) as usize;
            spec.group = (0..size)
                .map(|i| {
                    let member = others[(first + i) % others.len()];
                    let source = if dice.chance(0.5) {
                        VersionSource::Artifact {
                            bucket: "artifacts".into(),
                            key: format!("{member}/{n}.zip"),
                            object_version: None,
                        }
                    } else {
                        VersionSource::Version((1 + dice.below(3)).to_string())
                    };
                    MemberSpec {
                        function: member.into(),
                        alias: ALIAS.into(),
                        source,
                    }
                })
                .collect();
            // A person's change of one member's alias rolls the others back.
            spec.on_manual_change = OnManualChange::Rollback;
        }
        sim.schedule(
            at,
            Work::Start {
                id: id.clone(),
                spec: Box::new(spec),
                attempt: 1,
            },
        );
        // Operators act on some, at some time in the first ten minutes.
        let act = |input: Input, within: u64| {
            let when = at + secs(dice.below(within) as i64);
            sim.schedule(
                when,
                Work::Operator {
                    id: id.clone(),
                    input,
                },
            );
            when
        };
        if dice.chance(0.1) {
            let paused = act(Input::Pause, 300);
            if dice.chance(0.7) {
                sim.schedule(
                    paused + secs(dice.below(300) as i64),
                    Work::Operator {
                        id: id.clone(),
                        input: Input::Resume,
                    },
                );
            }
        }
        if dice.chance(0.05) {
            act(Input::Promote, 600);
        }
        if dice.chance(0.08) {
            sim.schedule(
                at + secs(dice.below(600) as i64),
                Work::HandWrite {
                    id: id.clone(),
                    rollback: dice.chance(0.5),
                },
            );
        }
        if dice.chance(0.05) {
            act(
                Input::Abort {
                    reason: "operator".into(),
                },
                600,
            );
        }
        if dice.chance(0.05) {
            act(
                Input::Retry {
                    new_id: format!("{id}-retry"),
                },
                1200,
            );
        }
        if dice.chance(0.03) {
            let name = ALARMS[dice.below(ALARMS.len() as u64) as usize];
            let when = at + secs(dice.below(600) as i64);
            sim.schedule(
                when,
                Work::Alarm {
                    name: name.into(),
                    in_alarm: true,
                    attempt: 1,
                },
            );
            sim.schedule(
                when + secs(30 + dice.below(120) as i64),
                Work::Alarm {
                    name: name.into(),
                    in_alarm: false,
                    attempt: 1,
                },
            );
        }
        last = last.max(at);
    }
    // Faults stop a while after the last start; the operators' late actions
    // before then still happen.
    sim.schedule(last.max(pushes_end) + secs(1300), Work::Calm);
    sim.schedule(sim.start, Work::Reconcile);
    if plan.pushes > 0 {
        sim.schedule(sim.start, Work::PipelineReconcile);
    }
}

/// The outcome of one world: the violations and the replay.
struct Outcome {
    violations: Vec<String>,
    trace: Vec<String>,
    deployments: usize,
    promoted: usize,
    rolled_back: usize,
    /// Rolled back by the analysis of a bake or of the watch after 100%.
    by_analysis: usize,
    /// Ended by a person's change of the alias, left as found.
    taken_by_hand: usize,
    /// Times on call found a deployment frozen by a person's change.
    frozen: usize,
    /// Times a failure froze a deployment (`rollback: freeze`).
    frozen_on_failure: usize,
    /// Rolled back at the end of a failure's freeze, with no operator's word.
    ended_by_wait: usize,
    /// Stepped down at least one weight by a gradual rollback.
    stepped_back: usize,
    failed_to_start: usize,
    /// Release groups promoted, and rolled back, as a whole.
    groups_promoted: usize,
    groups_rolled_back: usize,
    executions: usize,
    succeeded: usize,
    deliveries: u64,
}

/// Executions still queued or in progress.
fn unfinished(table: &MemoryTable) -> Vec<String> {
    let mut ids = Vec::new();
    table.each_execution(|e| {
        if matches!(e.status, Status::Queued | Status::InProgress) {
            ids.push(e.id.clone());
        }
    });
    ids
}

fn run_world(plan: &Plan) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dice = Dice::new(plan.seed);
        let start: Time = "2026-01-01T00:00:00Z".parse().unwrap();
        let table = MemoryTable::new(dice.clone());
        let clock = SimClock(Arc::new(Mutex::new(start)));
        let cloud = MemoryCloud::new(dice.clone(), table.clone(), clock.clone());
        {
            let mut state = cloud.state.lock().unwrap();
            for function in FUNCTIONS {
                state.versions.insert(function.into(), 3);
                state.aliases.insert(
                    (function.into(), ALIAS.into()),
                    AliasModel {
                        version: "1".into(),
                        weights: BTreeMap::new(),
                        revision: 1,
                    },
                );
            }
            for name in ALARMS {
                state.alarms.insert(name.into(), false);
            }
        }
        let actions = MemoryActions::new(dice.clone(), clock.clone());
        let sim = Arc::new(Sim {
            engine: OnceLock::new(),
            orchestrator: OnceLock::new(),
            definitions: pipeline_definitions(),
            suffixes: AtomicU64::new(0),
            table: table.clone(),
            cloud: cloud.clone(),
            actions: actions.clone(),
            clock,
            dice: dice.clone(),
            start,
            queue: Mutex::default(),
            seq: AtomicU64::new(0),
            violations: Mutex::default(),
            answered_freezes: Mutex::default(),
            stops_owed: Mutex::default(),
            shifted: Mutex::default(),
            depth: AtomicUsize::new(0),
        });
        let engine = Engine::new(table.clone(), cloud.clone(), sim.clock.clone(), Duration::from_secs(60));
        cloud.inject(fault_hook(Arc::downgrade(&sim)));
        let orchestrator = Orchestrator::new(engine.clone(), actions, ARTIFACT_BUCKET.into());
        assert!(sim.engine.set(engine).is_ok());
        assert!(sim.orchestrator.set(orchestrator).is_ok());
        lay_out(&sim, plan);

        let mut deliveries = 0;
        let mut calm_at = None;
        loop {
            let next = sim.queue.lock().unwrap().pop_first();
            let Some(((at, _), work)) = next else { break };
            if matches!(work, Work::Calm) {
                // Fixed now: what is unfinished must finish by then.
                calm_at = Some((at, at + deadline(&table)));
            }
            if let Some((_, by)) = calm_at
                && at > by
            {
                break;
            }
            // The reconcile schedule never ends: a world whose faults never
            // stopped is a broken world, reported rather than run forever.
            if calm_at.is_none() && at - start > chrono::Duration::days(7) {
                sim.violation("the faults never stopped: the world ran a week".into());
                break;
            }
            advance(&sim.clock, at);
            deliveries += 1;
            deliver(sim.clone(), work).await;
            if calm_at.is_some() && table.active_count() == 0 && unfinished(&table).is_empty() {
                break;
            }
        }
        let deployments = table.deployments();
        for d in &deployments {
            if !d.phase.is_terminal() {
                sim.violation(format!(
                    "{} did not finish: {:?} at {} (faults stopped at {})",
                    d.id,
                    d.phase,
                    sim.elapsed(),
                    calm_at
                        .map(|(c, _)| (c - start).num_seconds())
                        .unwrap_or(-1)
                ));
            }
        }
        let executions = table.executions();
        for (run, execution) in sim.stops_owed.lock().unwrap().iter() {
            if !sim.actions.state.lock().unwrap().was_stopped(run) {
                sim.violation(format!(
                    "execution {execution} ended, but the CodePipeline run {run} it started was never stopped"
                ));
            }
        }
        for id in unfinished(&table) {
            let e = table.peek_execution(&id).unwrap();
            sim.violation(format!(
                "execution {id} did not finish: {:?} at stage {} {:?}",
                e.status, e.stage, e.actions
            ));
        }
        for e in executions.iter().filter(|e| e.status == Status::Succeeded) {
            // Its deploy action's last attempt promoted its deployment.
            let attempt = e.outputs.get("deploy").and_then(|o| o.get("deployment"));
            match attempt.and_then(|id| table.peek(id)) {
                Some(d) if d.phase == Phase::Promoted && d.id.starts_with(&e.id) => {}
                other => sim.violation(format!(
                    "execution {} succeeded but its deployment is {:?}",
                    e.id,
                    other.map(|d| (d.id, d.phase))
                )),
            }
        }
        let count = |f: fn(&Phase) -> bool| deployments.iter().filter(|d| f(&d.phase)).count();
        let freezes = |on_failure: bool| {
            let answered = sim.answered_freezes.lock().unwrap();
            answered
                .iter()
                .filter(|(_, _, key)| key.starts_with(FAILURE_FREEZE) == on_failure)
                .count()
        };
        let violations = sim.violations.lock().unwrap().clone();
        Outcome {
            violations,
            trace: dice.trace(),
            deployments: deployments.len(),
            promoted: count(|p| matches!(p, Phase::Promoted)),
            rolled_back: count(|p| matches!(p, Phase::RolledBack { .. })),
            taken_by_hand: count(
                |p| matches!(p, Phase::RolledBack { reason } if reason.contains("changed outside Sluice")),
            ),
            by_analysis: count(
                |p| matches!(p, Phase::RolledBack { reason } if reason.starts_with("analysis failed")),
            ),
            frozen: freezes(false),
            frozen_on_failure: freezes(true),
            ended_by_wait: count(
                |p| matches!(p, Phase::RolledBack { reason } if reason.contains("no operator's word")),
            ),
            stepped_back: deployments
                .iter()
                .filter(|d| {
                    table.timeline(&d.id).iter().any(|e| {
                        e.kind == EventKind::Shifted && e.message.contains("stepping back")
                    })
                })
                .count(),
            failed_to_start: count(|p| matches!(p, Phase::FailedToStart { .. })),
            groups_promoted: deployments
                .iter()
                .filter(|d| d.members() > 1 && d.phase == Phase::Promoted)
                .count(),
            groups_rolled_back: deployments
                .iter()
                .filter(|d| d.members() > 1 && matches!(d.phase, Phase::RolledBack { .. }))
                .count(),
            executions: executions.len(),
            succeeded: executions
                .iter()
                .filter(|e| e.status == Status::Succeeded)
                .count(),
            deliveries,
        }
    })
}

/// How long after the faults stop every deployment must have finished: the
/// unfinished ones of each alias run one after another, each within its
/// schedule, plus the sweep's grace and interval for a worker that died.
fn deadline(table: &MemoryTable) -> chrono::Duration {
    let mut per_alias: BTreeMap<(String, String), chrono::Duration> = BTreeMap::new();
    let slack = chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS + 2 * RECONCILE_EVERY_SECS);
    table.each_active(|d: &Deployment| {
        let mut bake = chrono::Duration::from_std(d.schedule.total_bake()).unwrap();
        if d.spec.analysis.is_some() {
            // Each bake lasts at least until the minute of its shift is read
            // (a minute, and the read delay, after it began), and the watch.
            let first_read =
                chrono::Duration::from_std(Duration::from_secs(d.metric_timing.period_secs as u64))
                    .unwrap()
                    + d.metric_timing.lag();
            bake += first_read * d.schedule.steps.len() as i32
                + chrono::Duration::seconds(ANALYSIS_WATCH_SECS as i64);
        }
        for (function, alias) in d.spec.targets() {
            *per_alias
                .entry((function.to_owned(), alias.to_owned()))
                .or_insert(slack) += bake + slack;
        }
    });
    // An execution runs its stages one after another, within their
    // timeouts; a queued pipeline runs its executions one at a time.
    let per_execution = chrono::Duration::minutes(60);
    let mut per_pipeline: BTreeMap<String, chrono::Duration> = BTreeMap::new();
    for id in unfinished(table) {
        let e = table.peek_execution(&id).unwrap();
        *per_pipeline.entry(e.pipeline).or_insert(slack) += per_execution;
    }
    per_alias
        .into_values()
        .chain(per_pipeline.into_values())
        .max()
        .unwrap_or(slack)
}

/// Runs `worlds` worlds of `plan`'s size from consecutive seeds; panics
/// with the replay of the first that breaks an invariant.
fn run_worlds(seed: u64, worlds: u64, deployments: usize, pushes: usize) -> Totals {
    let mut totals = Totals::default();
    for world in 0..worlds {
        let plan = Plan {
            seed: seed.wrapping_add(world),
            deployments,
            pushes,
        };
        let outcome = run_world(&plan);
        if !outcome.violations.is_empty() {
            panic!("{}", replay(&plan, outcome, &test_name()));
        }
        totals.deployments += outcome.deployments;
        totals.promoted += outcome.promoted;
        totals.rolled_back += outcome.rolled_back;
        totals.taken_by_hand += outcome.taken_by_hand;
        totals.by_analysis += outcome.by_analysis;
        totals.frozen += outcome.frozen;
        totals.frozen_on_failure += outcome.frozen_on_failure;
        totals.ended_by_wait += outcome.ended_by_wait;
        totals.stepped_back += outcome.stepped_back;
        totals.groups_promoted += outcome.groups_promoted;
        totals.groups_rolled_back += outcome.groups_rolled_back;
        totals.failed_to_start += outcome.failed_to_start;
        totals.executions += outcome.executions;
        totals.succeeded += outcome.succeeded;
        totals.deliveries += outcome.deliveries;
    }
    println!("{worlds} worlds from seed {seed}: {totals:?}");
    totals
}

#[derive(Debug, Default)]
struct Totals {
    deployments: usize,
    promoted: usize,
    rolled_back: usize,
    /// Rolled back by the analysis of a bake or of the watch after 100%.
    by_analysis: usize,
    /// Ended by a person's change of the alias, left as found.
    taken_by_hand: usize,
    /// Times on call found a deployment frozen by a person's change.
    frozen: usize,
    /// Times a failure froze a deployment (`rollback: freeze`).
    frozen_on_failure: usize,
    /// Rolled back at the end of a failure's freeze, with no operator's word.
    ended_by_wait: usize,
    /// Stepped down at least one weight by a gradual rollback.
    stepped_back: usize,
    failed_to_start: usize,
    /// Release groups promoted, and rolled back, as a whole.
    groups_promoted: usize,
    groups_rolled_back: usize,
    executions: usize,
    succeeded: usize,
    deliveries: u64,
}

fn test_name() -> String {
    std::thread::current().name().unwrap_or_default().to_owned()
}

#[test]
fn deployments_never_strand_traffic_skip_a_gate_or_stall_under_faults() {
    let seed = setting("SLUICE_SIM_SEED", 0x5e1ce);
    let worlds = setting("SLUICE_SIM_WORLDS", 100);
    let per_world = setting("SLUICE_SIM_DEPLOYMENTS", 100) as usize;
    let totals = run_worlds(seed, worlds, per_world, 0);
    assert!(
        totals.deployments >= worlds as usize * per_world,
        "retries add deployments"
    );
    // The dice must have let every ending happen, or the run proves little.
    assert!(
        totals.promoted > 0 && totals.rolled_back > 0 && totals.failed_to_start > 0,
        "{totals:?}"
    );
    assert!(totals.taken_by_hand > 0 && totals.frozen > 0, "{totals:?}");
    assert!(
        totals.frozen_on_failure > 0 && totals.ended_by_wait > 0 && totals.stepped_back > 0,
        "{totals:?}"
    );
    assert!(totals.by_analysis > 0, "{totals:?}");
    assert!(
        totals.groups_promoted > 0 && totals.groups_rolled_back > 0,
        "{totals:?}"
    );
}

#[test]
fn pipeline_executions_start_once_per_commit_and_all_finish_under_faults() {
    let seed = setting("SLUICE_SIM_SEED", 0x5e1ce);
    let worlds = setting("SLUICE_SIM_PIPELINE_WORLDS", 48);
    let per_world = setting("SLUICE_SIM_PUSHES", 50) as usize;
    let totals = run_worlds(seed, worlds, 0, per_world);
    // One in ten pushes is to a branch no pipeline builds.
    assert!(
        totals.executions * 10 >= worlds as usize * per_world * 8,
        "{totals:?}"
    );
    assert!(
        totals.succeeded > 0 && totals.succeeded < totals.executions,
        "{totals:?}"
    );
    assert!(totals.promoted > 0 && totals.rolled_back > 0, "{totals:?}");
}

/// Cuts a failing world down to the fewest deployments and pushes that still
/// fail, and prints that run, delivery by delivery.
fn replay(plan: &Plan, outcome: Outcome, test: &str) -> String {
    let size = plan.deployments.max(plan.pushes);
    let mut smallest = (plan.deployments, plan.pushes, outcome);
    for n in 1..size {
        let (deployments, pushes) = (plan.deployments.min(n), plan.pushes.min(n));
        let shorter = run_world(&Plan {
            seed: plan.seed,
            deployments,
            pushes,
        });
        if !shorter.violations.is_empty() {
            smallest = (deployments, pushes, shorter);
            break;
        }
    }
    let (deployments, pushes, outcome) = smallest;
    format!(
        "world of seed {seed} failed; the smallest failing plan has {deployments} deployments and {pushes} pushes.\n\
         Replay: SLUICE_SIM_SEED={seed} SLUICE_SIM_WORLDS=1 SLUICE_SIM_PIPELINE_WORLDS=1 SLUICE_SIM_DEPLOYMENTS={deployments} SLUICE_SIM_PUSHES={pushes} cargo test --test simulation {test}\n\
         Violations:\n  {}\nDeliveries:\n{}",
        outcome.violations.join("\n  "),
        outcome.trace.join("\n"),
        seed = plan.seed,
    )
}
