//! The deployment state machine, sans IO.
//!
//! `decide(state, input, now) -> (state, commands)`: the caller persists the new
//! state (conditionally on its version) and only then executes the commands.
//! Every phase says what must happen next (`pending`), and every command is
//! idempotent, so a crash between any two side effects is repaired by running
//! `pending` again. An input that does not fit the current phase and step
//! (stale, duplicated, out of order) changes nothing.
//!
//! The walk: created → prepared (lock held, versions known) → for each step
//! {PreTraffic gate → shift → PostTraffic gate → bake} → promoted. Any failed
//! gate, alarm, failed analysis or abort → rolling back (alias 100% on the old
//! version) → rolled back.

use crate::analysis::AnalysisSettings;
use crate::config::{DeploymentConfig, Schedule};
use crate::smoke::{S3Uri, SmokeTest};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

pub type Time = DateTime<Utc>;

/// Where the new version comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionSource {
    /// A version already published.
    Version(String),
    /// A zip in S3 to publish (UpdateFunctionCode + PublishVersion).
    Artifact {
        bucket: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object_version: Option<String>,
    },
}

/// What to do when another deployment holds the alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBusy {
    /// Wait for it to finish, then start.
    #[default]
    Queue,
    /// Fail to start.
    Refuse,
}

/// What Sluice does when it finds the alias changed by someone else (the
/// console's emergency rollback, a weight set by hand). Either way it never
/// writes over that change: the alias is left as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnManualChange {
    /// The deployment ends, rolled back: a person took the alias over.
    #[default]
    Rollback,
    /// The deployment is frozen until an operator resumes it (Sluice goes
    /// on from the alias as found) or aborts it (Sluice rolls back).
    Freeze,
}

/// What an operator or a pipeline asks for. Strict: a misspelled field
/// (`pre_traffic_hok`) is refused, never read as a gate left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub function: String,
    pub alias: String,
    pub source: VersionSource,
    pub config: DeploymentConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_traffic_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_traffic_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    #[serde(default)]
    pub on_busy: OnBusy,
    #[serde(default)]
    pub on_manual_change: OnManualChange,
    /// Sent to the hooks: what the PreTraffic hook runs against the new version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smoke_tests: Vec<SmokeTest>,
    /// Sent to the hooks: more smoke tests, kept in a file in S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_tests_from: Option<S3Uri>,
    /// Sent to the hooks: how the PostTraffic hook judges the new version's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSettings>,
}

impl DeploymentSpec {
    /// What is wrong with the names and values of the spec, each with its
    /// field, checked against AWS's patterns (`names`): nothing AWS would
    /// refuse is written down as a deployment.
    pub fn problems(&self) -> Vec<String> {
        use crate::{limits, names};
        type Rule = fn(&str) -> Result<(), String>;
        let mut named: Vec<(String, &str, Rule)> = vec![
            ("function".into(), &self.function, names::function),
            ("alias".into(), &self.alias, names::alias),
        ];
        if let VersionSource::Version(v) = &self.source {
            named.push(("source.version".into(), v, names::version));
        }
        for (field, hook) in [
            ("pre_traffic_hook", &self.pre_traffic_hook),
            ("post_traffic_hook", &self.post_traffic_hook),
        ] {
            if let Some(hook) = hook {
                named.push((field.into(), hook, names::invocable));
            }
        }
        for (i, alarm) in self.alarms.iter().enumerate() {
            named.push((format!("alarms[{i}]"), alarm, names::alarm));
        }
        let mut problems: Vec<String> = named
            .into_iter()
            .filter_map(|(field, value, rule)| {
                if value.trim().is_empty() {
                    Some(format!("{field} must not be empty"))
                } else {
                    rule(value).err().map(|why| format!("{field}: {why}"))
                }
            })
            .collect();
        if let VersionSource::Artifact { bucket, key, .. } = &self.source
            && (bucket.is_empty() || key.is_empty())
        {
            problems.push("source.artifact needs a bucket and a key".into());
        }
        let size = serde_json::to_vec(self).map_or(0, |json| json.len());
        if let Err(why) = limits::bytes("the spec as JSON", size, limits::MAX_SPEC_BYTES) {
            problems.push(format!(
                "{why} (keep a long smoke-test suite in S3: smoke_tests_from)"
            ));
        }
        problems
    }
}

/// Named as CodeDeploy names its lifecycle hooks, in the hook contract too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    PreTraffic,
    PostTraffic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the lock and the versions.
    Created,
    /// Another deployment holds the alias.
    Queued {
        holder: String,
    },
    /// The PreTraffic gate of `step` is running.
    PreTraffic {
        step: usize,
    },
    /// The alias is being set to `step`'s weight.
    Shifting {
        step: usize,
    },
    /// The PostTraffic gate of `step` is running.
    PostTraffic {
        step: usize,
    },
    /// Watching `step`'s weight until `until`.
    Baking {
        step: usize,
        until: Time,
    },
    /// The alias was found changed by someone else before `step`'s shift,
    /// and the deployment waits for an operator (`OnManualChange::Freeze`).
    Frozen {
        step: usize,
        found: String,
    },
    /// The alias is being put back to 100% old.
    RollingBack {
        reason: String,
    },
    Promoted,
    RolledBack {
        reason: String,
    },
    FailedToStart {
        reason: String,
    },
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Promoted | Phase::RolledBack { .. } | Phase::FailedToStart { .. }
        )
    }
}

/// Which alias update an acknowledgement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasUpdate {
    Step(usize),
    Rollback,
}

/// Facts that move a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// The lock is held and the versions are known (`from` is what the alias
    /// served, at `revision`).
    Prepared {
        from_version: String,
        to_version: String,
        #[serde(default)]
        revision: Option<String>,
    },
    PrepareFailed {
        reason: String,
    },
    LockBusy {
        holder: String,
    },
    LockFreed,
    GateResult {
        gate: Gate,
        step: usize,
        passed: bool,
        reason: String,
    },
    /// Sluice's write landed; the alias is at `revision`.
    AliasUpdated {
        update: AliasUpdate,
        #[serde(default)]
        revision: Option<String>,
    },
    /// Sluice's write was refused: someone else changed the alias, which
    /// now serves `found`, at `revision`.
    AliasChangedByHand {
        found: String,
        revision: Option<String>,
    },
    TimerFired {
        step: usize,
    },
    AlarmRaised {
        alarm: String,
    },
    AnalysisFailed {
        reason: String,
    },
    /// Skip the remaining waits; the gates still run.
    Promote,
    Pause,
    Resume,
    Abort {
        reason: String,
    },
    /// Start a new deployment of the same spec as `new_id`.
    Retry {
        new_id: String,
    },
}

/// The grace before the sweep picks up a phase that should have moved: longer
/// than a hook may run (`SLUICE_HOOK_TIMEOUT_SECONDS`), so the sweep does not
/// run a gate again while its first run is still under way.
pub const IN_FLIGHT_GRACE_SECS: i64 = 90;

/// Intentions; the executor makes them happen, in order, after the state is saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Take the alias lock, publish or resolve the new version, read the alias.
    Prepare,
    /// Run the gate (hook function and alarm check) for `step` at `weight`.
    RunGate {
        gate: Gate,
        step: usize,
        weight: f64,
    },
    /// Set the alias: `primary` version, and `additional` (version, percent) if split.
    SetAlias {
        primary: String,
        additional: Option<(String, f64)>,
        update: AliasUpdate,
    },
    StartTimer {
        step: usize,
        at: Time,
    },
    ReleaseLock,
    StartDeployment {
        id: String,
        spec: Box<DeploymentSpec>,
    },
    Record(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Queued,
    Prepared,
    GatePassed,
    GateFailed,
    Shifted,
    Baking,
    Paused,
    Resumed,
    /// A step started later than its bake's end, and why.
    Late,
    PromoteRequested,
    Promoted,
    RollbackStarted,
    RolledBack,
    FailedToStart,
    Retried,
}

/// One line of a deployment's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Time,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub spec: DeploymentSpec,
    pub schedule: Schedule,
    pub phase: Phase,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// Percent on the new version as last acknowledged on the alias.
    pub weight: f64,
    /// The alias's revision as Sluice last left it (read when prepared, then
    /// from each of its writes). Each write is conditional on it, so a change
    /// by anyone else is refused and seen, never written over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_revision: Option<String>,
    pub paused: bool,
    pub skip_waits: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_as: Option<String>,
    /// When the current step's shift was due (how late it was is `StepLatency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<Time>,
    /// When the current step's shift landed. Its bake runs from then, so
    /// whatever delayed the shift (slow gates, an outage), the weight is
    /// watched for the whole bake: no two shifts are closer than the bake
    /// unless an operator promotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shifted_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
}

impl Deployment {
    /// A new deployment and its first commands.
    pub fn create(id: &str, spec: DeploymentSpec, now: Time) -> (Self, Vec<Command>) {
        let schedule = spec.config.schedule();
        let d = Deployment {
            id: id.to_owned(),
            schedule,
            phase: Phase::Created,
            from_version: None,
            to_version: None,
            weight: 0.0,
            alias_revision: None,
            paused: false,
            skip_waits: false,
            retried_as: None,
            planned_at: None,
            shifted_at: None,
            created_at: now,
            updated_at: now,
            spec,
        };
        let mut commands = vec![record(
            now,
            EventKind::Created,
            format!(
                "deploy {} to {}:{} with {}",
                describe_source(&d.spec.source),
                d.spec.function,
                d.spec.alias,
                d.spec.config
            ),
        )];
        commands.extend(pending(&d, now));
        (d, commands)
    }

    fn last_step(&self) -> usize {
        self.schedule.steps.len() - 1
    }

    pub fn step_weight(&self, step: usize) -> f64 {
        self.schedule.steps[step].weight
    }

    /// Where the deployment is, as operators read it: its step and gate, or how it ended.
    pub fn status_text(&self) -> String {
        let steps = self.schedule.steps.len();
        let paused = if self.paused { " (paused)" } else { "" };
        match &self.phase {
            Phase::Created => "starting".into(),
            Phase::Queued { holder } => format!("queued behind {holder}"),
            Phase::PreTraffic { step } => {
                format!("step {}/{steps}: PreTraffic gate{paused}", step + 1)
            }
            Phase::Shifting { step } => format!("step {}/{steps}: shifting{paused}", step + 1),
            Phase::PostTraffic { step } => {
                format!("step {}/{steps}: PostTraffic gate{paused}", step + 1)
            }
            Phase::Baking { step, until } => format!(
                "step {}/{steps}: baking{paused}, next shift {}",
                step + 1,
                until.format("%H:%M:%S")
            ),
            Phase::Frozen { step, found } => format!(
                "step {}/{steps}: frozen, the alias was changed outside Sluice (it serves {found}): resume or abort",
                step + 1
            ),
            Phase::RollingBack { reason } => format!("rolling back: {reason}"),
            Phase::RolledBack { reason } => format!("rolled back: {reason}"),
            Phase::FailedToStart { reason } => format!("failed to start: {reason}"),
            Phase::Promoted => "promoted".into(),
        }
    }

    /// Whether a worker has something to run for it now; not while it
    /// waits (a bake, its turn, an operator) or once it has ended.
    pub fn needs_worker(&self, now: Time) -> bool {
        match &self.phase {
            Phase::Created
            | Phase::PreTraffic { .. }
            | Phase::Shifting { .. }
            | Phase::PostTraffic { .. }
            | Phase::RollingBack { .. } => true,
            Phase::Baking { until, .. } => !self.paused && *until <= now,
            Phase::Queued { .. }
            | Phase::Frozen { .. }
            | Phase::Promoted
            | Phase::RolledBack { .. }
            | Phase::FailedToStart { .. } => false,
        }
    }

    /// Whether a bake is still ahead (or under way) for a pause to hold at.
    pub fn has_bake_ahead(&self) -> bool {
        let from = match &self.phase {
            Phase::Created | Phase::Queued { .. } => 0,
            Phase::PreTraffic { step }
            | Phase::Shifting { step }
            | Phase::PostTraffic { step }
            | Phase::Baking { step, .. }
            | Phase::Frozen { step, .. } => *step,
            _ => return false,
        };
        self.schedule.steps[from..]
            .iter()
            .any(|s| !s.bake.is_zero())
    }

    /// The alias that puts `weight` percent on the new version: the primary
    /// version, and the new one with its percent when split.
    pub fn routing_at(&self, weight: f64) -> (String, Option<(String, f64)>) {
        let from = self.from_version.clone().unwrap_or_default();
        let to = self.to_version.clone().unwrap_or_default();
        if weight >= 100.0 {
            (to, None)
        } else if weight <= 0.0 {
            (from, None)
        } else {
            (from, Some((to, weight)))
        }
    }

    /// The routings Sluice may have left on the alias since its last
    /// recorded write: the weight last acknowledged and, while rolling back,
    /// any step's (a shift in flight when the rollback began may land late).
    /// Before the first shift is acknowledged, the old version whole is not
    /// among them: a first shift may have landed unrecorded, and a person's
    /// rollback of it looks the same, so it is taken as theirs.
    pub fn routings_left_by_sluice(&self) -> Vec<(String, Option<(String, f64)>)> {
        let rolling_back = matches!(self.phase, Phase::RollingBack { .. });
        let mut routings = Vec::new();
        if self.weight > 0.0 || rolling_back {
            routings.push(self.routing_at(self.weight));
        }
        if rolling_back {
            let steps = self.schedule.steps.iter();
            routings.extend(steps.map(|s| self.routing_at(s.weight)));
        }
        routings
    }
}

fn describe_source(source: &VersionSource) -> String {
    match source {
        VersionSource::Version(v) => format!("version {v}"),
        VersionSource::Artifact { bucket, key, .. } => format!("s3://{bucket}/{key}"),
    }
}

/// The timeline lines among `commands`.
pub fn events_of(commands: &[Command]) -> Vec<Event> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Record(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn record(at: Time, kind: EventKind, message: String) -> Command {
    Command::Record(Event { at, kind, message })
}

/// The commands the current phase needs; what the reconciler re-issues after a crash.
pub fn pending(d: &Deployment, now: Time) -> Vec<Command> {
    let from = d.from_version.clone().unwrap_or_default();
    match &d.phase {
        Phase::Created => vec![Command::Prepare],
        Phase::Queued { .. } => vec![],
        Phase::PreTraffic { step } => vec![Command::RunGate {
            gate: Gate::PreTraffic,
            step: *step,
            weight: d.step_weight(*step),
        }],
        Phase::Shifting { step } => {
            let (primary, additional) = d.routing_at(d.step_weight(*step));
            vec![Command::SetAlias {
                primary,
                additional,
                update: AliasUpdate::Step(*step),
            }]
        }
        Phase::Frozen { .. } => vec![],
        Phase::PostTraffic { step } => vec![Command::RunGate {
            gate: Gate::PostTraffic,
            step: *step,
            weight: d.step_weight(*step),
        }],
        Phase::Baking { step, until } if !d.paused && *until > now => {
            vec![Command::StartTimer {
                step: *step,
                at: *until,
            }]
        }
        Phase::Baking { .. } => vec![],
        Phase::RollingBack { .. } => vec![Command::SetAlias {
            primary: from,
            additional: None,
            update: AliasUpdate::Rollback,
        }],
        Phase::Promoted | Phase::RolledBack { .. } | Phase::FailedToStart { .. } => {
            vec![Command::ReleaseLock]
        }
    }
}

/// The state machine. Returns the state unchanged and no commands when the
/// input does not apply.
pub fn decide(state: &Deployment, input: &Input, now: Time) -> (Deployment, Vec<Command>) {
    let mut d = state.clone();
    let mut commands = Vec::new();
    let applied = step(&mut d, input, now, &mut commands);
    if !applied {
        return (state.clone(), Vec::new());
    }
    d.updated_at = now;
    (d, commands)
}

/// Moves to `phase` and issues what it needs.
fn enter(d: &mut Deployment, phase: Phase, now: Time, commands: &mut Vec<Command>) {
    d.phase = phase;
    commands.extend(pending(d, now));
}

fn roll_back(d: &mut Deployment, reason: String, now: Time, commands: &mut Vec<Command>) {
    commands.push(record(now, EventKind::RollbackStarted, reason.clone()));
    enter(d, Phase::RollingBack { reason }, now, commands);
}

fn fail_to_start(d: &mut Deployment, reason: String, now: Time, commands: &mut Vec<Command>) {
    commands.push(record(now, EventKind::FailedToStart, reason.clone()));
    enter(d, Phase::FailedToStart { reason }, now, commands);
}

/// Records a gate's result; a failed gate starts the rollback. Returns whether it passed.
fn gate_recorded(
    d: &mut Deployment,
    gate: Gate,
    step: usize,
    passed: bool,
    reason: &str,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let name = match gate {
        Gate::PreTraffic => "PreTraffic",
        Gate::PostTraffic => "PostTraffic",
    };
    let kind = if passed {
        EventKind::GatePassed
    } else {
        EventKind::GateFailed
    };
    commands.push(record(
        now,
        kind,
        format!("{name} at step {}: {reason}", step + 1),
    ));
    if !passed {
        let at = match gate {
            Gate::PreTraffic => format!("before {}%", d.step_weight(step)),
            Gate::PostTraffic => format!("at {}%", d.weight),
        };
        roll_back(
            d,
            format!("{name} gate failed {at}: {reason}"),
            now,
            commands,
        );
    }
    passed
}

/// After `step`'s PostTraffic gate: bake for the step's bake from its shift,
/// or go straight on when waits are skipped or the gate outlasted the bake.
fn after_step(d: &mut Deployment, step: usize, now: Time, commands: &mut Vec<Command>) {
    let bake = d.schedule.steps[step].bake;
    if d.skip_waits || bake.is_zero() {
        next_step(d, step, now, now, commands);
        return;
    }
    let shifted = d.shifted_at.unwrap_or(now);
    let until = shifted + ChronoDuration::from_std(bake).unwrap_or(ChronoDuration::MAX);
    if until <= now {
        commands.push(record(
            now,
            EventKind::Baking,
            format!(
                "step {} goes on at once: step {}'s bake of {} from its shift at {shifted} ended while its PostTraffic gate ran",
                step + 2,
                step + 1,
                humantime::format_duration(bake)
            ),
        ));
        next_step(d, step, until, now, commands);
        return;
    }
    commands.push(record(
        now,
        EventKind::Baking,
        format!("watching {}% until {until}", d.step_weight(step)),
    ));
    enter(d, Phase::Baking { step, until }, now, commands);
}

/// Starts the step after `step`, which was due at `planned`.
fn next_step(
    d: &mut Deployment,
    step: usize,
    planned: Time,
    now: Time,
    commands: &mut Vec<Command>,
) {
    d.planned_at = Some(planned);
    enter(d, Phase::PreTraffic { step: step + 1 }, now, commands);
}

fn step(d: &mut Deployment, input: &Input, now: Time, commands: &mut Vec<Command>) -> bool {
    if let Input::Retry { new_id } = input {
        return retried(d, new_id, now, commands);
    }
    match d.phase.clone() {
        Phase::Created | Phase::Queued { .. } => before_start(d, input, now, commands),
        Phase::Frozen { step, .. } => frozen(d, step, input, now, commands),
        Phase::RollingBack { reason } => rolling_back(d, reason, input, now, commands),
        Phase::PreTraffic { .. }
        | Phase::Shifting { .. }
        | Phase::PostTraffic { .. }
        | Phase::Baking { .. } => under_way(d, input, now, commands),
        Phase::Promoted | Phase::RolledBack { .. } | Phase::FailedToStart { .. } => false,
    }
}

/// A retry of a deployment that ended without promoting: a new one.
fn retried(d: &mut Deployment, new_id: &str, now: Time, commands: &mut Vec<Command>) -> bool {
    let retryable = matches!(
        d.phase,
        Phase::RolledBack { .. } | Phase::FailedToStart { .. }
    );
    if !retryable || d.retried_as.is_some() {
        return false;
    }
    d.retried_as = Some(new_id.to_owned());
    commands.push(record(
        now,
        EventKind::Retried,
        format!("retried as {new_id}"),
    ));
    commands.push(Command::StartDeployment {
        id: new_id.to_owned(),
        spec: Box::new(d.spec.clone()),
    });
    true
}

/// Created or queued: preparing, waiting for the lock, or stopped before any shift.
fn before_start(d: &mut Deployment, input: &Input, now: Time, commands: &mut Vec<Command>) -> bool {
    match (&d.phase, input) {
        (
            Phase::Created,
            Input::Prepared {
                from_version,
                to_version,
                revision,
            },
        ) => prepared(d, from_version, to_version, revision, now, commands),
        (Phase::Created, Input::PrepareFailed { reason }) => {
            fail_to_start(d, reason.clone(), now, commands);
        }
        (Phase::Created, Input::LockBusy { holder }) => lock_busy(d, holder, now, commands),
        (Phase::Queued { .. }, Input::LockFreed) => enter(d, Phase::Created, now, commands),
        (_, Input::Abort { reason }) => {
            fail_to_start(
                d,
                format!("aborted before any shift: {reason}"),
                now,
                commands,
            );
        }
        _ => return pause_resume_or_promote(d, input, now, commands),
    }
    true
}

fn prepared(
    d: &mut Deployment,
    from_version: &str,
    to_version: &str,
    revision: &Option<String>,
    now: Time,
    commands: &mut Vec<Command>,
) {
    d.from_version = Some(from_version.to_owned());
    d.to_version = Some(to_version.to_owned());
    d.alias_revision = revision.clone();
    if from_version == to_version {
        // Nothing to shift: Prepare read the alias whole on this
        // version. No write either: one issued from a finished phase
        // could land after the lock has passed to the next deployment.
        d.weight = 100.0;
        commands.push(record(
            now,
            EventKind::Promoted,
            format!(
                "{}:{} already serves version {to_version}",
                d.spec.function, d.spec.alias
            ),
        ));
        enter(d, Phase::Promoted, now, commands);
        return;
    }
    commands.push(record(
        now,
        EventKind::Prepared,
        format!("version {from_version} → {to_version}"),
    ));
    enter(d, Phase::PreTraffic { step: 0 }, now, commands);
}

fn lock_busy(d: &mut Deployment, holder: &str, now: Time, commands: &mut Vec<Command>) {
    match d.spec.on_busy {
        OnBusy::Refuse => {
            let reason = format!(
                "{}:{} is being deployed by {holder}",
                d.spec.function, d.spec.alias
            );
            fail_to_start(d, reason, now, commands);
        }
        OnBusy::Queue => {
            commands.push(record(
                now,
                EventKind::Queued,
                format!("waiting for {holder}"),
            ));
            let holder = holder.to_owned();
            enter(d, Phase::Queued { holder }, now, commands);
        }
    }
}

/// Gating, shifting or baking: the steps go on; an alarm, a failed
/// analysis or an abort rolls back.
fn under_way(d: &mut Deployment, input: &Input, now: Time, commands: &mut Vec<Command>) -> bool {
    match (&d.phase.clone(), input) {
        (
            Phase::PreTraffic { step },
            Input::GateResult {
                gate: Gate::PreTraffic,
                step: s,
                passed,
                reason,
            },
        ) if step == s => {
            if gate_recorded(d, Gate::PreTraffic, *step, *passed, reason, now, commands) {
                enter(d, Phase::Shifting { step: *step }, now, commands);
            }
        }
        (
            Phase::Shifting { step },
            Input::AliasUpdated {
                update: AliasUpdate::Step(s),
                revision,
            },
        ) if step == s => shifted(d, *step, revision, now, commands),
        (
            Phase::PostTraffic { step },
            Input::GateResult {
                gate: Gate::PostTraffic,
                step: s,
                passed,
                reason,
            },
        ) if step == s => {
            if gate_recorded(d, Gate::PostTraffic, *step, *passed, reason, now, commands) {
                step_passed(d, *step, now, commands);
            }
        }
        (Phase::Baking { step, until }, Input::TimerFired { step: s }) if step == s => {
            return bake_ended(d, *step, *until, now, commands);
        }
        (Phase::Shifting { step }, Input::AliasChangedByHand { found, revision }) => {
            changed_by_hand(d, *step, found, revision, now, commands);
        }
        (_, Input::AlarmRaised { alarm }) => {
            roll_back(d, format!("alarm {alarm} is in ALARM"), now, commands);
        }
        (_, Input::AnalysisFailed { reason }) => {
            roll_back(d, format!("analysis failed: {reason}"), now, commands);
        }
        (_, Input::Abort { reason }) => {
            roll_back(d, format!("aborted: {reason}"), now, commands);
        }
        _ => return pause_resume_or_promote(d, input, now, commands),
    }
    true
}

/// The alias took `step`'s weight.
fn shifted(
    d: &mut Deployment,
    step: usize,
    revision: &Option<String>,
    now: Time,
    commands: &mut Vec<Command>,
) {
    d.weight = d.step_weight(step);
    d.alias_revision = revision.clone();
    d.shifted_at = Some(now);
    if step == 0 {
        // The schedule runs from the first shift.
        d.planned_at = Some(now);
    }
    commands.push(record(
        now,
        EventKind::Shifted,
        format!(
            "{}% on version {}",
            d.weight,
            d.to_version.clone().unwrap_or_default()
        ),
    ));
    enter(d, Phase::PostTraffic { step }, now, commands);
}

/// `step`'s PostTraffic gate passed: promoted after the last step, else baking.
fn step_passed(d: &mut Deployment, step: usize, now: Time, commands: &mut Vec<Command>) {
    if step != d.last_step() {
        after_step(d, step, now, commands);
        return;
    }
    commands.push(record(
        now,
        EventKind::Promoted,
        format!(
            "version {} serves 100%",
            d.to_version.clone().unwrap_or_default()
        ),
    ));
    enter(d, Phase::Promoted, now, commands);
}

/// `step`'s bake timer fired; false when it changes nothing (paused).
fn bake_ended(
    d: &mut Deployment,
    step: usize,
    until: Time,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    if d.paused {
        return false;
    }
    if now < until {
        // Early (a timer's granularity): wait out the rest.
        commands.push(Command::StartTimer { step, at: until });
        return true;
    }
    let late = now - until;
    if late > ChronoDuration::seconds(1) {
        commands.push(record(
            now,
            EventKind::Late,
            format!(
                "step {} starts {}s after its bake ended: the wake-up came late",
                step + 2,
                late.num_seconds()
            ),
        ));
    }
    next_step(d, step, until, now, commands);
    true
}

/// Someone else wrote the alias before `step`'s shift: taken as their
/// rollback, or frozen, as the deployment asks.
fn changed_by_hand(
    d: &mut Deployment,
    step: usize,
    found: &str,
    revision: &Option<String>,
    now: Time,
    commands: &mut Vec<Command>,
) {
    d.alias_revision = revision.clone();
    let what = format!(
        "the alias was changed outside Sluice before step {}: it serves {found} (revision {})",
        step + 1,
        revision.as_deref().unwrap_or("unknown")
    );
    match d.spec.on_manual_change {
        OnManualChange::Rollback => {
            commands.push(record(
                now,
                EventKind::RolledBack,
                format!("{what}; taken as an operator's rollback, the alias left as found"),
            ));
            let reason = format!("the alias was changed outside Sluice: it serves {found}");
            enter(d, Phase::RolledBack { reason }, now, commands);
        }
        OnManualChange::Freeze => {
            commands.push(record(
                now,
                EventKind::Paused,
                format!(
                    "{what}; frozen, the alias left as found: resume goes on from it, abort rolls back"
                ),
            ));
            let found = found.to_owned();
            enter(d, Phase::Frozen { step, found }, now, commands);
        }
    }
}

/// Frozen: only an operator moves it (resume, promote or abort).
fn frozen(
    d: &mut Deployment,
    step: usize,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match input {
        Input::Resume | Input::Promote => {
            // An operator's word: Sluice goes on from the alias as found.
            let promote = matches!(input, Input::Promote);
            d.paused = false;
            d.skip_waits |= promote;
            commands.push(record(
                now,
                if promote {
                    EventKind::PromoteRequested
                } else {
                    EventKind::Resumed
                },
                format!("resumed from the alias as found, at step {}", step + 1),
            ));
            enter(d, Phase::Shifting { step }, now, commands);
        }
        Input::Abort { reason } => roll_back(d, format!("aborted: {reason}"), now, commands),
        _ => return false,
    }
    true
}

/// Rolling back: only the rollback's write (or someone else's) ends it.
fn rolling_back(
    d: &mut Deployment,
    reason: String,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match input {
        Input::AliasChangedByHand { found, revision } => {
            d.alias_revision = revision.clone();
            commands.push(record(
                now,
                EventKind::RolledBack,
                format!(
                    "the alias was changed outside Sluice during the rollback: it serves {found} (revision {}); left as found",
                    revision.as_deref().unwrap_or("unknown")
                ),
            ));
            enter(d, Phase::RolledBack { reason }, now, commands);
        }
        Input::AliasUpdated {
            update: AliasUpdate::Rollback,
            revision,
        } => {
            d.weight = 0.0;
            d.alias_revision = revision.clone();
            commands.push(record(
                now,
                EventKind::RolledBack,
                format!(
                    "version {} serves 100% again",
                    d.from_version.clone().unwrap_or_default()
                ),
            ));
            enter(d, Phase::RolledBack { reason }, now, commands);
        }
        _ => return false,
    }
    true
}

/// An operator's pause, resume or promote of a deployment that is not
/// frozen; anything else does not apply.
fn pause_resume_or_promote(
    d: &mut Deployment,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let phase = d.phase.clone();
    match input {
        Input::Pause => {
            if d.paused {
                return false;
            }
            d.paused = true;
            let when = if matches!(phase, Phase::Baking { .. }) {
                "now"
            } else {
                "at the next bake"
            };
            commands.push(record(now, EventKind::Paused, format!("paused {when}")));
        }
        Input::Resume => {
            if !d.paused {
                return false;
            }
            d.paused = false;
            commands.push(record(now, EventKind::Resumed, "resumed".into()));
            // Only a bake waits on the pause; anything else in flight carries on as it was.
            if let Phase::Baking { step, until } = phase {
                if now >= until {
                    next_step(d, step, now, now, commands);
                } else {
                    commands.extend(pending(d, now));
                }
            }
        }
        Input::Promote => {
            if d.skip_waits && !d.paused {
                return false;
            }
            d.skip_waits = true;
            d.paused = false;
            commands.push(record(
                now,
                EventKind::PromoteRequested,
                "remaining waits skipped; gates still run".into(),
            ));
            if let Phase::Baking { step, .. } = phase {
                next_step(d, step, now, now, commands);
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests;
