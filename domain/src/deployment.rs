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
//!
//! With `analysis`, each bake judges the new version's CloudWatch numbers
//! over whole periods, from the shift's, as they are published (timers
//! wake the worker for each: no worker waits for CloudWatch), and a bake
//! lasts at least until the shift's period is readable. An optional watch
//! after the last shift keeps judging at 100% before the promotion.

use crate::analysis::{
    AnalysisSettings, Counts, Measurement, MetricTiming, OnInconclusive, Verdict, judge,
};
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

/// What a failed gate or analysis does once the new version has traffic.
/// An alarm, an abort and the deployment's deadline roll back at once
/// whatever the policy; before the first shift there is nothing to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackPolicy {
    /// All traffic back on the old version at once.
    #[default]
    Immediate,
    /// The new version's weight stepped back down the schedule in
    /// reverse: at each lower weight the PostTraffic gate judges the old
    /// version (`HookRequest::stepping_back`), then the step's bake; a
    /// gate failed on the way down goes to 0% at once.
    Gradual,
    /// The split held, the deployment frozen for an operator: abort rolls
    /// back; resume or promote go on, the failed gate run again. Rolled
    /// back after `frozen_for_seconds` without either (for a new version
    /// that ran a migration the old one cannot read, say).
    Freeze,
}

impl RollbackPolicy {
    fn is_immediate(&self) -> bool {
        *self == RollbackPolicy::Immediate
    }
}

/// How long a deployment frozen on a failure waits for an operator by default.
pub const DEFAULT_FROZEN_SECS: u64 = 3600;
/// The longest it may wait: a week.
pub const MAX_FROZEN_SECS: u64 = 7 * 24 * 3600;

/// What is wrong with the rollback policy's settings, each named.
pub fn rollback_problems(
    policy: RollbackPolicy,
    frozen_for_seconds: Option<u64>,
    hook_invocation: HookInvocation,
) -> Vec<String> {
    if policy == RollbackPolicy::Gradual && hook_invocation.reports_later() {
        return vec![
            "rollback: gradual needs synchronous hooks (hook_invocation: sync): the gates on the way down answer at once".into(),
        ];
    }
    match (policy, frozen_for_seconds) {
        (RollbackPolicy::Immediate | RollbackPolicy::Gradual, Some(_)) => {
            vec!["frozen_for_seconds applies to rollback: freeze only".into()]
        }
        (_, Some(secs)) if !(1..=MAX_FROZEN_SECS).contains(&secs) => vec![format!(
            "frozen_for_seconds: {secs} must be from 1 to {MAX_FROZEN_SECS} (a week)"
        )],
        _ => vec![],
    }
}

/// Another function a deployment moves in lockstep with its own (a
/// release group): its alias goes from the version it serves to `source`
/// at every step, gated, watched and rolled back with the group's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub function: String,
    pub alias: String,
    pub source: VersionSource,
}

/// The most functions a release group moves, its own included: each step
/// costs one alias write a member, within Lambda's 15 control-plane
/// requests a second.
pub const MAX_GROUP_MEMBERS: usize = 20;

/// What is wrong with a release group's size, if anything.
pub fn group_size_problem(functions: usize, own: &str) -> Option<String> {
    (functions > MAX_GROUP_MEMBERS).then(|| {
        format!("{functions} functions with {own}, at most {MAX_GROUP_MEMBERS} in a group")
    })
}

/// What is wrong with a release group's members as a whole, each with the
/// member it is about (0: the deployment's own function; `None`: the
/// group): an alias named twice (a name and an ARN of one function are
/// one), a setting that applies to one function. A member not known yet
/// (a pipeline's templated name) is `None` in `targets`.
pub fn group_shape_problems(
    targets: &[Option<(&str, &str)>],
    on_manual_change: OnManualChange,
) -> Vec<(Option<usize>, String)> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (m, target) in targets.iter().enumerate() {
        if let Some((function, alias)) = target
            && !seen.insert((crate::names::bare_function(function), *alias))
        {
            problems.push((Some(m), format!("{function}:{alias} is in the group twice")));
        }
    }
    if targets.len() > 1 && on_manual_change == OnManualChange::Freeze {
        problems.push((None, "on_manual_change: freeze applies to one function; a group rolls its other members back when a member's alias is changed by hand".into()));
    }
    problems
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
    /// How each bake judges the new version's CloudWatch metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSettings>,
    /// How the hooks are invoked and answer: synchronously (the default),
    /// or asynchronously, reporting with a callback token.
    #[serde(default, skip_serializing_if = "HookInvocation::is_sync")]
    pub hook_invocation: HookInvocation,
    /// With asynchronous hooks: how long a hook may go without reporting or
    /// heartbeating before its gate fails (`DEFAULT_ASYNC_HOOK_SECS`, at
    /// most `MAX_ASYNC_HOOK_SECS` in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_seconds: Option<u64>,
    /// What a failed gate or analysis does once there is traffic to hold.
    #[serde(default, skip_serializing_if = "RollbackPolicy::is_immediate")]
    pub rollback: RollbackPolicy,
    /// With `rollback: freeze`: how long the deployment waits frozen for
    /// an operator before it rolls back (`DEFAULT_FROZEN_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_for_seconds: Option<u64>,
    /// More functions moved in lockstep with `function` (a release group,
    /// `MAX_GROUP_MEMBERS` in all): the gates run once a step for the
    /// whole group, the alarms and the analysis cover every member, and
    /// any failure rolls every member back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<MemberSpec>,
}

/// How a deployment's hooks are invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookInvocation {
    /// Invoked synchronously; the answer is the hook's return value, within
    /// the stack's hook timeout (a minute).
    #[default]
    Sync,
    /// Invoked asynchronously with a single-use callback token; the hook
    /// reports through Sluice's API (or heartbeats) within its timeout.
    Async,
    /// Invoked asynchronously with CodeDeploy's hook event (`DeploymentId`,
    /// `LifecycleEventHookExecutionId`, the latter the callback token): an
    /// existing CodeDeploy hook reports with
    /// `PutLifecycleEventHookExecutionStatus`, its SDK pointed at Sluice's
    /// hook-reports URL (`AWS_ENDPOINT_URL_CODEDEPLOY`).
    #[serde(rename = "codedeploy")]
    CodeDeploy,
}

impl HookInvocation {
    fn is_sync(&self) -> bool {
        *self == HookInvocation::Sync
    }

    /// Whether the gate waits for a report by callback token.
    pub fn reports_later(&self) -> bool {
        !self.is_sync()
    }
}

/// What is wrong with how the hooks are to be invoked, each named.
pub fn hook_problems(invocation: HookInvocation, timeout_seconds: Option<u64>) -> Vec<String> {
    match (invocation, timeout_seconds) {
        (HookInvocation::Sync, Some(_)) => vec![
            "hook_timeout_seconds applies to asynchronous hooks only (hook_invocation: async)"
                .into(),
        ],
        (_, Some(secs)) if !(1..=MAX_ASYNC_HOOK_SECS).contains(&secs) => vec![format!(
            "hook_timeout_seconds: {secs} must be from 1 to {MAX_ASYNC_HOOK_SECS} (an hour, as CodeDeploy allows)"
        )],
        _ => vec![],
    }
}

/// An asynchronous hook's default time without a report or a heartbeat.
pub const DEFAULT_ASYNC_HOOK_SECS: u64 = 900;
/// The longest an asynchronous hook may run, heartbeats included: an hour,
/// as CodeDeploy allows.
pub const MAX_ASYNC_HOOK_SECS: u64 = 3600;

impl DeploymentSpec {
    /// `function:alias` to `source` through `config`, with no hooks, alarms,
    /// smoke tests or analysis, and the defaults of the rest.
    pub fn new(
        function: &str,
        alias: &str,
        source: VersionSource,
        config: DeploymentConfig,
    ) -> Self {
        DeploymentSpec {
            function: function.to_owned(),
            alias: alias.to_owned(),
            source,
            config,
            pre_traffic_hook: None,
            post_traffic_hook: None,
            alarms: Vec::new(),
            on_busy: OnBusy::default(),
            on_manual_change: OnManualChange::default(),
            smoke_tests: Vec::new(),
            smoke_tests_from: None,
            analysis: None,
            hook_invocation: HookInvocation::default(),
            hook_timeout_seconds: None,
            rollback: RollbackPolicy::default(),
            frozen_for_seconds: None,
            group: Vec::new(),
        }
    }

    /// The functions and aliases it moves: its own, then its group's.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.function.as_str(), self.alias.as_str())).chain(
            self.group
                .iter()
                .map(|m| (m.function.as_str(), m.alias.as_str())),
        )
    }

    /// Member `m`'s source: the deployment's own (0), or its group's.
    pub fn source_of(&self, m: usize) -> &VersionSource {
        match m {
            0 => &self.source,
            m => &self.group[m - 1].source,
        }
    }

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
        for (i, member) in self.group.iter().enumerate() {
            named.push((
                format!("group[{i}].function"),
                &member.function,
                names::function,
            ));
            named.push((format!("group[{i}].alias"), &member.alias, names::alias));
            if let VersionSource::Version(v) = &member.source {
                named.push((format!("group[{i}].source.version"), v, names::version));
            }
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
        let sources = std::iter::once(("source".to_owned(), &self.source)).chain(
            self.group
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("group[{i}].source"), &m.source)),
        );
        for (field, source) in sources {
            if let VersionSource::Artifact { bucket, key, .. } = source
                && (bucket.is_empty() || key.is_empty())
            {
                problems.push(format!("{field}.artifact needs a bucket and a key"));
            }
        }
        problems.extend(self.group_problems());
        for (i, test) in self.smoke_tests.iter().enumerate() {
            if let Some(function) = &test.function
                && !self.targets().any(|(f, _)| f == function)
            {
                problems.push(format!(
                    "smoke_tests[{i}].function: {function} is not a function this deployment moves"
                ));
            } else if let Some(function) = &test.function
                && self.targets().filter(|(f, _)| f == function).count() > 1
            {
                problems.push(format!(
                    "smoke_tests[{i}].function: {function} is in the group under more than one alias: a smoke test cannot tell which it invokes"
                ));
            }
        }
        if let Some(analysis) = &self.analysis {
            problems.extend(analysis.problems(&self.config));
        }
        problems.extend(hook_problems(
            self.hook_invocation,
            self.hook_timeout_seconds,
        ));
        problems.extend(rollback_problems(
            self.rollback,
            self.frozen_for_seconds,
            self.hook_invocation,
        ));
        let size = serde_json::to_vec(self).map_or(0, |json| json.len());
        if let Err(why) = limits::bytes("the spec as JSON", size, limits::MAX_SPEC_BYTES) {
            problems.push(format!(
                "{why} (keep a long smoke-test suite in S3: smoke_tests_from)"
            ));
        }
        problems
    }
}

impl DeploymentSpec {
    /// What is wrong with the release group as such, each named: its
    /// size, an alias named twice, a setting that applies to one function.
    fn group_problems(&self) -> Vec<String> {
        let targets: Vec<_> = self.targets().map(Some).collect();
        let mut problems: Vec<String> = group_shape_problems(&targets, self.on_manual_change)
            .into_iter()
            .map(|(member, why)| match member {
                Some(m) => format!("group[{}]: {why}", m - 1),
                None => why,
            })
            .collect();
        if let Some(why) = group_size_problem(self.group.len() + 1, &self.function) {
            problems.push(format!("group: {why}"));
        }
        problems
    }

    /// The least time a run of this spec takes from its first shift to its
    /// end, gates aside: its bakes, each at least as long as the analysis
    /// needs to read a whole period after the shift (`timing`), and the
    /// watch after 100%.
    pub fn shortest_run(&self, timing: &MetricTiming) -> std::time::Duration {
        let steps = self.config.schedule().steps;
        let analysed = self.analysis.as_ref();
        let read = (timing.period() + timing.lag())
            .to_std()
            .unwrap_or_default();
        let bakes: std::time::Duration = steps[..steps.len() - 1]
            .iter()
            .map(|s| {
                if analysed.is_some() {
                    s.bake.max(read)
                } else {
                    s.bake
                }
            })
            .sum();
        let watch = analysed
            .and_then(|a| a.watch_after_promotion_seconds)
            .map_or(std::time::Duration::ZERO, |secs| {
                std::time::Duration::from_secs(secs).max(read)
            });
        bakes + watch
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
    /// Another deployment holds the alias (of the group's member `member`).
    Queued {
        holder: String,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
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
    /// A check (`failed`) judged the new version bad at `step`, and the
    /// deployment holds its split for an operator
    /// (`RollbackPolicy::Freeze`): rolled back at `until` without one.
    FrozenOnFailure {
        step: usize,
        failed: FailedCheck,
        reason: String,
        until: Time,
    },
    /// A gradual rollback (`RollbackPolicy::Gradual`): the new version's
    /// weight goes down the schedule in reverse, to `step`'s weight, then
    /// to 0% (`RollingBack`).
    SteppingBack {
        step: usize,
        stage: BackStage,
        reason: String,
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

/// What froze a deployment on a failure, for it to go on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedCheck {
    /// A gate: run again when the deployment goes on.
    Gate(Gate),
    /// The analysis of the bake that was to end at `bake_ends`: waived for
    /// that step when the deployment goes on, the rest of the bake watched.
    Analysis { bake_ends: Time },
}

/// Where a gradual rollback is at its step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackStage {
    /// The alias is being set to the step's weight.
    Shifting,
    /// The PostTraffic gate judges the old version at that weight.
    Gate,
    /// Watching that weight until `until` (the step's bake).
    Baking { until: Time },
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Promoted | Phase::RolledBack { .. } | Phase::FailedToStart { .. }
        )
    }
}

/// An alias as an ended deployment left it: whole on `version`, at
/// `revision` (`Deployment::alias_left`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLeft {
    pub version: String,
    pub revision: String,
    /// The function's unqualified ARN.
    pub function_arn: Option<String>,
}

/// Which alias update an acknowledgement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasUpdate {
    Step(usize),
    /// A gradual rollback's step down to `step`'s weight.
    StepBack(usize),
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
        /// When the worker's CloudWatch publishes Lambda's metrics (AWS's if left out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric_timing: Option<MetricTiming>,
        /// The function's unqualified ARN, for the hooks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function_arn: Option<String>,
        /// The same of each of the group's other members, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        group: Vec<PreparedMember>,
    },
    PrepareFailed {
        reason: String,
    },
    /// Another deployment holds the alias of member `member` (0: the
    /// deployment's own function).
    LockBusy {
        holder: String,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
    },
    LockFreed,
    GateResult {
        gate: Gate,
        step: usize,
        passed: bool,
        reason: String,
    },
    /// Sluice's write landed on `member`'s alias, now at `revision`.
    AliasUpdated {
        update: AliasUpdate,
        #[serde(default)]
        revision: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
    },
    /// Sluice's write was refused: someone else changed `member`'s alias,
    /// which now serves `found`, at `revision`.
    AliasChangedByHand {
        found: String,
        revision: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
    },
    /// Sluice's write to `member`'s alias failed for good (refused, or
    /// still failing after its retries): the deployment rolls back, so a
    /// group is never left half-shifted.
    AliasWriteFailed {
        update: AliasUpdate,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
        reason: String,
    },
    /// A timer for `step`: one armed for `at` (`Command::StartTimer`), or
    /// without `at` the sweep's, for whatever is due. A timer for a wake
    /// that has since moved is stale and changes nothing: the move armed
    /// its own.
    TimerFired {
        step: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Time>,
    },
    AlarmRaised {
        alarm: String,
    },
    /// The gate's alarms passed and its asynchronous hook is to be invoked
    /// with `token` (minted by the worker; only its digest is saved).
    HookStarted {
        gate: Gate,
        step: usize,
        token: String,
    },
    /// Lambda took the asynchronous invocation of the hook holding `token_sha256`.
    HookInvoked {
        gate: Gate,
        step: usize,
        token_sha256: String,
    },
    /// An asynchronous hook's report, by its callback token.
    HookReported {
        token: String,
        passed: bool,
        reason: String,
    },
    /// An asynchronous hook is still at work: its deadline moves on.
    HookHeartbeat {
        token: String,
    },
    /// CloudWatch's numbers for `step`'s analysis (`Command::Measure`):
    /// the deployment's own function's, and each other member's in order.
    Measured {
        step: usize,
        measurement: Measurement,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        group: Vec<Measurement>,
    },
    /// CloudWatch could not be read for `step`'s analysis.
    MeasureFailed {
        step: usize,
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
    /// Take the alias lock, publish or resolve the new version, and find the
    /// alias (as its last deployment left it, or read).
    Prepare,
    /// Run the gate (hook function and alarm check) for `step` at `weight`.
    RunGate {
        gate: Gate,
        step: usize,
        weight: f64,
    },
    /// Set `member`'s alias: `primary` version, and `additional` (version,
    /// percent) if split.
    SetAlias {
        primary: String,
        additional: Option<(String, f64)>,
        update: AliasUpdate,
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        member: usize,
    },
    StartTimer {
        step: usize,
        at: Time,
    },
    /// Invoke the gate's hook asynchronously with its callback token.
    InvokeHook {
        gate: Gate,
        step: usize,
        weight: f64,
        token: String,
        deadline: Time,
    },
    /// Read both versions' numbers over the whole periods `[from, to)`, of
    /// every member.
    Measure {
        step: usize,
        from: Time,
        to: Time,
    },
    /// Release every member's alias lock.
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
    /// An analysis verdict, or a read of CloudWatch that failed.
    Analysed,
    /// An asynchronous hook was invoked, or heartbeat.
    HookWaiting,
    Paused,
    Resumed,
    /// A step started later than its bake's end, and why.
    Late,
    PromoteRequested,
    /// A failure froze the deployment, its split held for an operator.
    Frozen,
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

/// Where a bake's analysis stands: the periods judged so far and the verdict on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisProgress {
    /// The step whose bake (or, at the last step, whose watch) it judges.
    pub step: usize,
    /// The period of the shift: the window's start.
    pub from: Time,
    /// The end of the periods judged so far (`from` before the first read).
    pub through: Time,
    /// The verdict over `[from, through)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why the last read of CloudWatch failed, and when to read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Time>,
    /// With `on_inconclusive: wait`, once the bake ended short of a
    /// verdict: the latest the verdict may come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<Time>,
    /// Both versions' numbers over `[from, through)`, for the newly
    /// published periods' own verdict at the next read. Boxed: a deployment
    /// is moved through the workers' futures, whose size it multiplies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<Box<(Counts, Counts)>>,
    /// The same of each of the group's other members, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_counted: Vec<(Counts, Counts)>,
}

impl AnalysisProgress {
    fn new(step: usize, from: Time) -> Self {
        AnalysisProgress {
            step,
            from,
            through: from,
            verdict: None,
            failed: None,
            retry_at: None,
            wait_until: None,
            counted: None,
            group_counted: Vec::new(),
        }
    }

    /// When the next read may find something new: the next period's
    /// publication, or the retry of a failed read.
    fn next_read(&self, timing: &MetricTiming) -> Time {
        let published = timing.readable_at(self.through + timing.period());
        self.retry_at
            .map_or(published, |retry| retry.max(published))
    }

    fn read_due(&self, timing: &MetricTiming, now: Time) -> bool {
        self.next_read(timing) <= now
    }

    /// When a bake that ends at `until` may end: later while it waits for
    /// data (`on_inconclusive: wait`), but not once the analysis has passed.
    fn holds_until(&self, until: Time) -> Time {
        match (&self.verdict, self.wait_until) {
            (Some(Verdict::Pass(_)), _) | (_, None) => until,
            (_, Some(wait)) => wait.max(until),
        }
    }
}

/// An asynchronous hook under way: its gate waits for a report bearing the
/// token whose digest this is, until `deadline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookWait {
    pub gate: Gate,
    pub step: usize,
    /// SHA-256 of the callback token, in hex: the token itself is not saved.
    pub token_sha256: String,
    pub started_at: Time,
    pub deadline: Time,
    /// Whether Lambda took the invocation: until then a repair mints a new token.
    pub invoked: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// What preparing found of a group member other than the deployment's own
/// function (`Input::Prepared`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedMember {
    pub from_version: String,
    pub to_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
}

/// Where one member of a release group stands on its alias. The
/// deployment's own function's is its own fields (`Deployment::member`);
/// each other member's is kept in `Deployment::group`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// Percent on the new version as last acknowledged on this alias.
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_revision: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alias_routed_by_sluice: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
}

/// The digest under which a callback token is saved and looked up.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    /// What the alias routes at `alias_revision` is Sluice's: its own
    /// write, or the whole alias it was prepared from. False once a change
    /// by someone else was seen (and in states saved before it was kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alias_routed_by_sluice: bool,
    /// Workers that claimed the current phase since it was entered (a
    /// repair, a redelivery, a hand-back): 0 while only the worker that
    /// entered it has acted on it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claims: u32,
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
    /// The function's unqualified ARN, read when prepared: hooks are sent
    /// the versions' ARNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    /// When CloudWatch publishes Lambda's periods, as the preparing worker knows it.
    #[serde(default)]
    pub metric_timing: MetricTiming,
    /// The analysis of the current (or last) bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisProgress>,
    /// The asynchronous hook the current gate waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_wait: Option<HookWait>,
    /// The group's other members, in the spec's order, once prepared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<MemberState>,
    /// The members (0: the deployment's own function) whose alias write of
    /// the current phase has landed: a write phase ends when every member
    /// that moves has, so the group never leaves it half-shifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub landed: Vec<usize>,
    /// By when it must have ended: still under way then, it is aborted
    /// (a caller that stops waiting, such as CloudFormation, finds the
    /// alias whole on the old version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
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
            alias_routed_by_sluice: false,
            claims: 0,
            paused: false,
            skip_waits: false,
            retried_as: None,
            planned_at: None,
            shifted_at: None,
            function_arn: None,
            metric_timing: MetricTiming::default(),
            analysis: None,
            hook_wait: None,
            group: Vec::new(),
            landed: Vec::new(),
            deadline: None,
            created_at: now,
            updated_at: now,
            spec,
        };
        let what = d
            .spec
            .targets()
            .enumerate()
            .map(|(m, (function, alias))| {
                format!(
                    "{} to {function}:{alias}",
                    describe_source(d.spec.source_of(m))
                )
            })
            .collect::<Vec<_>>();
        let group = match what.len() {
            1 => String::new(),
            n => format!(" (a release group of {n}, in lockstep)"),
        };
        let mut commands = vec![record(
            now,
            EventKind::Created,
            format!("deploy {}{group} with {}", what.join(", "), d.spec.config),
        )];
        commands.extend(pending(&d, now));
        (d, commands)
    }

    fn last_step(&self) -> usize {
        self.schedule.steps.len() - 1
    }

    /// The asynchronous hook the current gate waits for, if any.
    pub fn waiting_hook(&self) -> Option<&HookWait> {
        let (gate, step) = match self.phase {
            Phase::PreTraffic { step } => (Gate::PreTraffic, step),
            Phase::PostTraffic { step } => (Gate::PostTraffic, step),
            _ => return None,
        };
        self.hook_wait
            .as_ref()
            .filter(|w| w.gate == gate && w.step == step)
    }

    /// When an invoked asynchronous hook's gate fails unless it reports.
    pub fn hook_deadline(&self) -> Option<Time> {
        self.waiting_hook()
            .filter(|w| w.invoked)
            .map(|w| w.deadline)
    }

    /// The hook function of `gate`, if the deployment names one.
    pub fn hook(&self, gate: Gate) -> Option<&str> {
        match gate {
            Gate::PreTraffic => self.spec.pre_traffic_hook.as_deref(),
            Gate::PostTraffic => self.spec.post_traffic_hook.as_deref(),
        }
    }

    fn hook_name(&self, gate: Gate) -> &str {
        self.hook(gate).unwrap_or("(none)")
    }

    /// The analysis of `step`'s bake, if it has one.
    fn analysis_of(&self, step: usize) -> Option<&AnalysisProgress> {
        self.analysis.as_ref().filter(|a| a.step == step)
    }

    /// When a baking deployment next needs its worker: its analysis's next
    /// read, or the end of its bake (and of any wait for data). A paused
    /// bake does not end, but its analysis keeps reading.
    pub fn bake_wake(&self) -> Option<Time> {
        let Phase::Baking { step, until } = &self.phase else {
            return None;
        };
        let analysis = self.analysis_of(*step);
        let read = analysis.map(|a| a.next_read(&self.metric_timing));
        let end = (!self.paused).then(|| analysis.map_or(*until, |a| a.holds_until(*until)));
        match (read, end) {
            (Some(read), Some(end)) => Some(read.min(end)),
            (read, end) => read.or(end),
        }
    }

    /// When the deployment next needs a timer, and for which step: its
    /// bake's wake, or its invoked hook's deadline, or its own deadline.
    pub fn wake(&self) -> Option<(usize, Time)> {
        let own = match &self.phase {
            Phase::Baking { step, .. } => self.bake_wake().map(|at| (*step, at)),
            Phase::FrozenOnFailure { step, until, .. } => Some((*step, *until)),
            Phase::SteppingBack {
                step,
                stage: BackStage::Baking { until },
                ..
            } => Some((*step, *until)),
            _ => self
                .waiting_hook()
                .and_then(|w| self.hook_deadline().map(|at| (w.step, at))),
        };
        match (own, self.abort_at()) {
            (Some((step, at)), Some(deadline)) => Some((step, at.min(deadline))),
            (own, deadline) => own.or(deadline.map(|at| (self.step_at(), at))),
        }
    }

    /// The deadline, while it still applies: not once ended or rolling back.
    pub fn abort_at(&self) -> Option<Time> {
        let over = self.phase.is_terminal() || matches!(self.phase, Phase::RollingBack { .. });
        self.deadline.filter(|_| !over)
    }

    /// The step the deployment is at (0 before its first).
    fn step_at(&self) -> usize {
        match &self.phase {
            Phase::PreTraffic { step }
            | Phase::Shifting { step }
            | Phase::PostTraffic { step }
            | Phase::Baking { step, .. }
            | Phase::Frozen { step, .. } => *step,
            _ => 0,
        }
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
            Phase::Queued { holder, member } if self.members() > 1 => {
                format!(
                    "queued behind {holder}, which holds {}",
                    self.target_name(*member)
                )
            }
            Phase::Queued { holder, .. } => format!("queued behind {holder}"),
            Phase::PreTraffic { step } | Phase::PostTraffic { step }
                if self.hook_deadline().is_some() =>
            {
                let w = self.waiting_hook().expect("a hook wait");
                format!(
                    "step {}/{steps}: {} gate{paused}, waiting for {}'s report until {}",
                    step + 1,
                    gate_name(w.gate),
                    self.hook_name(w.gate),
                    w.deadline.format("%H:%M:%S")
                )
            }
            Phase::PreTraffic { step } => {
                format!("step {}/{steps}: PreTraffic gate{paused}", step + 1)
            }
            Phase::Shifting { step } if self.members() > 1 => format!(
                "step {}/{steps}: shifting{paused}, {} of {} members at {}%",
                step + 1,
                self.landed.len() + (0..self.members()).filter(|m| !self.moves(*m)).count(),
                self.members(),
                self.step_weight(*step)
            ),
            Phase::Shifting { step } => format!("step {}/{steps}: shifting{paused}", step + 1),
            Phase::PostTraffic { step } => {
                format!("step {}/{steps}: PostTraffic gate{paused}", step + 1)
            }
            Phase::Baking { step, until } if *step == self.last_step() => format!(
                "step {}/{steps}: 100%, watched{paused} until {} before the promotion",
                step + 1,
                until.format("%H:%M:%S")
            ),
            Phase::Baking { step, until } => format!(
                "step {}/{steps}: baking{paused}, next shift {}",
                step + 1,
                until.format("%H:%M:%S")
            ),
            Phase::Frozen { step, found } => format!(
                "step {}/{steps}: frozen, the alias was changed outside Sluice (it serves {found}): resume or abort",
                step + 1
            ),
            Phase::FrozenOnFailure {
                step,
                reason,
                until,
                ..
            } => format!(
                "step {}/{steps}: frozen at {}% ({reason}): abort, resume or promote by {}, else rolled back then",
                step + 1,
                self.weight,
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Phase::SteppingBack {
                step,
                stage,
                reason,
            } => format!(
                "stepping back ({reason}): {}",
                match stage {
                    BackStage::Shifting => format!("setting {}%", self.step_weight(*step)),
                    BackStage::Gate =>
                        format!("PostTraffic gate on the old version at {}%", self.weight),
                    BackStage::Baking { until } => format!(
                        "watching {}% until {}",
                        self.weight,
                        until.format("%H:%M:%S")
                    ),
                }
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
        if self.abort_at().is_some_and(|at| at <= now) {
            return true;
        }
        match &self.phase {
            Phase::PreTraffic { .. } | Phase::PostTraffic { .. } => {
                self.hook_deadline().is_none_or(|deadline| deadline <= now)
            }
            Phase::Created | Phase::Shifting { .. } | Phase::RollingBack { .. } => true,
            Phase::Baking { .. } => self.bake_wake().is_some_and(|at| at <= now),
            Phase::FrozenOnFailure { until, .. }
            | Phase::SteppingBack {
                stage: BackStage::Baking { until },
                ..
            } => *until <= now,
            Phase::SteppingBack { .. } => true,
            Phase::Queued { .. }
            | Phase::Frozen { .. }
            | Phase::Promoted
            | Phase::RolledBack { .. }
            | Phase::FailedToStart { .. } => false,
        }
    }

    /// Whether a bake is still ahead (or under way) for a pause to hold at:
    /// a step's own, or one its analysis or the watch after 100% needs.
    pub fn has_bake_ahead(&self) -> bool {
        let from = match &self.phase {
            Phase::Created | Phase::Queued { .. } => 0,
            Phase::PreTraffic { step }
            | Phase::Shifting { step }
            | Phase::PostTraffic { step }
            | Phase::Baking { step, .. }
            | Phase::Frozen { step, .. }
            | Phase::FrozenOnFailure { step, .. } => *step,
            _ => return false,
        };
        self.spec.analysis.is_some()
            || self.schedule.steps[from..]
                .iter()
                .any(|s| !s.bake.is_zero())
    }

    /// How many functions it moves: its own and its group's.
    pub fn members(&self) -> usize {
        1 + self.spec.group.len()
    }

    /// Member `m`'s function and alias (0: the deployment's own).
    pub fn target(&self, m: usize) -> (&str, &str) {
        self.spec
            .targets()
            .nth(m)
            .expect("a member of the deployment")
    }

    /// `function:alias` of member `m`.
    pub fn target_name(&self, m: usize) -> String {
        let (function, alias) = self.target(m);
        format!("{function}:{alias}")
    }

    /// Where member `m` stands on its alias (before it is prepared, nowhere).
    pub fn member(&self, m: usize) -> MemberState {
        if m == 0 {
            return MemberState {
                from_version: self.from_version.clone(),
                to_version: self.to_version.clone(),
                weight: self.weight,
                alias_revision: self.alias_revision.clone(),
                alias_routed_by_sluice: self.alias_routed_by_sluice,
                function_arn: self.function_arn.clone(),
            };
        }
        self.group.get(m - 1).cloned().unwrap_or_default()
    }

    fn update_member(&mut self, m: usize, update: impl FnOnce(&mut MemberState)) {
        let mut state = self.member(m);
        update(&mut state);
        if m == 0 {
            self.from_version = state.from_version;
            self.to_version = state.to_version;
            self.weight = state.weight;
            self.alias_revision = state.alias_revision;
            self.alias_routed_by_sluice = state.alias_routed_by_sluice;
            self.function_arn = state.function_arn;
        } else if let Some(slot) = self.group.get_mut(m - 1) {
            *slot = state;
        }
    }

    /// Whether member `m` has anything to shift: a member whose alias
    /// serves its new version already is left alone.
    pub fn moves(&self, m: usize) -> bool {
        let state = self.member(m);
        state.from_version != state.to_version
    }

    /// Whether every member that moves has taken the current write phase's write.
    fn all_landed(&self) -> bool {
        (0..self.members()).all(|m| !self.moves(m) || self.landed.contains(&m))
    }

    /// The alias of member `m` that puts `weight` percent on its new
    /// version: the primary version, and the new one with its percent when split.
    pub fn routing_at(&self, m: usize, weight: f64) -> (String, Option<(String, f64)>) {
        let state = self.member(m);
        let from = state.from_version.unwrap_or_default();
        let to = state.to_version.unwrap_or_default();
        if weight >= 100.0 {
            (to, None)
        } else if weight <= 0.0 {
            (from, None)
        } else {
            (from, Some((to, weight)))
        }
    }

    /// How an ended deployment leaves member `m`'s alias, when Sluice knows
    /// it: whole on one version at `alias_revision`, by its own write (or
    /// as found whole when it was prepared). Kept beside the alias's lock
    /// once released, so the next deployment of the alias starts from it
    /// with no `GetAlias`: its first write names this revision, and Lambda
    /// refuses it if anyone has written the alias since.
    pub fn alias_left(&self, m: usize) -> Option<AliasLeft> {
        let state = self.member(m);
        if !state.alias_routed_by_sluice {
            return None;
        }
        let version = match &self.phase {
            Phase::Promoted => state.to_version?,
            // A member that never moved is as it was found.
            Phase::RolledBack { .. } if state.weight == 0.0 || !self.moves(m) => {
                state.from_version?
            }
            _ => return None,
        };
        Some(AliasLeft {
            version,
            revision: state.alias_revision?,
            function_arn: state.function_arn,
        })
    }

    /// The routings Sluice may have left on member `m`'s alias since its
    /// last recorded write: the weight last acknowledged and, while rolling
    /// back or stepping back, the one a write still in flight may leave.
    /// Before the first shift is acknowledged, the old version whole is not
    /// among them: a first shift may have landed unrecorded, and a person's
    /// rollback of it looks the same, so it is taken as theirs.
    pub fn routings_left_by_sluice(&self, m: usize) -> Vec<(String, Option<(String, f64)>)> {
        let weight = self.member(m).weight;
        let mut routings = Vec::new();
        let rolling_back = matches!(self.phase, Phase::RollingBack { .. });
        if weight > 0.0 || rolling_back {
            routings.push(self.routing_at(m, weight));
        }
        // A write that may still be in flight: the step above (a shift
        // overtaken by the rollback) or below (a step back); never any
        // other step's weight, which would be a person's.
        let weights = self.schedule.steps.iter().map(|s| s.weight);
        let above = weights.clone().filter(|w| *w > weight).reduce(f64::min);
        let below = weights.filter(|w| *w < weight).reduce(f64::max);
        match self.phase {
            Phase::RollingBack { .. } => {
                routings.extend(
                    [above, below]
                        .into_iter()
                        .flatten()
                        .map(|w| self.routing_at(m, w)),
                );
            }
            Phase::SteppingBack { .. } => {
                routings.extend(below.map(|w| self.routing_at(m, w)));
            }
            _ => {}
        }
        routings
    }

    /// Each member's versions, for the timeline: `4 → 5` alone, or
    /// `api:live 4 → 5, worker:live 2 → 3` in a group.
    fn versions_text(&self, describe: impl Fn(&MemberState) -> String) -> String {
        if self.members() == 1 {
            return describe(&self.member(0));
        }
        (0..self.members())
            .map(|m| format!("{} {}", self.target_name(m), describe(&self.member(m))))
            .collect::<Vec<_>>()
            .join(", ")
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

/// The input `command` gives with no request made, if any: a gate with no
/// hook and no alarm to read passes.
pub fn settled_at_once(d: &Deployment, command: &Command) -> Option<Input> {
    match command {
        Command::RunGate { gate, step, .. }
            if d.spec.alarms.is_empty() && d.hook(*gate).is_none() =>
        {
            Some(Input::GateResult {
                gate: *gate,
                step: *step,
                passed: true,
                reason: "nothing to run: no hook, no alarm".into(),
            })
        }
        _ => None,
    }
}

/// The commands the current phase needs; what the reconciler re-issues after a crash.
pub fn pending(d: &Deployment, now: Time) -> Vec<Command> {
    match &d.phase {
        // The deadline's timer is armed with the first command (the
        // minutely sweep covers a lost one).
        Phase::Created => {
            let deadline = d.abort_at().map(|at| Command::StartTimer { step: 0, at });
            std::iter::once(Command::Prepare).chain(deadline).collect()
        }
        Phase::Queued { .. } => vec![],
        Phase::PreTraffic { step } | Phase::PostTraffic { step } => match d.hook_deadline() {
            // An invoked hook is waited for; one not known to be invoked is
            // started again, under a new token.
            Some(deadline) => vec![Command::StartTimer {
                step: *step,
                at: deadline,
            }],
            None => vec![Command::RunGate {
                gate: gate_of(&d.phase),
                step: *step,
                weight: d.step_weight(*step),
            }],
        },
        Phase::Shifting { step } => alias_writes(d, d.step_weight(*step), AliasUpdate::Step(*step)),
        Phase::Frozen { .. } => vec![],
        Phase::FrozenOnFailure { step, until, .. } if *until > now => vec![Command::StartTimer {
            step: *step,
            at: *until,
        }],
        Phase::FrozenOnFailure { .. } => vec![],
        Phase::SteppingBack { step, stage, .. } => match stage {
            BackStage::Shifting => {
                alias_writes(d, d.step_weight(*step), AliasUpdate::StepBack(*step))
            }
            BackStage::Gate => vec![Command::RunGate {
                gate: Gate::PostTraffic,
                step: *step,
                weight: d.weight,
            }],
            BackStage::Baking { until } if *until > now => vec![Command::StartTimer {
                step: *step,
                at: *until,
            }],
            BackStage::Baking { .. } => vec![],
        },
        // Once due, a timer's input (`TimerFired`) reads or ends the bake.
        Phase::Baking { step, .. } => match d.bake_wake() {
            Some(at) if at > now => vec![Command::StartTimer { step: *step, at }],
            _ => vec![],
        },
        Phase::RollingBack { .. } => alias_writes(d, 0.0, AliasUpdate::Rollback),
        Phase::Promoted | Phase::RolledBack { .. } | Phase::FailedToStart { .. } => {
            vec![Command::ReleaseLock]
        }
    }
}

/// The writes that put `weight` on every member that moves and has not
/// taken this phase's write yet: one `UpdateAlias` a member.
fn alias_writes(d: &Deployment, weight: f64, update: AliasUpdate) -> Vec<Command> {
    (0..d.members())
        .filter(|m| d.moves(*m) && !d.landed.contains(m))
        .map(|member| {
            let (primary, additional) = d.routing_at(member, weight);
            Command::SetAlias {
                primary,
                additional,
                update,
                member,
            }
        })
        .collect()
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
    arm_moved_wake(state, &d, now, &mut commands);
    d.updated_at = now;
    (d, commands)
}

/// Whatever moved the wake (a bake's next read or end, a hook's deadline)
/// arms a timer for it, in this one place; the timer armed for the old wake
/// is then stale (`Input::TimerFired`), so no chain of timers is ever doubled.
fn arm_moved_wake(before: &Deployment, after: &Deployment, now: Time, commands: &mut Vec<Command>) {
    let Some((step, at)) = after.wake() else {
        return;
    };
    let armed = commands
        .iter()
        .any(|c| matches!(c, Command::StartTimer { at: a, .. } if *a == at));
    if at > now && !armed && before.wake() != Some((step, at)) {
        commands.push(Command::StartTimer { step, at });
    }
}

/// Moves to `phase` and issues what it needs.
fn enter(d: &mut Deployment, phase: Phase, now: Time, commands: &mut Vec<Command>) {
    d.phase = phase;
    d.claims = 0;
    d.landed.clear();
    commands.extend(pending(d, now));
}

/// Member `m`'s write of the current phase landed at `weight`, its alias
/// at `revision`. Returns whether every member's has: the phase is done.
fn landed(d: &mut Deployment, m: usize, weight: f64, revision: &Option<String>) -> bool {
    d.update_member(m, |state| {
        state.weight = weight;
        state.alias_revision = revision.clone();
        state.alias_routed_by_sluice = true;
    });
    if !d.landed.contains(&m) {
        d.landed.push(m);
    }
    d.all_landed()
}

/// A person changed member `m`'s alias in a group while Sluice was
/// writing the group's aliases: that alias is left as found, and every
/// other member rolled back (or, all done, the deployment ends).
fn group_member_changed_by_hand(
    d: &mut Deployment,
    m: usize,
    found: &str,
    revision: &Option<String>,
    reason: String,
    now: Time,
    commands: &mut Vec<Command>,
) {
    d.update_member(m, |state| {
        state.alias_revision = revision.clone();
        state.alias_routed_by_sluice = false;
    });
    let what = format!(
        "the alias {} was changed outside Sluice: it serves {found} (revision {}); left as found",
        d.target_name(m),
        revision.as_deref().unwrap_or("unknown")
    );
    let landed = if matches!(d.phase, Phase::RollingBack { .. }) {
        commands.push(record(
            now,
            EventKind::RollbackStarted,
            format!("{what}, during the rollback"),
        ));
        let mut landed = d.landed.clone();
        landed.push(m);
        landed
    } else {
        commands.push(record(
            now,
            EventKind::RollbackStarted,
            format!("{what}; the group's other members roll back"),
        ));
        vec![m]
    };
    d.phase = Phase::RollingBack { reason };
    d.claims = 0;
    d.landed = landed;
    if d.all_landed() {
        rolled_back(d, now, commands);
        return;
    }
    commands.extend(pending(d, now));
}

fn roll_back(d: &mut Deployment, reason: String, now: Time, commands: &mut Vec<Command>) {
    commands.push(record(now, EventKind::RollbackStarted, reason.clone()));
    enter(d, Phase::RollingBack { reason }, now, commands);
}

/// A check (`failed`) judged the new version bad at `step`: rolled back,
/// or, as the spec's policy may ask, stepped back gradually or frozen with
/// the split held (with no traffic on the new version, there is neither).
fn judged_bad(
    d: &mut Deployment,
    step: usize,
    failed: FailedCheck,
    reason: String,
    now: Time,
    commands: &mut Vec<Command>,
) {
    if d.spec.rollback == RollbackPolicy::Gradual && d.weight > 0.0 {
        step_back(d, reason, now, commands);
        return;
    }
    if d.spec.rollback != RollbackPolicy::Freeze || d.weight <= 0.0 {
        roll_back(d, reason, now, commands);
        return;
    }
    let secs = d.spec.frozen_for_seconds.unwrap_or(DEFAULT_FROZEN_SECS);
    let until = now + ChronoDuration::seconds(secs as i64);
    commands.push(record(
        now,
        EventKind::Frozen,
        format!(
            "{reason}; frozen at {}%: abort rolls back, resume or promote go on ({}), and without either it rolls back at {until}",
            d.weight,
            going_on(&failed)
        ),
    ));
    enter(
        d,
        Phase::FrozenOnFailure {
            step,
            failed,
            reason,
            until,
        },
        now,
        commands,
    );
}

/// The next step down from the weight the alias holds: the highest step
/// below it, or, past the first, 0% (the rollback's write, `RollingBack`).
fn step_back(d: &mut Deployment, reason: String, now: Time, commands: &mut Vec<Command>) {
    let below = (0..d.schedule.steps.len())
        .rev()
        .find(|s| d.step_weight(*s) < d.weight);
    let way: Vec<String> = below
        .map(|s| {
            (0..=s)
                .rev()
                .map(|s| format!("{}%", d.step_weight(s)))
                .collect()
        })
        .unwrap_or_default();
    if !matches!(d.phase, Phase::SteppingBack { .. }) {
        // No step is due on a schedule any more: no lateness to count.
        d.planned_at = None;
        commands.push(record(
            now,
            EventKind::RollbackStarted,
            format!(
                "{reason}; stepping back from {}%: {}0%, each lower weight judged by the PostTraffic gate on the old version",
                d.weight,
                way.iter().map(|w| format!("{w} → ")).collect::<String>()
            ),
        ));
    }
    match below {
        Some(step) => back_at(d, step, BackStage::Shifting, reason, now, commands),
        None => enter(d, Phase::RollingBack { reason }, now, commands),
    }
}

/// Enters `stage` of a gradual rollback's step `step`.
fn back_at(
    d: &mut Deployment,
    step: usize,
    stage: BackStage,
    reason: String,
    now: Time,
    commands: &mut Vec<Command>,
) {
    let phase = Phase::SteppingBack {
        step,
        stage,
        reason,
    };
    enter(d, phase, now, commands);
}

fn fail_to_start(d: &mut Deployment, reason: String, now: Time, commands: &mut Vec<Command>) {
    commands.push(record(now, EventKind::FailedToStart, reason.clone()));
    enter(d, Phase::FailedToStart { reason }, now, commands);
}

fn gate_name(gate: Gate) -> &'static str {
    match gate {
        Gate::PreTraffic => "PreTraffic",
        Gate::PostTraffic => "PostTraffic",
    }
}

/// The gate of a gate phase.
fn gate_of(phase: &Phase) -> Gate {
    match phase {
        Phase::PostTraffic { .. } => Gate::PostTraffic,
        _ => Gate::PreTraffic,
    }
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
    let name = gate_name(gate);
    d.hook_wait = None;
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
        judged_bad(
            d,
            step,
            FailedCheck::Gate(gate),
            format!("{name} gate failed {at}: {reason}"),
            now,
            commands,
        );
    }
    passed
}

/// After `step`'s PostTraffic gate: bake for the step's bake from its shift
/// (at least until its analysis has a whole period to judge), or go straight
/// on when waits are skipped or, with no analysis to read first, the gate
/// outlasted the bake.
fn after_step(d: &mut Deployment, step: usize, now: Time, commands: &mut Vec<Command>) {
    let bake = d.schedule.steps[step].bake;
    if d.skip_waits || (bake.is_zero() && d.spec.analysis.is_none()) {
        next_step(d, step, now, now, commands);
        return;
    }
    let shifted = d.shifted_at.unwrap_or(now);
    let until = shifted + ChronoDuration::from_std(bake).unwrap_or(ChronoDuration::MAX);
    let until = start_analysis(d, step, until, now, commands);
    if until > now {
        commands.push(record(
            now,
            EventKind::Baking,
            format!("watching {}% until {until}", d.step_weight(step)),
        ));
        bake_until(d, step, until, now, commands);
        return;
    }
    let ended = format!(
        "step {}'s bake of {} from its shift at {shifted} ended while its PostTraffic gate ran",
        step + 1,
        humantime::format_duration(bake)
    );
    if d.spec.analysis.is_none() {
        let line = format!("step {} goes on at once: {ended}", step + 2);
        commands.push(record(now, EventKind::Baking, line));
        next_step(d, step, until, now, commands);
        return;
    }
    let line = format!(
        "{ended}: its analysis judges what is published before step {} starts",
        step + 2
    );
    commands.push(record(now, EventKind::Baking, line));
    bake_until(d, step, until, now, commands);
}

/// Bakes `step` until `until`, its wake's timer armed; a wake already due
/// (a gate that outlasted the bake, a period published by then) is acted
/// on at once, since no timer would come for it.
fn bake_until(
    d: &mut Deployment,
    step: usize,
    until: Time,
    now: Time,
    commands: &mut Vec<Command>,
) {
    enter(d, Phase::Baking { step, until }, now, commands);
    if d.bake_wake().is_some_and(|at| at <= now) {
        bake_timer(d, step, until, None, now, commands);
    }
}

/// Starts the analysis of `step`'s bake, which ends at `until`; returns the
/// bake's end, later if the first whole period after the shift is not
/// readable by then (said in the timeline): a bake never ends on no data. The window starts
/// where the previous step's analysis stopped reading (the periods its bake
/// ended before they were published are judged here, not skipped), or at
/// the first shift's own period: the series are the new version's calls
/// through the alias, and there were none before its first shift (calls of
/// a smoke test by version number are another `Resource`), so every call
/// it counts was made at this step's weight or a lower one of the same
/// deployment, and a version bad from its first call is seen a period
/// sooner.
fn start_analysis(
    d: &mut Deployment,
    step: usize,
    until: Time,
    now: Time,
    commands: &mut Vec<Command>,
) -> Time {
    if d.spec.analysis.is_none() {
        return until;
    }
    let timing = d.metric_timing;
    let shifted = d.shifted_at.unwrap_or(now);
    let shift_period = timing.period_of(shifted);
    let from = d.analysis.as_ref().map_or(shift_period, |a| a.through);
    d.analysis = Some(AnalysisProgress::new(step, from));
    // The first period served at this weight throughout: a shift late in
    // its period leaves that period a few calls, too few to judge.
    let whole = if shifted == shift_period {
        shift_period
    } else {
        shift_period + timing.period()
    };
    let first = timing.readable_at(whole + timing.period());
    if first <= until {
        return until;
    }
    commands.push(record(
        now,
        EventKind::Baking,
        format!(
            "step {}'s bake extended to {} (from {}): its analysis needs {}, the first whole one at this weight, readable then",
            step + 1,
            first.format("%H:%M:%S"),
            until.format("%H:%M:%S"),
            timing.describe(whole, whole + timing.period())
        ),
    ));
    first
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
    // Any timer past the deadline aborts, as an operator's abort does:
    // rolled back, or ended before any shift. (The deadline's own timer
    // come early is sent again by the engine, unsaved.)
    if let (Input::TimerFired { .. }, Some(deadline)) = (input, d.abort_at())
        && deadline <= now
    {
        let reason = format!("it had not ended by its deadline, {deadline}");
        return self::step(d, &Input::Abort { reason }, now, commands);
    }
    match d.phase.clone() {
        Phase::Created | Phase::Queued { .. } => before_start(d, input, now, commands),
        Phase::Frozen { step, .. } => frozen(d, step, input, now, commands),
        Phase::FrozenOnFailure {
            step,
            failed,
            reason,
            until,
        } => frozen_on_failure(d, step, failed, &reason, until, input, now, commands),
        Phase::SteppingBack {
            step,
            stage,
            reason,
        } => stepping_back(d, step, stage, reason, input, now, commands),
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
                metric_timing,
                function_arn,
                group,
            },
        ) => {
            if group.len() != d.spec.group.len() {
                let reason = format!(
                    "prepared {} of the group's {} other members",
                    group.len(),
                    d.spec.group.len()
                );
                fail_to_start(d, reason, now, commands);
                return true;
            }
            d.metric_timing = metric_timing.unwrap_or_default();
            d.function_arn = function_arn.clone();
            d.group = group
                .iter()
                .map(|m| MemberState {
                    from_version: Some(m.from_version.clone()),
                    to_version: Some(m.to_version.clone()),
                    weight: 0.0,
                    alias_revision: m.revision.clone(),
                    alias_routed_by_sluice: true,
                    function_arn: m.function_arn.clone(),
                })
                .collect();
            prepared(d, from_version, to_version, revision, now, commands);
        }
        (Phase::Created, Input::PrepareFailed { reason }) => {
            fail_to_start(d, reason.clone(), now, commands);
        }
        (Phase::Created, Input::LockBusy { holder, member }) if *member < d.members() => {
            lock_busy(d, holder, *member, now, commands)
        }
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
    d.alias_routed_by_sluice = true;
    if !(0..d.members()).any(|m| d.moves(m)) {
        // Nothing to shift: Prepare found every alias whole on its new
        // version. No write either: one issued from a finished phase
        // could land after the lock has passed to the next deployment.
        d.weight = 100.0;
        let line = if d.members() == 1 {
            format!(
                "{}:{} already serves version {to_version}",
                d.spec.function, d.spec.alias
            )
        } else {
            format!(
                "every member already serves its new version: {}",
                d.versions_text(|m| m.to_version.clone().unwrap_or_default())
            )
        };
        commands.push(record(now, EventKind::Promoted, line));
        enter(d, Phase::Promoted, now, commands);
        return;
    }
    let line = d.versions_text(|m| {
        let (from, to) = (m.from_version.as_deref(), m.to_version.as_deref());
        match (from.unwrap_or_default(), to.unwrap_or_default()) {
            (from, to) if from == to => format!("already on {to}, left as it is"),
            (from, to) if d.members() == 1 => format!("version {from} → {to}"),
            (from, to) => format!("{from} → {to}"),
        }
    });
    commands.push(record(now, EventKind::Prepared, line));
    enter(d, Phase::PreTraffic { step: 0 }, now, commands);
}

fn lock_busy(
    d: &mut Deployment,
    holder: &str,
    member: usize,
    now: Time,
    commands: &mut Vec<Command>,
) {
    let target = d.target_name(member);
    match d.spec.on_busy {
        OnBusy::Refuse => {
            let reason = format!("{target} is being deployed by {holder}");
            fail_to_start(d, reason, now, commands);
        }
        OnBusy::Queue => {
            let line = if d.members() == 1 {
                format!("waiting for {holder}")
            } else {
                format!("waiting for {holder}, which holds {target}")
            };
            commands.push(record(now, EventKind::Queued, line));
            let holder = holder.to_owned();
            enter(d, Phase::Queued { holder, member }, now, commands);
        }
    }
}

/// Gating, shifting or baking: the steps go on; an alarm, a failed
/// analysis or an abort rolls back. While an asynchronous hook is waited
/// for, only its report (or its deadline) passes the gate; a failure (its
/// invocation refused) still fails it.
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
        ) if step == s && !(*passed && d.waiting_hook().is_some()) => {
            gate_ended(d, Gate::PreTraffic, *step, *passed, reason, now, commands)
        }
        (
            Phase::PreTraffic { step } | Phase::PostTraffic { step },
            Input::HookStarted {
                gate,
                step: s,
                token,
            },
            // Not over an invoked hook: a second gate run racing the first
            // must not invoke it again.
        ) if step == s
            && *gate == gate_of(&d.phase)
            && d.waiting_hook().is_none_or(|w| !w.invoked) =>
        {
            hook_started(d, *gate, *step, token, now, commands);
        }
        (
            Phase::PreTraffic { step } | Phase::PostTraffic { step },
            Input::HookInvoked {
                gate,
                step: s,
                token_sha256,
            },
        ) if step == s => return hook_invoked(d, *gate, token_sha256, now, commands),
        (
            Phase::PreTraffic { .. } | Phase::PostTraffic { .. },
            Input::HookReported {
                token,
                passed,
                reason,
            },
        ) => {
            return hook_reported(d, token, *passed, reason, now, commands);
        }
        (Phase::PreTraffic { .. } | Phase::PostTraffic { .. }, Input::HookHeartbeat { token }) => {
            return hook_heartbeat(d, token, now, commands);
        }
        (
            Phase::PreTraffic { step } | Phase::PostTraffic { step },
            Input::TimerFired { step: s, at },
        ) if step == s => {
            return hook_timer(d, *at, now, commands);
        }
        (
            Phase::Shifting { step },
            Input::AliasUpdated {
                update: AliasUpdate::Step(s),
                revision,
                member,
            },
        ) if step == s && *member < d.members() && !d.landed.contains(member) => {
            if landed(d, *member, d.step_weight(*step), revision) {
                shifted(d, *step, now, commands);
            }
        }
        (
            Phase::PostTraffic { step },
            Input::GateResult {
                gate: Gate::PostTraffic,
                step: s,
                passed,
                reason,
            },
        ) if step == s && !(*passed && d.waiting_hook().is_some()) => {
            gate_ended(d, Gate::PostTraffic, *step, *passed, reason, now, commands)
        }
        (Phase::Baking { step, until }, Input::TimerFired { step: s, at }) if step == s => {
            return bake_timer(d, *step, *until, *at, now, commands);
        }
        (
            Phase::Baking { step, until },
            Input::Measured {
                step: s,
                measurement,
                group,
            },
        ) if step == s => {
            return measured(d, *step, *until, measurement, group, now, commands);
        }
        (Phase::Baking { step, until }, Input::MeasureFailed { step: s, reason }) if step == s => {
            return measure_failed(d, *step, *until, reason, now, commands);
        }
        (
            Phase::Shifting { step },
            Input::AliasWriteFailed {
                update: AliasUpdate::Step(s),
                member,
                reason,
            },
        ) if step == s && *member < d.members() && !d.landed.contains(member) => {
            let reason = format!(
                "the shift of {} to {}% failed: {reason}",
                d.target_name(*member),
                d.step_weight(*step)
            );
            roll_back(d, reason, now, commands);
        }
        (
            Phase::Shifting { step },
            Input::AliasChangedByHand {
                found,
                revision,
                member,
            },
        ) if *member < d.members() && !d.landed.contains(member) => {
            if d.members() > 1 {
                let reason = format!(
                    "the alias {} was changed outside Sluice: it serves {found}",
                    d.target_name(*member)
                );
                group_member_changed_by_hand(d, *member, found, revision, reason, now, commands);
            } else {
                changed_by_hand(d, *step, found, revision, now, commands);
            }
        }
        (_, Input::AlarmRaised { alarm }) => {
            roll_back(d, format!("alarm {alarm} is in ALARM"), now, commands);
        }
        (_, Input::Abort { reason }) => {
            roll_back(d, format!("aborted: {reason}"), now, commands);
        }
        _ => return pause_resume_or_promote(d, input, now, commands),
    }
    true
}

/// A gate's verdict: the shift after a passed PreTraffic gate, the bake
/// (or the promotion) after a passed PostTraffic gate, else the rollback.
fn gate_ended(
    d: &mut Deployment,
    gate: Gate,
    step: usize,
    passed: bool,
    reason: &str,
    now: Time,
    commands: &mut Vec<Command>,
) {
    if !gate_recorded(d, gate, step, passed, reason, now, commands) {
        return;
    }
    match gate {
        Gate::PreTraffic => enter(d, Phase::Shifting { step }, now, commands),
        Gate::PostTraffic => step_passed(d, step, now, commands),
    }
}

/// The gate's asynchronous hook is to be invoked with `token`: its digest
/// is saved first, so a report that comes at once finds it.
fn hook_started(
    d: &mut Deployment,
    gate: Gate,
    step: usize,
    token: &str,
    now: Time,
    commands: &mut Vec<Command>,
) {
    let timeout = d
        .spec
        .hook_timeout_seconds
        .unwrap_or(DEFAULT_ASYNC_HOOK_SECS);
    let deadline = now + ChronoDuration::seconds(timeout as i64);
    d.hook_wait = Some(HookWait {
        gate,
        step,
        token_sha256: token_digest(token),
        started_at: now,
        deadline,
        invoked: false,
    });
    commands.push(Command::InvokeHook {
        gate,
        step,
        weight: d.step_weight(step),
        token: token.to_owned(),
        deadline,
    });
}

/// The waiting hook, if `token_sha256` is its token's and it is still due.
fn matching_hook<'a>(
    d: &'a mut Deployment,
    token_sha256: &str,
    now: Time,
) -> Option<&'a mut HookWait> {
    let (gate, step) = (gate_of(&d.phase), d.waiting_hook()?.step);
    d.hook_wait.as_mut().filter(|w| {
        w.gate == gate && w.step == step && w.token_sha256 == token_sha256 && now <= w.deadline
    })
}

fn hook_invoked(
    d: &mut Deployment,
    gate: Gate,
    token_sha256: &str,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let hook = d.hook_name(gate).to_owned();
    let Some(w) = matching_hook(d, token_sha256, now).filter(|w| !w.invoked && w.gate == gate)
    else {
        return false;
    };
    w.invoked = true;
    let (step, deadline) = (w.step, w.deadline);
    commands.push(record(
        now,
        EventKind::HookWaiting,
        format!(
            "{} at step {}: {hook} invoked asynchronously; it reports by {deadline}",
            gate_name(gate),
            step + 1
        ),
    ));
    true
}

/// A report by callback token: the gate's verdict, if the token is the
/// waiting hook's and its deadline has not passed; else nothing changes.
fn hook_reported(
    d: &mut Deployment,
    token: &str,
    passed: bool,
    reason: &str,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let Some(w) = matching_hook(d, &token_digest(token), now) else {
        return false;
    };
    let (gate, step) = (w.gate, w.step);
    gate_ended(d, gate, step, passed, reason, now, commands);
    true
}

/// A heartbeat: the deadline moves to a timeout from now, within the hour
/// the hook may take in all.
fn hook_heartbeat(d: &mut Deployment, token: &str, now: Time, commands: &mut Vec<Command>) -> bool {
    let timeout = d
        .spec
        .hook_timeout_seconds
        .unwrap_or(DEFAULT_ASYNC_HOOK_SECS);
    let Some(w) = matching_hook(d, &token_digest(token), now) else {
        return false;
    };
    let latest = w.started_at + ChronoDuration::seconds(MAX_ASYNC_HOOK_SECS as i64);
    let deadline = (now + ChronoDuration::seconds(timeout as i64)).min(latest);
    if deadline <= w.deadline {
        return false;
    }
    w.deadline = deadline;
    let step = w.step;
    commands.push(record(
        now,
        EventKind::HookWaiting,
        format!(
            "step {}: the hook is at work; it reports by {deadline}",
            step + 1
        ),
    ));
    true
}

/// A timer for an asynchronous hook's deadline (`fired_for` its own, none
/// for the sweep's): at the deadline the gate fails; the deadline's own
/// timer come early (SQS's longest delay is shorter) waits on; one for a
/// deadline a heartbeat has moved is stale.
fn hook_timer(
    d: &mut Deployment,
    fired_for: Option<Time>,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let Some(w) = d.waiting_hook().filter(|w| w.invoked).cloned() else {
        return false;
    };
    if now < w.deadline {
        if fired_for != Some(w.deadline) {
            return false;
        }
        commands.push(Command::StartTimer {
            step: w.step,
            at: w.deadline,
        });
        return true;
    }
    let reason = format!(
        "{} neither reported nor heartbeat by its deadline, {}",
        d.hook_name(w.gate),
        w.deadline
    );
    gate_ended(d, w.gate, w.step, false, &reason, now, commands);
    true
}

/// Every member's alias took `step`'s weight.
fn shifted(d: &mut Deployment, step: usize, now: Time, commands: &mut Vec<Command>) {
    d.weight = d.step_weight(step);
    d.shifted_at = Some(now);
    if step == 0 {
        // The schedule runs from the first shift.
        d.planned_at = Some(now);
    }
    commands.push(record(now, EventKind::Shifted, shifted_line(d, "")));
    enter(d, Phase::PostTraffic { step }, now, commands);
}

/// `10% on version 5`, or on each member's new version in a group.
fn shifted_line(d: &Deployment, how: &str) -> String {
    if d.members() == 1 {
        return format!(
            "{}% on version {}{how}",
            d.weight,
            d.to_version.clone().unwrap_or_default()
        );
    }
    format!(
        "{}% on every member's new version{how}: {}",
        d.weight,
        d.versions_text(|m| m.to_version.clone().unwrap_or_default())
    )
}

/// `step`'s PostTraffic gate passed: baking, or after the last step
/// promoted (once watched, with `watch_after_promotion_seconds`).
fn step_passed(d: &mut Deployment, step: usize, now: Time, commands: &mut Vec<Command>) {
    if step != d.last_step() {
        after_step(d, step, now, commands);
        return;
    }
    let watch = d
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.watch_after_promotion_seconds);
    match watch {
        Some(secs) if !d.skip_waits => {
            let shifted = d.shifted_at.unwrap_or(now);
            let until = shifted + ChronoDuration::seconds(secs as i64);
            let until = start_analysis(d, step, until, now, commands);
            commands.push(record(
                now,
                EventKind::Baking,
                format!("watching 100% until {until} before the promotion"),
            ));
            bake_until(d, step, until, now, commands);
        }
        _ => promoted(d, now, commands),
    }
}

fn promoted(d: &mut Deployment, now: Time, commands: &mut Vec<Command>) {
    let line = if d.members() == 1 {
        format!(
            "version {} serves 100%",
            d.to_version.clone().unwrap_or_default()
        )
    } else {
        format!(
            "every member's new version serves 100%: {}",
            d.versions_text(|m| m.to_version.clone().unwrap_or_default())
        )
    };
    commands.push(record(now, EventKind::Promoted, line));
    enter(d, Phase::Promoted, now, commands);
}

/// The bake of `step` is over (or skipped), due at `planned`: the next
/// step, or the promotion after the last step's watch.
fn bake_over(
    d: &mut Deployment,
    step: usize,
    planned: Time,
    now: Time,
    commands: &mut Vec<Command>,
) {
    if step == d.last_step() {
        promoted(d, now, commands);
    } else {
        next_step(d, step, planned, now, commands);
    }
}

/// A timer for `step`'s bake (`fired_for` the wake it was armed for; none
/// for the sweep's, or when called on entering or after a read): reads the
/// analysis's newly published periods, or ends the bake, or, the wake's own
/// timer come early, waits on; false when it changes nothing (a stale timer).
fn bake_timer(
    d: &mut Deployment,
    step: usize,
    until: Time,
    fired_for: Option<Time>,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let timing = d.metric_timing;
    if let Some(a) = d.analysis_of(step)
        && a.read_due(&timing, now)
    {
        commands.push(Command::Measure {
            step,
            from: a.from,
            to: timing.readable_through(now),
        });
        return true;
    }
    match d.bake_wake() {
        None => false,
        Some(at) if at > now => {
            if fired_for != Some(at) {
                return false;
            }
            // Early: SQS delays whole seconds, 15 minutes at most.
            commands.push(Command::StartTimer { step, at });
            true
        }
        Some(_) => bake_ended(d, step, until, now, commands),
    }
}

/// What the analysis of a bake that has ended concludes.
enum Conclusion {
    GoOn(String),
    RollBack(String),
    WaitUntil(Time, String),
}

fn conclude(d: &Deployment, a: &AnalysisProgress, until: Time, now: Time) -> Conclusion {
    let settings = d.spec.analysis.clone().unwrap_or_default();
    let step = a.step + 1;
    let why = match (&a.verdict, &a.failed) {
        (Some(Verdict::Pass(why)), _) => {
            return Conclusion::GoOn(format!("analysis at step {step} passed: {why}"));
        }
        (_, Some(failed)) => format!("CloudWatch could not be read: {failed}"),
        (Some(verdict), None) => verdict.detail().to_owned(),
        (None, None) => "no period after the shift was readable".to_owned(),
    };
    match settings.on_inconclusive {
        OnInconclusive::Pass => Conclusion::GoOn(format!(
            "analysis at step {step} inconclusive, passed as on_inconclusive says: {why}"
        )),
        OnInconclusive::Fail => Conclusion::RollBack(format!("inconclusive: {why}")),
        OnInconclusive::Wait => match a.wait_until {
            None if settings.max_wait_seconds > 0 => Conclusion::WaitUntil(
                until + ChronoDuration::seconds(settings.max_wait_seconds as i64),
                why,
            ),
            Some(wait) if wait > now => Conclusion::WaitUntil(wait, why),
            _ => Conclusion::RollBack(format!(
                "still inconclusive {} s after the bake: {why}",
                settings.max_wait_seconds
            )),
        },
    }
}

/// CloudWatch's numbers for `step`, of every member: judged at once; a
/// failure rolls back.
#[allow(clippy::too_many_arguments)]
fn measured(
    d: &mut Deployment,
    step: usize,
    until: Time,
    m: &Measurement,
    group: &[Measurement],
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let timing = d.metric_timing;
    let settings = d.spec.analysis.clone().unwrap_or_default();
    let names: Vec<String> = (0..d.members()).map(|m| d.target_name(m)).collect();
    let d_moves: Vec<bool> = (0..d.members()).map(|m| d.moves(m)).collect();
    let Some(a) = d.analysis.as_mut().filter(|a| a.step == step) else {
        return false;
    };
    // A read of other periods, or of no more than judged already, or not
    // of every member: stale.
    let stale = |g: &Measurement| g.from != m.from || g.to != m.to;
    if m.from != a.from
        || m.to <= a.through
        || names.len() != group.len() + 1
        || group.iter().any(stale)
    {
        return false;
    }
    let before: Vec<Option<(Counts, Counts)>> = std::iter::once(a.counted.as_deref().copied())
        .chain((0..group.len()).map(|i| a.group_counted.get(i).copied()))
        .collect();
    let verdicts = std::iter::once(m)
        .chain(group)
        .zip(&before)
        .map(|(m, before)| {
            let verdict = judge(&settings, m, &timing);
            // The newly published periods alone too: a version that goes bad
            // late in a long bake is not hidden by its good minutes before.
            if let (false, Some((new, old))) = (matches!(verdict, Verdict::Fail(_)), before) {
                let recent = Measurement {
                    from: a.through,
                    to: m.to,
                    new: m.new.since(new),
                    old: m.old.since(old),
                };
                if let fail @ Verdict::Fail(_) = judge(&settings, &recent, &timing) {
                    return fail;
                }
            }
            verdict
        });
    // A member left on its version has nothing new to judge.
    let moving: Vec<(Verdict, String)> = verdicts
        .zip(names)
        .enumerate()
        .filter(|(m, _)| d_moves[*m])
        .map(|(_, judged)| judged)
        .collect();
    let verdict = group_verdict(moving);
    a.counted = Some(Box::new((m.new, m.old)));
    a.group_counted = group.iter().map(|g| (g.new, g.old)).collect();
    a.through = m.to;
    a.verdict = Some(verdict.clone());
    a.failed = None;
    a.retry_at = None;
    if let Verdict::Fail(why) = verdict {
        let reason = format!("analysis failed at {}%: {why}", d.weight);
        let failed = FailedCheck::Analysis { bake_ends: until };
        judged_bad(d, step, failed, reason, now, commands);
        return true;
    }
    bake_timer(d, step, until, None, now, commands);
    true
}

/// A group's verdict from its moving members' (each with its alias): the
/// first failure, else the first without a verdict, else a pass; each
/// named by its member's alias in a group.
fn group_verdict(verdicts: Vec<(Verdict, String)>) -> Verdict {
    if let [(only, _)] = verdicts.as_slice() {
        return only.clone();
    }
    let named = |(v, name): &(Verdict, String)| format!("{name}: {}", v.detail());
    let first = |pick: fn(&Verdict) -> bool| verdicts.iter().find(|(v, _)| pick(v));
    if let Some(judged) = first(|v| matches!(v, Verdict::Fail(_))) {
        return Verdict::Fail(named(judged));
    }
    if let Some(judged) = first(|v| matches!(v, Verdict::Inconclusive(_))) {
        return Verdict::Inconclusive(named(judged));
    }
    Verdict::Pass(verdicts.iter().map(named).collect::<Vec<_>>().join("; "))
}

/// CloudWatch could not be read for `step`: read again a period later; the
/// bake's end applies `on_inconclusive` if it never can.
fn measure_failed(
    d: &mut Deployment,
    step: usize,
    until: Time,
    reason: &str,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    let retry = now + d.metric_timing.period();
    let Some(a) = d.analysis.as_mut().filter(|a| a.step == step) else {
        return false;
    };
    a.failed = Some(reason.to_owned());
    a.retry_at = Some(retry);
    commands.push(record(
        now,
        EventKind::Analysed,
        format!(
            "step {}: CloudWatch could not be read ({reason}); read again at {retry}",
            step + 1
        ),
    ));
    bake_timer(d, step, until, None, now, commands);
    true
}

/// `step`'s bake (and any wait for data) has ended: the analysis
/// concludes, then the deployment goes on; false when it changes nothing (paused).
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
    let mut planned = until;
    if let Some(a) = d.analysis_of(step).cloned() {
        match conclude(d, &a, until, now) {
            Conclusion::GoOn(line) => {
                commands.push(record(now, EventKind::Analysed, line));
                planned = a.wait_until.map_or(until, |w| w.min(now).max(until));
            }
            Conclusion::RollBack(why) => {
                let reason = format!("analysis failed at {}%: {why}", d.weight);
                let failed = FailedCheck::Analysis { bake_ends: until };
                judged_bad(d, step, failed, reason, now, commands);
                return true;
            }
            Conclusion::WaitUntil(wait, why) => {
                if a.wait_until.is_none() {
                    commands.push(record(
                        now,
                        EventKind::Analysed,
                        format!(
                            "step {}: no verdict at the bake's end ({why}); watching for data until {wait}",
                            step + 1
                        ),
                    ));
                }
                if let Some(a) = d.analysis.as_mut() {
                    a.wait_until = Some(wait);
                }
                commands.extend(pending(d, now));
                return true;
            }
        }
    }
    let late = now - planned;
    if late > ChronoDuration::seconds(1) {
        commands.push(record(
            now,
            EventKind::Late,
            format!(
                "step {} starts {}s after its bake ended at {planned}",
                step + 2,
                late.num_seconds()
            ),
        ));
    }
    bake_over(d, step, planned, now, commands);
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
    d.alias_routed_by_sluice = false;
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

/// An operator's resume or promote of a frozen deployment: unpaused, and a
/// promote's remaining waits skipped. Returns the timeline line's kind.
fn goes_on(d: &mut Deployment, input: &Input) -> EventKind {
    let promote = matches!(input, Input::Promote);
    d.paused = false;
    d.skip_waits |= promote;
    if promote {
        EventKind::PromoteRequested
    } else {
        EventKind::Resumed
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
            let kind = goes_on(d, input);
            commands.push(record(
                now,
                kind,
                format!("resumed from the alias as found, at step {}", step + 1),
            ));
            enter(d, Phase::Shifting { step }, now, commands);
        }
        Input::Abort { reason } => roll_back(d, format!("aborted: {reason}"), now, commands),
        _ => return false,
    }
    true
}

/// What going on from a freeze does about its failed check.
fn going_on(failed: &FailedCheck) -> String {
    match failed {
        FailedCheck::Gate(gate) => format!("the {} gate run again", gate_name(*gate)),
        FailedCheck::Analysis { .. } => {
            "the step's analysis waived, the rest of its bake watched".into()
        }
    }
}

/// Frozen on a failure, the split held: an operator's abort rolls back; a
/// resume or a promote goes on from the failed check (`going_on`), the
/// schedule counted from then; an alarm rolls back, and so does the end of
/// the wait.
#[allow(clippy::too_many_arguments)]
fn frozen_on_failure(
    d: &mut Deployment,
    step: usize,
    failed: FailedCheck,
    reason: &str,
    until: Time,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match input {
        Input::Resume | Input::Promote => {
            let kind = goes_on(d, input);
            let how = if kind == EventKind::PromoteRequested {
                "remaining waits skipped; gates still run"
            } else {
                "on schedule from now"
            };
            commands.push(record(
                now,
                kind,
                format!(
                    "going on from step {} over \"{reason}\": {}; {how}",
                    step + 1,
                    going_on(&failed)
                ),
            ));
            match failed {
                FailedCheck::Gate(Gate::PreTraffic) => {
                    // Its step is due now, not when the freeze began.
                    d.planned_at = Some(now);
                    enter(d, Phase::PreTraffic { step }, now, commands);
                }
                FailedCheck::Gate(Gate::PostTraffic) => {
                    // The bake after it watches the weight from now.
                    d.shifted_at = Some(now);
                    enter(d, Phase::PostTraffic { step }, now, commands);
                }
                FailedCheck::Analysis { bake_ends } => {
                    d.analysis = None;
                    if d.skip_waits || bake_ends <= now {
                        bake_over(d, step, now, now, commands);
                    } else {
                        bake_until(d, step, bake_ends, now, commands);
                    }
                }
            }
        }
        Input::Abort { reason } => roll_back(d, format!("aborted: {reason}"), now, commands),
        Input::AlarmRaised { alarm } => {
            roll_back(d, format!("alarm {alarm} is in ALARM"), now, commands);
        }
        Input::TimerFired { at, .. } if now >= until || *at == Some(until) => {
            if now < until {
                // The wait's own timer come early (SQS delays 15 minutes at most).
                commands.push(Command::StartTimer { step, at: until });
            } else {
                roll_back(
                    d,
                    format!("frozen with no operator's word by {until}: {reason}"),
                    now,
                    commands,
                );
            }
        }
        _ => return false,
    }
    true
}

/// A gradual rollback at `step`: its write lands, the PostTraffic gate
/// judges the old version at the lower weight, the step's bake passes, and
/// the next step down follows; a failed gate, an alarm, an abort or the
/// deadline go to 0% at once, and a person's change of the alias is left
/// as found.
fn stepping_back(
    d: &mut Deployment,
    step: usize,
    stage: BackStage,
    reason: String,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match (&stage, input) {
        (
            BackStage::Shifting,
            Input::AliasUpdated {
                update: AliasUpdate::StepBack(s),
                revision,
                member,
            },
        ) if *s == step && *member < d.members() && !d.landed.contains(member) => {
            if !landed(d, *member, d.step_weight(step), revision) {
                return true;
            }
            d.weight = d.step_weight(step);
            d.shifted_at = Some(now);
            commands.push(record(
                now,
                EventKind::Shifted,
                shifted_line(d, ", stepping back"),
            ));
            back_at(d, step, BackStage::Gate, reason, now, commands);
        }
        (
            BackStage::Shifting,
            Input::AliasWriteFailed {
                update: AliasUpdate::StepBack(s),
                member,
                reason: why,
            },
        ) if *s == step && *member < d.members() && !d.landed.contains(member) => {
            let reason = format!(
                "{reason}; then the step back of {} to {}% failed: {why}",
                d.target_name(*member),
                d.step_weight(step)
            );
            roll_back(d, reason, now, commands);
        }
        (
            BackStage::Shifting,
            Input::AliasChangedByHand {
                found,
                revision,
                member,
            },
        ) if *member < d.members() && !d.landed.contains(member) => {
            if d.members() > 1 {
                group_member_changed_by_hand(d, *member, found, revision, reason, now, commands);
                return true;
            }
            return rolling_back(d, reason, input, now, commands);
        }
        (
            BackStage::Gate,
            Input::GateResult {
                gate: Gate::PostTraffic,
                step: s,
                passed,
                reason: why,
            },
        ) if *s == step => {
            let line = format!(
                "PostTraffic on the old version at {}%, stepping back: {why}",
                d.weight
            );
            if !passed {
                commands.push(record(now, EventKind::GateFailed, line));
                let reason = format!(
                    "{reason}; then the PostTraffic gate failed at {}% on the way down: {why}",
                    d.weight
                );
                roll_back(d, reason, now, commands);
                return true;
            }
            commands.push(record(now, EventKind::GatePassed, line));
            let bake = d.schedule.steps[step].bake;
            let until = now + ChronoDuration::from_std(bake).unwrap_or(ChronoDuration::MAX);
            // A promote's skipped waits were for the way up.
            if until <= now {
                step_back(d, reason, now, commands);
            } else {
                commands.push(record(
                    now,
                    EventKind::Baking,
                    format!("watching {}% until {until}, stepping back", d.weight),
                ));
                back_at(d, step, BackStage::Baking { until }, reason, now, commands);
            }
        }
        (BackStage::Baking { until }, Input::TimerFired { at, .. })
            if now >= *until || *at == Some(*until) =>
        {
            if now < *until {
                // The bake's own timer come early (SQS delays 15 minutes at most).
                commands.push(Command::StartTimer { step, at: *until });
            } else {
                step_back(d, reason, now, commands);
            }
        }
        (_, Input::AlarmRaised { alarm }) => {
            let reason = format!("{reason}; then alarm {alarm} is in ALARM on the way down");
            roll_back(d, reason, now, commands);
        }
        (_, Input::Abort { reason: why }) => {
            roll_back(
                d,
                format!("{reason}; aborted on the way down: {why}"),
                now,
                commands,
            );
        }
        _ => return false,
    }
    true
}

/// Rolling back: only the rollback's writes (or someone else's) end it,
/// once every member's has landed.
fn rolling_back(
    d: &mut Deployment,
    reason: String,
    input: &Input,
    now: Time,
    commands: &mut Vec<Command>,
) -> bool {
    match input {
        Input::AliasChangedByHand {
            found,
            revision,
            member,
        } if d.members() > 1 => {
            if d.landed.contains(member) {
                return false;
            }
            group_member_changed_by_hand(d, *member, found, revision, reason, now, commands);
        }
        Input::AliasChangedByHand {
            found, revision, ..
        } => {
            d.alias_revision = revision.clone();
            d.alias_routed_by_sluice = false;
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
            member,
        } if *member < d.members() && !d.landed.contains(member) => {
            if landed(d, *member, 0.0, revision) {
                rolled_back(d, now, commands);
            }
        }
        // Refused for good (the alias gone, the write denied): nothing
        // Sluice can write will put it back, and the other members' rollbacks
        // must not wait on it. A person has to; the timeline says so.
        Input::AliasWriteFailed {
            update: AliasUpdate::Rollback,
            member,
            reason: why,
        } if *member < d.members() && !d.landed.contains(member) => {
            d.update_member(*member, |state| state.alias_routed_by_sluice = false);
            d.landed.push(*member);
            commands.push(record(
                now,
                EventKind::RollbackStarted,
                format!(
                    "the rollback of {} was refused ({why}): left for a person to put back",
                    d.target_name(*member)
                ),
            ));
            if d.all_landed() {
                rolled_back(d, now, commands);
            }
        }
        _ => return false,
    }
    true
}

/// Every member's rollback write has landed (or was left to a person).
fn rolled_back(d: &mut Deployment, now: Time, commands: &mut Vec<Command>) {
    let Phase::RollingBack { reason } = d.phase.clone() else {
        return;
    };
    let left: Vec<String> = (0..d.members())
        .filter(|m| d.moves(*m) && !d.member(*m).alias_routed_by_sluice)
        .map(|m| d.target_name(m))
        .collect();
    let line = if d.members() == 1 {
        format!(
            "version {} serves 100% again",
            d.from_version.clone().unwrap_or_default()
        )
    } else if left.is_empty() {
        format!(
            "every member serves its old version again ({})",
            d.versions_text(|m| m.from_version.clone().unwrap_or_default())
        )
    } else {
        format!(
            "the members Sluice still holds serve their old versions again ({}); {} left as found",
            d.versions_text(|m| m.from_version.clone().unwrap_or_default()),
            left.join(", ")
        )
    };
    d.weight = 0.0;
    commands.push(record(now, EventKind::RolledBack, line));
    enter(d, Phase::RolledBack { reason }, now, commands);
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
            // Only a bake waits on the pause; anything else in flight carries
            // on as it was. A bake that ended while paused ends now.
            if let Phase::Baking { step, until } = phase {
                bake_timer(d, step, until.max(now), None, now, commands);
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
                bake_over(d, step, now, now, commands);
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests;
