//! In-memory models of the engine's ports, with the semantics the engine
//! relies on: conditional writes on the table, revisions on the alias. Each
//! can fail a call on the simulation's dice, before or after it takes effect
//! (a write whose answer is lost), as the real services do.

use sluice::clock::Clock;
use sluice::domain::analysis::Counts;
use sluice::domain::deployment::{AliasLeft, Deployment, Event, Gate, Phase, Time};
use sluice::domain::execution::{Execution, ExecutionEvent, Status};
use sluice::domain::hooks::HookRequest;
use sluice::engine::EngineError;
use sluice::events::{HandedOver, PipelineTimer, TimerMessage};
use sluice::orchestrator::OrchestratorError;
use sluice::ports::{Actions, Executions, FaultPoint, PipelineRun};
use sluice::ports::{
    AliasState, AliasWrite, Cloud, Deployments, Invocation, MetricQuery, Readiness,
};
use sluice::store::keys::{Key, Lock};
use sluice::store::pipelines::execution_due_at;
use sluice::store::{
    ExecutionStart, IN_FLIGHT_GRACE_SECS, LockOutcome, StoreError, Stored, StoredExecution, due_at,
    is_stuck,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dice::Dice;

/// The simulated time, moved only by the scheduler and by workers' waits.
#[derive(Clone)]
pub struct SimClock(pub Arc<Mutex<Time>>);

impl Clock for SimClock {
    fn now(&self) -> Time {
        *self.0.lock().unwrap()
    }
    async fn sleep(&self, duration: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::from_std(duration).unwrap();
    }
}

/// What happens to a call, as the dice decide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    Ok,
    /// Fails before taking effect.
    Fails,
    /// Takes effect, but the caller sees a failure.
    AnswerLost,
}

struct Row {
    /// The deployment as read back from the JSON DynamoDB would hold.
    parsed: Deployment,
    version: u64,
    due_at: Option<Time>,
    timeline: Vec<Event>,
}

struct ExecutionRow {
    parsed: Execution,
    version: u64,
    due_at: Option<Option<Time>>,
}

#[derive(Default)]
struct Table {
    rows: BTreeMap<String, Row>,
    waiters: BTreeMap<(String, String), String>,
    locks: BTreeMap<Lock, String>,
    /// How each alias's last holder left it (its `LEFT` item).
    left: BTreeMap<Lock, AliasLeft>,
    executions: BTreeMap<String, ExecutionRow>,
    /// Which execution each (pipeline, commit) started.
    commits: BTreeMap<(String, String), String>,
    /// What the table's stream carries, since it last looked.
    stream: Stream,
}

/// New items and ends, as the table's stream reports them.
#[derive(Default, Debug)]
pub struct Stream {
    pub created: Vec<String>,
    pub finished: Vec<String>,
    pub new_executions: Vec<String>,
}

/// The table's deployment and lock items.
#[derive(Clone)]
pub struct MemoryTable {
    table: Arc<Mutex<Table>>,
    dice: Dice,
}

fn injected(what: &str) -> StoreError {
    StoreError::Aws(format!("{what}: injected failure"))
}

impl MemoryTable {
    pub fn new(dice: Dice) -> Self {
        MemoryTable {
            table: Arc::default(),
            dice,
        }
    }

    /// The saved deployments, without the dice: for the invariants.
    pub fn deployments(&self) -> Vec<Deployment> {
        let table = self.table.lock().unwrap();
        table.rows.values().map(|r| r.parsed.clone()).collect()
    }

    /// A deployment's timeline, without the dice.
    pub fn timeline(&self, id: &str) -> Vec<Event> {
        let table = self.table.lock().unwrap();
        table
            .rows
            .get(id)
            .map(|r| r.timeline.clone())
            .unwrap_or_default()
    }

    pub fn peek(&self, id: &str) -> Option<Deployment> {
        let table = self.table.lock().unwrap();
        table.rows.get(id).map(|r| r.parsed.clone())
    }

    pub fn peek_lock(&self, function: &str, alias: &str) -> Option<String> {
        let table = self.table.lock().unwrap();
        table.locks.get(&Lock::alias(function, alias)).cloned()
    }

    /// What the table's stream carries since the last call.
    pub fn drain_stream(&self) -> Stream {
        std::mem::take(&mut self.table.lock().unwrap().stream)
    }

    /// Runs `check` over every execution, without the dice or a copy.
    pub fn each_execution(&self, mut check: impl FnMut(&Execution)) {
        let table = self.table.lock().unwrap();
        for row in table.executions.values() {
            check(&row.parsed);
        }
    }

    pub fn executions(&self) -> Vec<Execution> {
        let table = self.table.lock().unwrap();
        table
            .executions
            .values()
            .map(|r| r.parsed.clone())
            .collect()
    }

    pub fn peek_execution(&self, id: &str) -> Option<Execution> {
        let table = self.table.lock().unwrap();
        table.executions.get(id).map(|r| r.parsed.clone())
    }

    fn execution_row(e: &Execution, version: u64) -> ExecutionRow {
        let parsed: Execution = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        assert_eq!(&parsed, e, "an execution does not survive its JSON");
        ExecutionRow {
            parsed,
            version,
            due_at: execution_due_at(e),
        }
    }

    /// Listed execution ids, ordered as `ActiveIndex` orders them.
    fn executions_by(&self, keep: impl Fn(&ExecutionRow) -> bool) -> Vec<String> {
        let table = self.table.lock().unwrap();
        let mut found: Vec<(Time, String)> = table
            .executions
            .iter()
            .filter_map(|(id, row)| {
                let due = row.due_at?.unwrap_or(Time::MAX_UTC);
                keep(row).then(|| (due, id.clone()))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    pub fn active_count(&self) -> usize {
        let table = self.table.lock().unwrap();
        table
            .rows
            .values()
            .filter(|r| !r.parsed.phase.is_terminal())
            .count()
    }

    /// Runs `check` over the unfinished deployments, without the dice.
    pub fn each_active(&self, mut check: impl FnMut(&Deployment)) {
        let table = self.table.lock().unwrap();
        for row in table.rows.values() {
            if !row.parsed.phase.is_terminal() {
                check(&row.parsed);
            }
        }
    }

    fn row(d: &Deployment, version: u64, timeline: Vec<Event>) -> Row {
        // Saved as JSON, as the real table does: what does not round-trip shows.
        let parsed: Deployment = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
        assert_eq!(&parsed, d, "a deployment does not survive its JSON");
        Row {
            parsed,
            version,
            due_at: due_at(d, chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS)).or(
                // Paused: listed as active, never due.
                (!d.phase.is_terminal()).then_some(Time::MAX_UTC),
            ),
            timeline,
        }
    }

    /// Active ids ordered as `ActiveIndex` orders them: by due time.
    fn active_by(&self, keep: impl Fn(&Row, &Deployment) -> bool) -> Vec<String> {
        let table = self.table.lock().unwrap();
        let mut found: Vec<(Time, String)> = table
            .rows
            .iter()
            .filter_map(|(id, row)| {
                let due = row.due_at?;
                keep(row, &row.parsed).then(|| (due, id.clone()))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    fn read_fate(&self, what: &str) -> Result<(), StoreError> {
        match self.dice.store_fate() {
            Fate::Ok => Ok(()),
            _ => Err(injected(what)),
        }
    }
}

impl Deployments for MemoryTable {
    async fn create(&self, d: &Deployment, events: &[Event]) -> Result<Stored, StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("PutItem"));
        }
        {
            let mut table = self.table.lock().unwrap();
            if table.rows.contains_key(&d.id) {
                return Err(StoreError::AlreadyExists(Key::Deployment(d.id.clone())));
            }
            table
                .rows
                .insert(d.id.clone(), Self::row(d, 1, events.to_vec()));
            table.stream.created.push(d.id.clone());
        }
        if fate == Fate::AnswerLost {
            return Err(injected("PutItem (answer lost)"));
        }
        Ok(Stored {
            deployment: d.clone(),
            version: 1,
        })
    }

    async fn save(
        &self,
        d: &Deployment,
        expected: u64,
        events: &[Event],
    ) -> Result<Stored, StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("UpdateItem"));
        }
        {
            let mut table = self.table.lock().unwrap();
            let Some(row) = table.rows.get_mut(&d.id) else {
                return Err(StoreError::Conflict(Key::Deployment(d.id.clone())));
            };
            if row.version != expected {
                return Err(StoreError::Conflict(Key::Deployment(d.id.clone())));
            }
            let mut timeline = std::mem::take(&mut row.timeline);
            timeline.extend_from_slice(events);
            let ends = !row.parsed.phase.is_terminal() && d.phase.is_terminal();
            *row = Self::row(d, expected + 1, timeline);
            if ends {
                table.stream.finished.push(d.id.clone());
            }
        }
        if fate == Fate::AnswerLost {
            return Err(injected("UpdateItem (answer lost)"));
        }
        Ok(Stored {
            deployment: d.clone(),
            version: expected + 1,
        })
    }

    async fn load(&self, id: &str) -> Result<Stored, StoreError> {
        self.read_fate("GetItem")?;
        let table = self.table.lock().unwrap();
        let row = table
            .rows
            .get(id)
            .ok_or_else(|| StoreError::NotFound(Key::Deployment(id.to_owned())))?;
        Ok(Stored {
            deployment: row.parsed.clone(),
            version: row.version,
        })
    }

    async fn active(&self) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query")?;
        Ok(self.active_by(|_, _| true))
    }

    async fn watching(&self, alarm: &str) -> Result<Vec<Stored>, StoreError> {
        self.read_fate("Query")?;
        let table = self.table.lock().unwrap();
        Ok(table
            .rows
            .values()
            .filter(|row| {
                !row.parsed.phase.is_terminal() && row.parsed.spec.alarms.iter().any(|a| a == alarm)
            })
            .map(|row| Stored {
                deployment: row.parsed.clone(),
                version: row.version,
            })
            .collect())
    }

    async fn due(&self, now: Time) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query")?;
        Ok(self.active_by(|row, _| row.due_at.is_some_and(|due| due <= now)))
    }

    async fn stuck(&self, now: Time) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query")?;
        Ok(self.active_by(|_, d| is_stuck(d, now)))
    }

    async fn queued_for(&self, function: &str, alias: &str) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query")?;
        Ok(self.active_by(|_, d| {
            matches!(d.phase, Phase::Queued { .. })
                && d.spec.function == function
                && d.spec.alias == alias
        }))
    }

    async fn acquire_lock(
        &self,
        lock: &Lock,
        id: &str,
        _now: Time,
    ) -> Result<LockOutcome, StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("PutItem (lock)"));
        }
        let outcome = {
            let mut table = self.table.lock().unwrap();
            let key = lock.clone();
            match table.locks.get(&key) {
                Some(holder) if holder != id => LockOutcome::Busy {
                    holder: holder.clone(),
                },
                _ => {
                    table.locks.insert(key.clone(), id.to_owned());
                    LockOutcome::Acquired {
                        left: table.left.get(&key).cloned(),
                    }
                }
            }
        };
        if fate == Fate::AnswerLost && matches!(outcome, LockOutcome::Acquired { .. }) {
            return Err(injected("PutItem (lock, answer lost)"));
        }
        Ok(outcome)
    }

    async fn lock_holder(&self, lock: &Lock) -> Result<Option<String>, StoreError> {
        self.read_fate("GetItem (lock)")?;
        Ok(self.table.lock().unwrap().locks.get(lock).cloned())
    }

    async fn release_lock(
        &self,
        lock: &Lock,
        id: &str,
        left: Option<&AliasLeft>,
    ) -> Result<(), StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("DeleteItem (lock)"));
        }
        {
            let mut table = self.table.lock().unwrap();
            let key = lock.clone();
            if table.locks.get(&key).is_some_and(|h| h == id) {
                table.locks.remove(&key);
                // The `LEFT` item is a second write: lost, the earlier
                // holder's stays.
                if self.dice.store_fate() == Fate::Fails {
                    return Err(injected("PutItem (left)"));
                }
                match left {
                    Some(left) => table.left.insert(key, left.clone()),
                    None => table.left.remove(&key),
                };
            }
        }
        if fate == Fate::AnswerLost {
            return Err(injected("DeleteItem (lock, answer lost)"));
        }
        Ok(())
    }

    async fn add_waiter(
        &self,
        id: &str,
        waiter: &str,
        data: &str,
        _until: Time,
    ) -> Result<(), StoreError> {
        let mut table = self.table.lock().unwrap();
        table
            .waiters
            .insert((id.to_owned(), waiter.to_owned()), data.to_owned());
        Ok(())
    }

    async fn waiters(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let table = self.table.lock().unwrap();
        Ok(table
            .waiters
            .iter()
            .filter(|((d, _), _)| d == id)
            .map(|((_, w), data)| (w.clone(), data.clone()))
            .collect())
    }

    async fn remove_waiter(&self, id: &str, waiter: &str) -> Result<(), StoreError> {
        let mut table = self.table.lock().unwrap();
        table.waiters.remove(&(id.to_owned(), waiter.to_owned()));
        Ok(())
    }
}

impl Executions for MemoryTable {
    async fn start_execution(
        &self,
        e: &Execution,
        _events: &[ExecutionEvent],
    ) -> Result<ExecutionStart, StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("TransactWriteItems"));
        }
        let outcome = {
            let mut table = self.table.lock().unwrap();
            let commit = (e.pipeline.clone(), e.push.sha.clone());
            // Both puts are conditional, in one transaction.
            if let Some(existing) = table.commits.get(&commit) {
                ExecutionStart::AlreadyStarted(existing.clone())
            } else if table.executions.contains_key(&e.id) {
                return Err(StoreError::AlreadyExists(Key::Execution(e.id.clone())));
            } else {
                table.commits.insert(commit, e.id.clone());
                table
                    .executions
                    .insert(e.id.clone(), Self::execution_row(e, 1));
                table.stream.new_executions.push(e.id.clone());
                ExecutionStart::Started
            }
        };
        if fate == Fate::AnswerLost {
            return Err(injected("TransactWriteItems (answer lost)"));
        }
        Ok(outcome)
    }

    async fn load_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        self.read_fate("GetItem (execution)")?;
        let table = self.table.lock().unwrap();
        let row = table
            .executions
            .get(id)
            .ok_or_else(|| StoreError::NotFound(Key::Execution(id.to_owned())))?;
        Ok(StoredExecution {
            execution: row.parsed.clone(),
            version: row.version,
        })
    }

    async fn save_execution(
        &self,
        e: &Execution,
        expected: u64,
        _events: &[ExecutionEvent],
    ) -> Result<StoredExecution, StoreError> {
        let fate = self.dice.store_fate();
        if fate == Fate::Fails {
            return Err(injected("UpdateItem (execution)"));
        }
        {
            let mut table = self.table.lock().unwrap();
            match table.executions.get_mut(&e.id) {
                Some(row) if row.version == expected => {
                    *row = Self::execution_row(e, expected + 1);
                }
                _ => return Err(StoreError::Conflict(Key::Execution(e.id.clone()))),
            }
        }
        if fate == Fate::AnswerLost {
            return Err(injected("UpdateItem (execution, answer lost)"));
        }
        Ok(StoredExecution {
            execution: e.clone(),
            version: expected + 1,
        })
    }

    async fn due_executions(&self, now: Time) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query (executions)")?;
        Ok(self.executions_by(|row| row.due_at.flatten().is_some_and(|due| due <= now)))
    }

    async fn live_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query (executions)")?;
        Ok(self.executions_by(|row| {
            row.parsed.pipeline == pipeline
                && matches!(row.parsed.status, Status::Queued | Status::InProgress)
        }))
    }

    async fn running_executions_all(&self) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query (executions)")?;
        Ok(self.executions_by(|_| true))
    }

    async fn queued_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        self.read_fate("Query (executions)")?;
        let table = self.table.lock().unwrap();
        let mut queued: Vec<(Time, String)> = table
            .executions
            .iter()
            .filter(|(_, row)| {
                row.due_at.is_some()
                    && row.parsed.pipeline == pipeline
                    && row.parsed.status == Status::Queued
            })
            .map(|(id, row)| (row.parsed.created_at, id.clone()))
            .collect();
        queued.sort();
        Ok(queued.into_iter().map(|(_, id)| id).collect())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AliasModel {
    pub version: String,
    /// Extra versions and their weights (0 to 1).
    pub weights: BTreeMap<String, f64>,
    pub revision: u64,
}

impl AliasModel {
    pub fn is_whole(&self) -> bool {
        self.weights.is_empty()
    }

    /// Percent of traffic on `version`.
    pub fn percent_on(&self, version: &str) -> f64 {
        let extra: f64 = self.weights.values().sum();
        if self.version == version {
            (1.0 - extra) * 100.0
        } else {
            self.weights.get(version).copied().unwrap_or(0.0) * 100.0
        }
    }
}

/// A hook's passed verdict, as the hook itself gave it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Passed {
    pub deployment: String,
    pub gate: GateName,
    /// 0-based.
    pub step: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GateName {
    Pre,
    Post,
}

/// An alias write that took effect, and who held the alias then.
#[derive(Debug, Clone)]
pub struct Written {
    pub function: String,
    pub alias: String,
    pub before: AliasModel,
    pub after: AliasModel,
    /// The lock holder's saved state at the write.
    pub holder: Option<Deployment>,
    pub at: Time,
}

#[derive(Default)]
pub struct CloudState {
    pub aliases: BTreeMap<(String, String), AliasModel>,
    /// The highest published version of each function.
    pub versions: BTreeMap<String, u64>,
    pub alarms: BTreeMap<String, bool>,
    pub passed: std::collections::BTreeSet<Passed>,
    /// Alias writes since the checker last looked.
    pub written: Vec<Written>,
    /// Revisions a person left on an alias (a change of its traffic), and
    /// the deployment that held the alias then: the one that must not write
    /// over it (a later deployment starts from it).
    pub by_hand: BTreeMap<(String, String, u64), Option<String>>,
    /// Of those, the ones an operator told Sluice to go on from (resuming
    /// or aborting a frozen deployment): Sluice may write over them.
    pub consented: std::collections::BTreeSet<(String, String, u64)>,
    /// Timer messages sent, with their delays, since the scheduler last looked.
    pub sent: Vec<(TimerMessage, i32)>,
    /// Work handed over to the queue since the scheduler last looked, with
    /// its delay.
    pub handed_over: Vec<(HandedOver, i32)>,
    /// The gate a worker is about to run while another worker acts (the
    /// first worker's gate is under way).
    pub gate_under_way: Option<Passed>,
    /// Gates run again while under way, since the checker last looked.
    pub run_while_under_way: Vec<Passed>,
}

/// Lambda, CloudWatch and SQS as the engine sees them.
#[derive(Clone)]
pub struct MemoryCloud {
    pub state: Arc<Mutex<CloudState>>,
    dice: Dice,
    /// Read (never written, no dice) to say who held the alias at each write.
    table: MemoryTable,
    clock: SimClock,
    /// Where workers die or are overtaken: the simulation's, set once it exists.
    faults: Arc<std::sync::OnceLock<crate::support::FaultHook>>,
}

fn transient(what: &str) -> EngineError {
    EngineError::Aws(format!("{what}: injected failure"))
}

impl MemoryCloud {
    pub fn new(dice: Dice, table: MemoryTable, clock: SimClock) -> Self {
        MemoryCloud {
            state: Arc::default(),
            dice,
            table,
            clock,
            faults: Arc::default(),
        }
    }

    /// Stops or holds workers at the checkpoints as `faults` says.
    pub fn inject(&self, faults: crate::support::FaultHook) {
        assert!(self.faults.set(faults).is_ok(), "faults injected once");
    }

    fn call(&self, what: &str) -> Result<(), EngineError> {
        match self.dice.cloud_fate() {
            Fate::Ok => Ok(()),
            _ => Err(transient(what)),
        }
    }
}

impl MemoryCloud {
    /// A person's write (the console's), as `change` makes it; noted as
    /// theirs only if it changes the alias's traffic.
    pub fn write_by_hand(&self, function: &str, alias: &str, change: impl FnOnce(&mut AliasModel)) {
        let mut state = self.state.lock().unwrap();
        let key = (function.to_owned(), alias.to_owned());
        let Some(current) = state.aliases.get_mut(&key) else {
            return;
        };
        let before = current.clone();
        change(current);
        current.revision += 1;
        let after = current.clone();
        self.dice.note(format!(
            "      by hand: {function}:{alias} set to {} {:?} (revision {})",
            after.version, after.weights, after.revision
        ));
        if (before.version, before.weights) != (after.version, after.weights) {
            let holder = self.table.peek_lock(function, alias);
            state.by_hand.insert(
                (function.to_owned(), alias.to_owned(), after.revision),
                holder,
            );
        }
    }
}

impl Cloud for MemoryCloud {
    async fn read_alias(
        &self,
        function: &str,
        alias: &str,
    ) -> Result<Option<AliasState>, EngineError> {
        self.call("GetAlias")?;
        let state = self.state.lock().unwrap();
        Ok(state
            .aliases
            .get(&(function.to_owned(), alias.to_owned()))
            .map(|a| AliasState {
                version: a.version.clone(),
                weights: a.weights.clone().into_iter().collect(),
                revision: Some(a.revision.to_string()),
                arn: None,
            }))
    }

    async fn write_alias(
        &self,
        function: &str,
        alias: &str,
        primary: &str,
        weights: &HashMap<String, f64>,
        revision: Option<&str>,
    ) -> Result<AliasWrite, EngineError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(transient("UpdateAlias"));
        }
        let after_revision = {
            let mut state = self.state.lock().unwrap();
            let key = (function.to_owned(), alias.to_owned());
            let Some(current) = state.aliases.get_mut(&key) else {
                return Err(EngineError::Aws("UpdateAlias: no such alias".into()));
            };
            if revision.is_some_and(|r| r != current.revision.to_string()) {
                return Ok(AliasWrite::Stale { after_retry: false });
            }
            let before = current.clone();
            current.version = primary.to_owned();
            current.weights = weights.clone().into_iter().collect();
            current.revision += 1;
            let after = current.clone();
            let holder = self
                .table
                .peek_lock(function, alias)
                .and_then(|id| self.table.peek(&id));
            self.dice.note(format!(
                "      {function}:{alias} set to {} {:?} (revision {}), held by {:?}",
                after.version,
                after.weights,
                after.revision,
                holder.as_ref().map(|h| (&h.id, &h.phase))
            ));
            let revision = after.revision;
            state.written.push(Written {
                function: function.to_owned(),
                alias: alias.to_owned(),
                before,
                after,
                holder,
                at: self.clock.now(),
            });
            revision
        };
        if fate == Fate::AnswerLost {
            // The SDK's retry of an unanswered write, on the same revision,
            // is refused by the write that landed; or the worker sees the
            // failure.
            if after_revision % 2 == 0 {
                return Ok(AliasWrite::Stale { after_retry: true });
            }
            return Err(transient("UpdateAlias (answer lost)"));
        }
        Ok(AliasWrite::Written {
            revision: Some(after_revision.to_string()),
        })
    }

    async fn alias_version(
        &self,
        function: &str,
        alias: &str,
    ) -> Result<Option<String>, EngineError> {
        self.call("GetFunction")?;
        let state = self.state.lock().unwrap();
        Ok(state
            .aliases
            .get(&(function.to_owned(), alias.to_owned()))
            .map(|a| a.version.clone()))
    }

    async fn ready_version(&self, function: &str, version: &str) -> Result<Readiness, EngineError> {
        self.call("GetFunction")?;
        let state = self.state.lock().unwrap();
        let highest = state.versions.get(function).copied().unwrap_or(0);
        Ok(
            if version.parse::<u64>().is_ok_and(|v| v >= 1 && v <= highest) {
                Readiness::Ready(version.to_owned())
            } else {
                Readiness::Refused(format!("version {version} of {function} does not exist"))
            },
        )
    }

    async fn publish(
        &self,
        function: &str,
        bucket: &str,
        key: &str,
        _object_version: Option<&str>,
    ) -> Result<Readiness, EngineError> {
        self.call("UpdateFunctionCode")?;
        if key.contains("missing") {
            return Ok(Readiness::Refused(format!(
                "UpdateFunctionCode from s3://{bucket}/{key}: NoSuchKey"
            )));
        }
        let version = {
            let mut state = self.state.lock().unwrap();
            let highest = state.versions.entry(function.to_owned()).or_insert(0);
            *highest += 1;
            highest.to_string()
        };
        // Published, and the answer (or the wait for `Active`) lost.
        self.call("PublishVersion")?;
        Ok(Readiness::Ready(version))
    }

    async fn alarms_in_alarm(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, bool>, EngineError> {
        self.call("DescribeAlarms")?;
        let state = self.state.lock().unwrap();
        Ok(names
            .iter()
            .filter_map(|n| Some((n.clone(), *state.alarms.get(n)?)))
            .collect())
    }

    /// The simulation's hooks answer synchronously.
    async fn start_hook(&self, _hook: &str, _payload: Vec<u8>) -> Result<Invocation, EngineError> {
        Err(EngineError::Refused(
            "the simulation runs synchronous hooks only".into(),
        ))
    }

    /// Mostly a healthy new version, now and then a failing one (rolled
    /// back by the analysis), unless CloudWatch fails the read.
    async fn measure(&self, _query: &MetricQuery) -> Result<(Counts, Counts), EngineError> {
        self.call("GetMetricData")?;
        let healthy = Counts {
            invocations: 100.0,
            errors: 0.0,
            duration_ms: 1000.0,
            p99_duration_ms: Some(12.0),
        };
        let new = if self.dice.chance(0.05) {
            Counts {
                errors: 40.0,
                ..healthy
            }
        } else {
            healthy
        };
        Ok((new, healthy))
    }

    async fn invoke_hook(
        &self,
        _hook: &str,
        request: &HookRequest,
        _timeout: Duration,
    ) -> Result<Invocation, EngineError> {
        self.call("Invoke (hook throttled)")?;
        let this = Passed {
            deployment: request.deployment_id.clone(),
            gate: match request.gate {
                Gate::PreTraffic => GateName::Pre,
                Gate::PostTraffic => GateName::Post,
            },
            step: request.step - 1,
        };
        {
            let mut state = self.state.lock().unwrap();
            if state.gate_under_way.as_ref() == Some(&this) {
                state.run_while_under_way.push(this.clone());
            }
        }
        let call = self.dice.hook_call();
        if let Invocation::Answered(body) = &call
            && body.starts_with(br#"{"status":"Succeeded""#)
        {
            self.state.lock().unwrap().passed.insert(this);
        }
        Ok(call)
    }

    async fn send_timer(&self, message: &TimerMessage, delay_secs: i32) -> Result<(), EngineError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(transient("SendMessage"));
        }
        self.state
            .lock()
            .unwrap()
            .sent
            .push((message.clone(), delay_secs));
        if fate == Fate::AnswerLost {
            return Err(transient("SendMessage (answer lost)"));
        }
        Ok(())
    }

    async fn hand_over(&self, work: &HandedOver, delay_secs: i32) -> Result<(), EngineError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(transient("SendMessage (work handed over)"));
        }
        self.state
            .lock()
            .unwrap()
            .handed_over
            .push((work.clone(), delay_secs));
        if fate == Fate::AnswerLost {
            return Err(transient("SendMessage (work handed over, answer lost)"));
        }
        Ok(())
    }

    async fn checkpoint(&self, point: FaultPoint<'_>) -> bool {
        match self.faults.get() {
            Some(faults) => faults(point).await,
            None => false,
        }
    }
}

/// A CodePipeline execution the model runs: when it ends, and how.
struct PipelineModelRun {
    ends_at: Time,
    succeeds: bool,
    /// Asked to stop: it ends `Stopped` (at once if abandoned, else at its end).
    stopped: bool,
}

#[derive(Default)]
pub struct ActionsState {
    /// Objects in S3 and their version ids.
    pub objects: BTreeMap<(String, String), String>,
    runs: BTreeMap<String, PipelineModelRun>,
    /// Client request tokens already used, and the run each started.
    tokens: BTreeMap<String, String>,
    /// Pipeline timer messages sent, with their delays, since the scheduler looked.
    pub sent: Vec<(PipelineTimer, i32)>,
    /// Work handed over to the queue since the scheduler looked.
    pub handed_over: Vec<HandedOver>,
    /// How many times each invoke action's function was called, by execution.
    pub invocations: BTreeMap<String, usize>,
}

impl ActionsState {
    pub fn was_stopped(&self, run: &str) -> bool {
        self.runs.get(run).is_some_and(|r| r.stopped)
    }

    /// The CodePipeline runs an execution's actions started that still run
    /// at `now`, not asked to stop.
    pub fn runs_going(&self, execution: &str, now: Time) -> Vec<String> {
        let started_by = format!("{execution}-");
        self.tokens
            .iter()
            .filter(|(token, _)| token.starts_with(&started_by))
            .filter_map(|(_, id)| {
                let run = self.runs.get(id)?;
                (now < run.ends_at && !run.stopped).then(|| id.clone())
            })
            .collect()
    }
}

/// Lambda (invoke actions), S3, CodePipeline and the pipeline timer queue.
#[derive(Clone)]
pub struct MemoryActions {
    pub state: Arc<Mutex<ActionsState>>,
    dice: Dice,
    clock: SimClock,
}

fn action_failure(what: &str) -> OrchestratorError {
    OrchestratorError::Aws(format!("{what}: injected failure"))
}

impl MemoryActions {
    pub fn new(dice: Dice, clock: SimClock) -> Self {
        MemoryActions {
            state: Arc::default(),
            dice,
            clock,
        }
    }

    fn call(&self, what: &str) -> Result<(), OrchestratorError> {
        match self.dice.cloud_fate() {
            Fate::Ok => Ok(()),
            _ => Err(action_failure(what)),
        }
    }
}

impl Actions for MemoryActions {
    async fn invoke(
        &self,
        function: &str,
        event: &serde_json::Value,
    ) -> Result<Invocation, OrchestratorError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(action_failure("Invoke (throttled)"));
        }
        *self
            .state
            .lock()
            .unwrap()
            .invocations
            .entry(event["execution"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        if fate == Fate::AnswerLost {
            return Err(action_failure("Invoke (answer lost)"));
        }
        Ok(match self.dice.below(20) {
            0 => Invocation::Raised(format!("{function}: 3 tests failed")),
            1 => Invocation::NotRun("ResourceNotFoundException".into()),
            _ => Invocation::Answered(Vec::new()),
        })
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Option<String>>, OrchestratorError> {
        self.call("HeadObject")?;
        let state = self.state.lock().unwrap();
        Ok(state
            .objects
            .get(&(bucket.to_owned(), key.to_owned()))
            .map(|v| Some(v.clone())))
    }

    async fn start_pipeline(
        &self,
        pipeline: &str,
        token: &str,
        _source: Option<(&str, &str)>,
    ) -> Result<Result<String, String>, OrchestratorError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(action_failure("StartPipelineExecution"));
        }
        if pipeline == "missing" {
            return Ok(Err(format!("CodePipeline {pipeline} does not exist")));
        }
        let id = {
            let mut state = self.state.lock().unwrap();
            match state.tokens.get(token) {
                Some(id) => id.clone(),
                None => {
                    let id = format!("cp-{}", state.runs.len());
                    let ends_at = self.clock.now()
                        + chrono::Duration::seconds(10 + self.dice.below(110) as i64);
                    let succeeds = self.dice.chance(0.85);
                    state.runs.insert(
                        id.clone(),
                        PipelineModelRun {
                            ends_at,
                            succeeds,
                            stopped: false,
                        },
                    );
                    state.tokens.insert(token.to_owned(), id.clone());
                    id
                }
            }
        };
        if fate == Fate::AnswerLost {
            return Err(action_failure("StartPipelineExecution (answer lost)"));
        }
        Ok(Ok(id))
    }

    async fn pipeline_run(
        &self,
        _pipeline: &str,
        execution_id: &str,
    ) -> Result<PipelineRun, OrchestratorError> {
        self.call("GetPipelineExecution")?;
        let state = self.state.lock().unwrap();
        let Some(run) = state.runs.get(execution_id) else {
            return Err(OrchestratorError::Aws(format!(
                "no pipeline execution {execution_id}"
            )));
        };
        Ok(if self.clock.now() < run.ends_at {
            PipelineRun::Running
        } else if run.stopped {
            PipelineRun::Ended("Stopped".into())
        } else if run.succeeds {
            PipelineRun::Succeeded
        } else {
            PipelineRun::Ended("Failed".into())
        })
    }

    async fn stop_pipeline(
        &self,
        _pipeline: &str,
        execution_id: &str,
        abandon: bool,
        _reason: &str,
    ) -> Result<(), OrchestratorError> {
        self.call("StopPipelineExecution")?;
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap();
        if let Some(run) = state.runs.get_mut(execution_id)
            && now < run.ends_at
        {
            run.stopped = true;
            if abandon {
                run.ends_at = now;
            }
        }
        Ok(())
    }

    async fn send_timer(
        &self,
        timer: &PipelineTimer,
        delay_secs: i32,
    ) -> Result<(), OrchestratorError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(action_failure("SendMessage (pipeline timer)"));
        }
        self.state
            .lock()
            .unwrap()
            .sent
            .push((timer.clone(), delay_secs));
        if fate == Fate::AnswerLost {
            return Err(action_failure("SendMessage (pipeline timer, answer lost)"));
        }
        Ok(())
    }

    async fn hand_over(&self, work: &HandedOver) -> Result<(), OrchestratorError> {
        let fate = self.dice.cloud_fate();
        if fate == Fate::Fails {
            return Err(action_failure("SendMessage (work handed over)"));
        }
        self.state.lock().unwrap().handed_over.push(work.clone());
        if fate == Fate::AnswerLost {
            return Err(action_failure(
                "SendMessage (work handed over, answer lost)",
            ));
        }
        Ok(())
    }

    /// The simulation reads no stream records, which is where reports come from.
    async fn report(&self, report: &sluice::notices::Report) -> Result<(), OrchestratorError> {
        panic!("the simulation reports nothing ({report:?})")
    }

    /// The simulation starts no custom resource rollouts.
    async fn answer_cloudformation(
        &self,
        url: &str,
        _body: Vec<u8>,
    ) -> Result<(), OrchestratorError> {
        panic!("no deployment of the simulation answers CloudFormation ({url})")
    }
}
