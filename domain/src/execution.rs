//! Pipeline executions, sans IO: `decide(execution, input, now) -> (execution,
//! commands)`, as for deployments. An execution runs its definition's stages
//! in order; in a stage, the actions of the lowest pending run order run
//! together, and the next group starts when all of them passed. One failed
//! action fails the execution (it can be retried from that stage). Stale,
//! duplicate and out-of-order inputs change nothing: every action result
//! names the stage, action and attempt it is for.

use crate::pipeline::{ActionKind, ExecutionMode, PipelineDefinition, Push};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Time = DateTime<Utc>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an earlier execution of the pipeline (queued mode).
    Queued,
    InProgress,
    Succeeded,
    Failed {
        reason: String,
    },
    Stopped {
        reason: String,
    },
    /// A newer execution took over at a stage boundary (superseded mode).
    Superseded {
        by: String,
    },
}

/// As operators read it: "in progress", "failed: <reason>".
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Queued => write!(f, "queued"),
            Status::InProgress => write!(f, "in progress"),
            Status::Succeeded => write!(f, "succeeded"),
            Status::Failed { reason } => write!(f, "failed: {reason}"),
            Status::Stopped { reason } => write!(f, "stopped: {reason}"),
            Status::Superseded { by } => write!(f, "superseded by {by}"),
        }
    }
}

/// As operators read it: "running since 12:00:01", "succeeded: <detail>".
impl std::fmt::Display for ActionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionState::Pending => write!(f, "pending"),
            ActionState::Running { since } => {
                write!(f, "running since {}", since.format("%H:%M:%S"))
            }
            ActionState::Succeeded { detail } => write!(f, "succeeded: {detail}"),
            ActionState::Failed { reason } => write!(f, "failed: {reason}"),
            ActionState::Abandoned => write!(f, "abandoned"),
            ActionState::Stopped => write!(f, "abandoned and stopped"),
        }
    }
}

impl Status {
    /// Finished for good: a failed execution can still retry a stage.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Stopped { .. } | Status::Superseded { .. }
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Status::InProgress)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ActionState {
    /// Not started: a later run order, or not reached yet.
    Pending,
    Running {
        since: Time,
    },
    Succeeded {
        detail: String,
    },
    Failed {
        reason: String,
    },
    /// Stopped by an operator before it finished; what it started (a
    /// deployment, a CodePipeline execution) is still to be told to stop.
    Abandoned,
    /// Abandoned, and what it started was told to stop.
    Stopped,
}

/// One action of the current stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRun {
    pub name: String,
    pub run_order: u32,
    pub state: ActionState,
    /// Counts retries; a result for an older attempt is stale.
    pub attempt: u32,
    /// What this attempt started elsewhere (a CodePipeline execution's id):
    /// what a stop must stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// How an operator stops an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Stop now; running actions are abandoned (a running deployment is aborted).
    Abandon,
    /// Let running actions finish, then stop before anything else starts.
    Finish,
}

/// One line of an execution's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionEvent {
    pub at: Time,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub pipeline: String,
    /// The definition as it was when the push arrived: later edits do not change a run.
    pub definition: PipelineDefinition,
    pub push: Push,
    #[serde(flatten)]
    pub status: Status,
    /// The stage running, or where the execution ended.
    pub stage: usize,
    pub actions: Vec<ActionRun>,
    /// What finished actions produced, by action name (an artifact's object, a deployment's id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Which action an input is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    pub stage: usize,
    pub action: usize,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// The execution may run (its turn came, by execution mode).
    Start,
    ActionSucceeded {
        at: ActionRef,
        detail: String,
        #[serde(default)]
        outputs: BTreeMap<String, String>,
    },
    ActionFailed {
        at: ActionRef,
        reason: String,
    },
    /// A running action started something elsewhere (a CodePipeline
    /// execution), still running: `run` names it, for a stop to stop it.
    ActionRunStarted {
        at: ActionRef,
        run: String,
    },
    /// A wait is over, or an action's deadline passed.
    TimerFired {
        at: ActionRef,
    },
    /// An answer to an approval action.
    Approval {
        at: ActionRef,
        approved: bool,
        by: String,
        comment: String,
    },
    Stop {
        mode: StopMode,
        reason: String,
    },
    /// Runs the failed stage again: its failed actions only, or all of them.
    RetryStage {
        failed_only: bool,
    },
    /// A newer execution started (superseded mode): stop at the next stage boundary.
    Supersede {
        by: String,
    },
    /// What an abandoned action started was told to stop (its deployment
    /// aborted, its CodePipeline execution stopped, or that stop scheduled).
    ActionStopped {
        at: ActionRef,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Start the action; its result comes back as an input.
    RunAction {
        at: ActionRef,
    },
    /// Wake the execution at `at` (a wait's end, an action's deadline).
    StartTimer {
        at: ActionRef,
        when: Time,
    },
    /// Stop a running action: abort its deployment, or stop the CodePipeline
    /// execution it started (abandoned, or once its actions in progress finish).
    CancelAction {
        at: ActionRef,
        mode: StopMode,
    },
    /// The execution is final: let the next one of the pipeline run.
    ReleaseTurn,
    /// The execution waits for the pipeline's turn (queued mode): start the
    /// longest-waiting one if the turn is free.
    TakeTurn,
    Record(ExecutionEvent),
}

const WAITING_FOR_TURN: &str = "waiting for its turn (queued mode: one execution at a time)";

impl Execution {
    /// A new execution of `definition` for `push`, not started: `decide(Start)`
    /// starts it when its record arrives, or, if the pipeline queues
    /// executions, when it gets the pipeline's turn. Starting on arrival (a
    /// save) rather than at creation lets a record delivered again see that
    /// a worker has it, so no action is run twice.
    pub fn create(
        id: &str,
        definition: PipelineDefinition,
        push: Push,
        now: Time,
    ) -> (Self, Vec<Command>) {
        let e = Execution {
            id: id.to_owned(),
            pipeline: definition.name.clone(),
            definition,
            push,
            status: Status::Queued,
            stage: 0,
            actions: Vec::new(),
            outputs: BTreeMap::new(),
            stopping: None,
            superseded_by: None,
            created_at: now,
            updated_at: now,
        };
        let mut commands = vec![record(
            now,
            format!(
                "started by {} {} at {}{}",
                match e.push.reference {
                    crate::pipeline::GitRef::Branch(_) => "a push to",
                    crate::pipeline::GitRef::Tag(_) => "the tag",
                },
                e.push.reference.name(),
                short(&e.push.sha),
                if e.push.forced { " (forced)" } else { "" }
            ),
        )];
        if e.definition.execution_mode == ExecutionMode::Queued {
            commands.push(record(now, WAITING_FOR_TURN.into()));
        }
        (e, commands)
    }

    pub fn stage_name(&self) -> &str {
        self.definition
            .stages
            .get(self.stage)
            .map_or("", |s| s.name.as_str())
    }

    /// What a stage's action does.
    pub fn kind(&self, stage: usize, action: usize) -> &ActionKind {
        &self.definition.stages[stage].actions[action].kind
    }

    /// The action an input names, if it is the current attempt of a running action.
    fn running(&self, at: &ActionRef) -> Option<usize> {
        let run = self.actions.get(at.action)?;
        (at.stage == self.stage
            && run.attempt == at.attempt
            && matches!(run.state, ActionState::Running { .. })
            && matches!(self.status, Status::InProgress))
        .then_some(at.action)
    }

    fn action_ref(&self, action: usize) -> ActionRef {
        ActionRef {
            stage: self.stage,
            action,
            attempt: self.actions[action].attempt,
        }
    }
}

fn short(sha: &str) -> &str {
    super::clip(sha, 7)
}

/// The timeline lines among `commands`.
pub fn events_of(commands: &[Command]) -> Vec<ExecutionEvent> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Record(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn record(at: Time, message: String) -> Command {
    Command::Record(ExecutionEvent { at, message })
}

/// What the saved state needs done: what the reconcile sweep issues again
/// after a worker died. Every command is idempotent.
pub fn pending(e: &Execution, now: Time) -> Vec<Command> {
    let mut commands = Vec::new();
    match &e.status {
        Status::Queued => {
            if e.definition.execution_mode == ExecutionMode::Queued {
                commands.push(Command::TakeTurn);
            }
            return commands;
        }
        // Neither holds the turn; what a stop abandoned is told to stop
        // (the executor knows which kinds of action run elsewhere).
        Status::Failed { .. }
        | Status::Succeeded
        | Status::Stopped { .. }
        | Status::Superseded { .. } => {
            for (i, run) in e.actions.iter().enumerate() {
                if run.state == ActionState::Abandoned {
                    commands.push(Command::CancelAction {
                        at: e.action_ref(i),
                        mode: StopMode::Abandon,
                    });
                }
            }
            commands.push(Command::ReleaseTurn);
            return commands;
        }
        Status::InProgress => {}
    }
    for (i, run) in e.actions.iter().enumerate() {
        if let ActionState::Running { since } = run.state {
            let at = e.action_ref(i);
            commands.push(Command::RunAction { at });
            if let Some(when) = deadline(e.kind(e.stage, i), since) {
                commands.push(Command::StartTimer {
                    at,
                    when: when.max(now),
                });
            }
            // Asked to stop once running actions finish: told again.
            if e.stopping.is_some() && run.run.is_some() && stops_on_request(e.kind(e.stage, i)) {
                commands.push(Command::CancelAction {
                    at,
                    mode: StopMode::Finish,
                });
            }
        }
    }
    commands
}

/// When a running action times out (or, for a wait, is done).
fn deadline(kind: &ActionKind, since: Time) -> Option<Time> {
    let d = match kind {
        ActionKind::Artifact(a) => a.timeout.0,
        ActionKind::Approval(a) => a.timeout.0,
        ActionKind::Wait(w) => w.duration.0,
        ActionKind::CodePipeline(c) => c.timeout.0,
        ActionKind::Invoke(_) | ActionKind::Deploy(_) => return None,
    };
    Some(since + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

fn enter_stage(e: &mut Execution, stage: usize, now: Time, commands: &mut Vec<Command>) {
    e.status = Status::InProgress;
    e.stage = stage;
    e.actions = e.definition.stages[stage]
        .actions
        .iter()
        .map(|a| ActionRun {
            name: a.name.clone(),
            run_order: a.run_order,
            state: ActionState::Pending,
            attempt: 1,
            run: None,
        })
        .collect();
    commands.push(record(
        now,
        format!("stage {} started", e.definition.stages[stage].name),
    ));
    advance(e, now, commands);
}

/// Starts the next run-order group, or finishes the stage when every action passed.
fn advance(e: &mut Execution, now: Time, commands: &mut Vec<Command>) {
    if e.actions
        .iter()
        .any(|a| matches!(a.state, ActionState::Running { .. }))
    {
        return;
    }
    // Asked to stop once running actions finish: it stops, however they
    // ended (an action told to stop ends failed; the timeline says how).
    if let Some(reason) = e.stopping.clone() {
        finish(e, Status::Stopped { reason }, now, commands);
        return;
    }
    if let Some(failed) = e
        .actions
        .iter()
        .find(|a| matches!(a.state, ActionState::Failed { .. }))
    {
        let ActionState::Failed { reason } = &failed.state else {
            unreachable!()
        };
        let reason = format!(
            "{} failed in stage {}: {reason}",
            failed.name,
            e.stage_name()
        );
        commands.push(record(now, reason.clone()));
        e.status = Status::Failed { reason };
        commands.push(Command::ReleaseTurn);
        return;
    }
    let next_order = e
        .actions
        .iter()
        .filter(|a| a.state == ActionState::Pending)
        .map(|a| a.run_order)
        .min();
    let Some(order) = next_order else {
        // The stage passed: a boundary.
        commands.push(record(now, format!("stage {} succeeded", e.stage_name())));
        if let Some(by) = e.superseded_by.clone() {
            finish(e, Status::Superseded { by }, now, commands);
        } else if e.stage + 1 < e.definition.stages.len() {
            enter_stage(e, e.stage + 1, now, commands);
        } else {
            finish(e, Status::Succeeded, now, commands);
        }
        return;
    };
    for i in 0..e.actions.len() {
        if e.actions[i].state == ActionState::Pending && e.actions[i].run_order == order {
            start_action(e, i, now, commands);
        }
    }
}

/// Whether an action that runs elsewhere can be told to stop once its own
/// actions in progress finish (CodePipeline's stop without abandoning).
fn stops_on_request(kind: &ActionKind) -> bool {
    matches!(kind, ActionKind::CodePipeline(_))
}

fn start_action(e: &mut Execution, i: usize, now: Time, commands: &mut Vec<Command>) {
    e.actions[i].state = ActionState::Running { since: now };
    let at = e.action_ref(i);
    commands.push(record(now, format!("{} started", e.actions[i].name)));
    // A wait only needs its timer; everything else is run by the executor.
    if !matches!(e.kind(e.stage, i), ActionKind::Wait(_)) {
        commands.push(Command::RunAction { at });
    }
    if let Some(when) = deadline(e.kind(e.stage, i), now) {
        commands.push(Command::StartTimer { at, when });
    }
}

fn finish(e: &mut Execution, status: Status, now: Time, commands: &mut Vec<Command>) {
    // A failed execution gave its turn up when it failed.
    let had_turn = !matches!(e.status, Status::Failed { .. });
    let message = match &status {
        Status::Succeeded => "succeeded".to_owned(),
        Status::Stopped { reason } => format!("stopped: {reason}"),
        Status::Superseded { by } => format!("superseded by {by}"),
        other => format!("{other:?}"),
    };
    commands.push(record(now, message));
    e.status = status;
    if had_turn {
        commands.push(Command::ReleaseTurn);
    }
}

fn action_done(
    e: &mut Execution,
    i: usize,
    state: ActionState,
    now: Time,
    commands: &mut Vec<Command>,
) {
    let message = match &state {
        ActionState::Succeeded { detail } => format!("{} succeeded: {detail}", e.actions[i].name),
        ActionState::Failed { reason } => format!("{} failed: {reason}", e.actions[i].name),
        _ => format!("{} ended", e.actions[i].name),
    };
    commands.push(record(now, message));
    e.actions[i].state = state;
    advance(e, now, commands);
}

/// Applies an input; an input that does not fit changes nothing and issues nothing.
pub fn decide(state: &Execution, input: &Input, now: Time) -> (Execution, Vec<Command>) {
    let mut e = state.clone();
    let mut commands = Vec::new();
    if !step(&mut e, input, now, &mut commands) {
        return (state.clone(), Vec::new());
    }
    e.updated_at = now;
    (e, commands)
}

fn step(e: &mut Execution, input: &Input, now: Time, commands: &mut Vec<Command>) -> bool {
    match input {
        Input::Start => {
            if e.status != Status::Queued {
                return false;
            }
            if e.actions.is_empty() {
                enter_stage(e, 0, now, commands);
            } else {
                // A retried stage that waited for its turn.
                e.status = Status::InProgress;
                advance(e, now, commands);
            }
        }
        Input::ActionSucceeded {
            at,
            detail,
            outputs,
        } => {
            let Some(i) = e.running(at) else { return false };
            if matches!(e.kind(at.stage, i), ActionKind::Approval(_)) {
                // Only a person approves.
                return false;
            }
            if !outputs.is_empty() {
                e.outputs.insert(e.actions[i].name.clone(), outputs.clone());
            }
            let state = ActionState::Succeeded {
                detail: detail.clone(),
            };
            action_done(e, i, state, now, commands);
        }
        Input::ActionFailed { at, reason } => {
            let Some(i) = e.running(at) else { return false };
            let state = ActionState::Failed {
                reason: reason.clone(),
            };
            action_done(e, i, state, now, commands);
        }
        Input::ActionRunStarted { at, run } => {
            let Some(i) = e.running(at) else { return false };
            if e.actions[i].run.as_ref() == Some(run) {
                return false;
            }
            e.actions[i].run = Some(run.clone());
            let name = e.actions[i].name.clone();
            commands.push(record(now, format!("{name} started {run}")));
            // Asked to stop once running actions finish: this one is told now.
            if e.stopping.is_some() && stops_on_request(e.kind(at.stage, i)) {
                commands.push(Command::CancelAction {
                    at: *at,
                    mode: StopMode::Finish,
                });
            }
        }
        Input::TimerFired { at } => return timer_fired(e, at, now, commands),
        Input::Approval {
            at,
            approved,
            by,
            comment,
        } => {
            let Some(i) = e.running(at) else { return false };
            if !matches!(e.kind(at.stage, i), ActionKind::Approval(_)) {
                return false;
            }
            let state = if *approved {
                ActionState::Succeeded {
                    detail: format!("approved by {by}: {comment}"),
                }
            } else {
                ActionState::Failed {
                    reason: format!("rejected by {by}: {comment}"),
                }
            };
            action_done(e, i, state, now, commands);
        }
        Input::Stop { mode, reason } => return stop(e, mode, reason, now, commands),
        Input::RetryStage { failed_only } => return retry_stage(e, *failed_only, now, commands),
        Input::ActionStopped { at } => {
            let Some(run) = e.actions.get_mut(at.action) else {
                return false;
            };
            if e.stage != at.stage
                || run.attempt != at.attempt
                || run.state != ActionState::Abandoned
            {
                return false;
            }
            run.state = ActionState::Stopped;
            let name = run.name.clone();
            commands.push(record(now, format!("{name} was told to stop")));
        }
        Input::Supersede { by } => match e.status {
            Status::Queued | Status::Failed { .. } => {
                finish(e, Status::Superseded { by: by.clone() }, now, commands);
            }
            Status::InProgress if e.superseded_by.is_none() => {
                e.superseded_by = Some(by.clone());
                commands.push(record(
                    now,
                    format!("{by} is newer: stopping after stage {}", e.stage_name()),
                ));
            }
            _ => return false,
        },
    }
    true
}

/// A running action's timer: a wait ends, a deadline fails it.
fn timer_fired(e: &mut Execution, at: &ActionRef, now: Time, commands: &mut Vec<Command>) -> bool {
    let Some(i) = e.running(at) else { return false };
    let ActionState::Running { since } = e.actions[i].state else {
        return false;
    };
    let kind = e.kind(at.stage, i).clone();
    match deadline(&kind, since) {
        Some(due) if due <= now => {}
        // Early: the executor's timer granularity; it fires again.
        Some(due) => {
            commands.push(Command::StartTimer { at: *at, when: due });
            return true;
        }
        None => return false,
    }
    let state = match kind {
        ActionKind::Wait(w) => ActionState::Succeeded {
            detail: format!("waited {}", humantime::format_duration(w.duration.0)),
        },
        other => {
            if !matches!(other, ActionKind::Approval(_)) {
                commands.push(Command::CancelAction {
                    at: *at,
                    mode: StopMode::Abandon,
                });
            }
            ActionState::Failed {
                reason: format!("no result before its deadline ({now})"),
            }
        }
    };
    action_done(e, i, state, now, commands);
    true
}

/// An operator's stop: at once (abandoning what runs) or once running
/// actions finish.
fn stop(
    e: &mut Execution,
    mode: &StopMode,
    reason: &str,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match &e.status {
        Status::Queued | Status::Failed { .. } => {
            finish(
                e,
                Status::Stopped {
                    reason: reason.to_owned(),
                },
                now,
                commands,
            );
        }
        Status::InProgress => match mode {
            StopMode::Abandon => {
                for i in 0..e.actions.len() {
                    if matches!(e.actions[i].state, ActionState::Running { .. }) {
                        commands.push(Command::CancelAction {
                            at: e.action_ref(i),
                            mode: StopMode::Abandon,
                        });
                        e.actions[i].state = ActionState::Abandoned;
                    }
                }
                finish(
                    e,
                    Status::Stopped {
                        reason: reason.to_owned(),
                    },
                    now,
                    commands,
                );
            }
            StopMode::Finish => {
                if e.stopping.is_some() {
                    return false;
                }
                e.stopping = Some(reason.to_owned());
                commands.push(record(
                    now,
                    format!("stopping once running actions finish: {reason}"),
                ));
                // What runs elsewhere and can be told to stop after its
                // actions in progress (a CodePipeline execution) is told.
                for i in 0..e.actions.len() {
                    let running = matches!(e.actions[i].state, ActionState::Running { .. });
                    if running && e.actions[i].run.is_some() && stops_on_request(e.kind(e.stage, i))
                    {
                        commands.push(Command::CancelAction {
                            at: e.action_ref(i),
                            mode: StopMode::Finish,
                        });
                    }
                }
                advance(e, now, commands);
            }
        },
        _ => return false,
    }
    true
}

/// An operator's retry of a failed stage: its failed actions, or all.
fn retry_stage(
    e: &mut Execution,
    failed_only: bool,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    if !matches!(e.status, Status::Failed { .. }) {
        return false;
    }
    e.stopping = None;
    for run in &mut e.actions {
        let again = !failed_only || matches!(run.state, ActionState::Failed { .. });
        if again {
            run.state = ActionState::Pending;
            run.attempt += 1;
            run.run = None;
        }
    }
    commands.push(record(
        now,
        format!(
            "stage {} retried ({})",
            e.stage_name(),
            if failed_only {
                "failed actions"
            } else {
                "all actions"
            }
        ),
    ));
    if e.definition.execution_mode == ExecutionMode::Queued {
        // Another execution may have the turn now: wait for it, as a new one does.
        e.status = Status::Queued;
        commands.push(record(now, WAITING_FOR_TURN.into()));
        commands.push(Command::TakeTurn);
    } else {
        e.status = Status::InProgress;
        advance(e, now, commands);
    }
    true
}

#[cfg(test)]
mod tests;
