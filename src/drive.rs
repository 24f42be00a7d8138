//! The one drive loop of Sluice's two workers: load → decide → save →
//! execute → repeat, over `Machine`, which the engine implements for
//! deployments and the orchestrator for executions. Also the two ways in
//! that are not a worker's own: an operator's steer (decide and save, then
//! wake the worker) and a worker's claim on what a saved state needs.

use crate::domain::deployment::Deployment;
use crate::domain::execution::Execution;
use crate::store::{StoreError, Stored, StoredExecution};
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::future::Future;
use tracing::Instrument;

pub type Time = chrono::DateTime<chrono::Utc>;

/// A state as loaded or saved, with the version its next save is
/// conditional on.
pub trait Versioned: Send + Sync {
    type State;
    fn state(&self) -> &Self::State;
    fn version(&self) -> u64;
}

impl Versioned for Stored {
    type State = Deployment;
    fn state(&self) -> &Deployment {
        &self.deployment
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Versioned for StoredExecution {
    type State = Execution;
    fn state(&self) -> &Execution {
        &self.execution
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// A pure state machine and the ports its worker drives it with.
pub trait Machine: Sync {
    type State: Clone + PartialEq + Send + Sync;
    type Saved: Versioned<State = Self::State>;
    type Input: std::fmt::Debug + Send;
    type Command: Send;
    type Event: Send + Sync;
    type Error: From<StoreError> + std::fmt::Display + Send;

    fn id(state: &Self::State) -> &str;
    fn decide(
        state: &Self::State,
        input: &Self::Input,
        now: Time,
    ) -> (Self::State, Vec<Self::Command>);
    /// A decision's commands as its timeline lines and the commands to run.
    fn split(commands: Vec<Self::Command>) -> (Vec<Self::Event>, Vec<Self::Command>);
    /// The input `command` would produce without a request (a gate with
    /// nothing to run): decided with the decision that issued it, so the
    /// two are one save.
    fn settled_at_once(_state: &Self::State, _command: &Self::Command) -> Option<Self::Input> {
        None
    }
    /// The same state, touched at `now`: saved as a worker's claim on it.
    fn claimed(state: &Self::State, now: Time) -> Self::State;

    fn now(&self) -> Time;
    /// The span every log line of a drive of `id` carries.
    fn span(&self, id: &str) -> tracing::Span;
    /// A consistent read.
    fn load(&self, id: &str) -> impl Future<Output = Result<Self::Saved, StoreError>> + Send;
    /// Saves `state` with `events`, if the saved version is still `expected`.
    fn save(
        &self,
        state: &Self::State,
        expected: u64,
        events: &[Self::Event],
    ) -> impl Future<Output = Result<Self::Saved, StoreError>> + Send;
    /// `save`, by the worker that runs the saved state's commands next (a
    /// steer's are its worker's): it may take ahead what they need.
    fn save_to_run(
        &self,
        state: &Self::State,
        expected: u64,
        events: &[Self::Event],
    ) -> impl Future<Output = Result<Self::Saved, StoreError>> + Send {
        self.save(state, expected, events)
    }
    /// Logs and counts what a save recorded.
    fn recorded(&self, before: &Self::State, after: &Self::Saved, events: &[Self::Event]);
    /// Makes one command happen; returns the fact it produced, if any now.
    /// `attempt` counts how often this work was handed back after a
    /// transient failure.
    /// Boxed: the commands' futures differ by command, and one state's
    /// command may steer another (a released lock wakes the next deployment,
    /// saved and handed to a worker, never driven in this loop).
    fn execute<'a>(
        &'a self,
        saved: &'a Self::Saved,
        command: Self::Command,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Option<Self::Input>, Self::Error>>;
    /// Hands the state saved at `version` to its own worker's queue, with
    /// the commands the decision that saved it issued.
    fn wake(
        &self,
        id: &str,
        version: u64,
        commands: Vec<Self::Command>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs `actions`, then feeds `inputs` and what the actions produced to
/// `decide`, saving each decision before its commands run, until nothing is
/// left to do now (a wait, an end).
pub async fn drive<M: Machine>(
    machine: &M,
    saved: M::Saved,
    inputs: VecDeque<M::Input>,
    actions: Vec<M::Command>,
    attempt: u32,
) -> Result<M::State, M::Error> {
    let span = machine.span(M::id(saved.state()));
    drive_in_span(machine, saved, inputs, actions, attempt)
        .instrument(span)
        .await
}

async fn drive_in_span<M: Machine>(
    machine: &M,
    mut saved: M::Saved,
    mut inputs: VecDeque<M::Input>,
    mut actions: Vec<M::Command>,
    mut attempt: u32,
) -> Result<M::State, M::Error> {
    let id = M::id(saved.state()).to_owned();
    loop {
        for action in std::mem::take(&mut actions) {
            if let Some(input) = machine.execute(&saved, action, attempt).await? {
                inputs.push_back(input);
            }
        }
        if inputs.is_empty() {
            return Ok(saved.state().clone());
        }
        // Facts known now are decided in turn into one save, up to the first
        // decision that issues something to do (a group's alias writes
        // landing, each but the last changing only the state, cost one
        // save); the facts after it are decided once its commands have run.
        let now = machine.now();
        let mut batch = Vec::new();
        let mut next = saved.state().clone();
        let (mut events, mut actions_issued) = (Vec::new(), Vec::new());
        while let Some(input) = inputs.pop_front() {
            let (after, issued) = M::decide(&next, &input, now);
            let ignored = after == next && issued.is_empty();
            if ignored {
                tracing::debug!(?input, "input ignored");
            }
            batch.push(input);
            if ignored {
                continue;
            }
            next = after;
            let (lines, issued) = M::split(issued);
            events.extend(lines);
            let acts = !issued.is_empty();
            actions_issued.extend(issued);
            if acts {
                break;
            }
        }
        if next == *saved.state() && events.is_empty() && actions_issued.is_empty() {
            continue;
        }
        let (next, events, new_actions) = settle(machine, next, events, actions_issued);
        // Saved before its commands run, every time: the conditional save is
        // the worker's claim on them, so a message delivered again or the
        // sweep that finds the same state loses the save and never runs the
        // same gate or action a second time.
        match machine.save_to_run(&next, saved.version(), &events).await {
            Ok(after) => {
                machine.recorded(saved.state(), &after, &events);
                saved = after;
                actions = new_actions;
                // New work: its hand-backs are counted afresh.
                attempt = 0;
            }
            Err(StoreError::Conflict(_)) => {
                // Another worker moved it: decide again on what it saved.
                tracing::info!("moved by another worker; deciding again");
                saved = machine.load(&id).await?;
                for input in batch.into_iter().rev() {
                    inputs.push_front(input);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A decision's timeline lines and commands, with a lone command whose
/// input is known without a request decided at once (`settled_at_once`):
/// a gate with nothing to run passes in the save that enters it.
fn settle<M: Machine>(
    machine: &M,
    mut state: M::State,
    mut events: Vec<M::Event>,
    mut actions: Vec<M::Command>,
) -> (M::State, Vec<M::Event>, Vec<M::Command>) {
    while let [only] = actions.as_slice()
        && let Some(input) = M::settled_at_once(&state, only)
    {
        let (next, commands) = M::decide(&state, &input, machine.now());
        if next == state && commands.is_empty() {
            break;
        }
        let (more, next_actions) = M::split(commands);
        state = next;
        events.extend(more);
        actions = next_actions;
    }
    (state, events, actions)
}

/// What a steer did.
pub enum Steered<M: Machine> {
    /// The input does not apply to the state as saved.
    Unchanged(M::Saved),
    /// Saved; `actions` are the decision's commands, for the worker.
    Saved {
        saved: M::Saved,
        actions: Vec<M::Command>,
    },
}

/// A steer as its caller sees it: the state as saved, whether the input
/// changed it, and whether the state's worker was woken to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerOutcome<T> {
    pub state: T,
    pub changed: bool,
    pub woken: bool,
}

/// An operator's input (or one worker's to another's state), decided and
/// saved here, conditional on the version read, but acted on by the
/// state's own worker (`wake`): the caller runs no gate and no action.
pub async fn steer<M: Machine>(
    machine: &M,
    id: &str,
    input: M::Input,
) -> Result<Steered<M>, M::Error> {
    loop {
        let before = machine.load(id).await?;
        let (next, commands) = M::decide(before.state(), &input, machine.now());
        if next == *before.state() && commands.is_empty() {
            return Ok(Steered::Unchanged(before));
        }
        let (events, actions) = M::split(commands);
        let (next, events, actions) = settle(machine, next, events, actions);
        let saved = match machine.save(&next, before.version(), &events).await {
            Ok(saved) => saved,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        machine.recorded(before.state(), &saved, &events);
        return Ok(Steered::Saved { saved, actions });
    }
}

/// Wakes the worker of a steered state to run `commands`, if there are
/// any: a decision that issued none (a pause, say) leaves whatever runs to
/// go on as it was. Returns whether the worker was woken. A wake that
/// cannot be sent is logged: the sweep takes up a state that is due.
pub async fn wake<M: Machine>(machine: &M, saved: &M::Saved, commands: Vec<M::Command>) -> bool {
    if commands.is_empty() {
        return false;
    }
    let id = M::id(saved.state());
    match machine.wake(id, saved.version(), commands).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(id, error = %e, "could not wake the worker; the sweep will take it up");
            false
        }
    }
}

/// Claims `saved` for this worker before running `actions`, which a saved
/// state needs (after a steer, a crash, a transient failure): the same state
/// saved again at `now`, conditional on its version. Another worker that
/// claims it too (a message delivered twice, a second sweep) loses the save
/// and runs nothing, so a gate or an action never runs twice at once.
pub async fn claim_and_drive<M: Machine>(
    machine: &M,
    saved: M::Saved,
    actions: Vec<M::Command>,
    attempt: u32,
) -> Result<M::State, M::Error> {
    let claimed = M::claimed(saved.state(), machine.now());
    match machine.save_to_run(&claimed, saved.version(), &[]).await {
        Ok(claimed) => drive(machine, claimed, VecDeque::new(), actions, attempt).await,
        Err(StoreError::Conflict(_)) => {
            let id = M::id(saved.state());
            tracing::info!(id, "taken up by another worker");
            Ok(machine.load(id).await?.state().clone())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the commands a steer of `id` to `version` decided (its wake), unless
/// another worker has saved the state since: any later save is a worker's
/// that runs its own commands, or a claim that runs all `pending` has. A
/// run that fails is left to the sweep, which finds the state due.
pub async fn run_steered<M: Machine>(
    machine: &M,
    id: &str,
    version: u64,
    commands: Vec<M::Command>,
) -> Result<M::State, M::Error> {
    let saved = machine.load(id).await?;
    if saved.version() != version {
        tracing::info!(id, "not taken up: moved on since");
        return Ok(saved.state().clone());
    }
    claim_and_drive(machine, saved, commands, 0).await
}
