//! What Sluice tells the people watching, derived from the table's stream
//! (a state item's image before and after each save, so every change is
//! seen once, whichever worker made it):
//! - a notice for each deployment start, promotion, rollback and failure
//!   to start, and for each execution's end, published to the SNS topic
//!   and the EventBridge bus (`Notice`: its JSON is the events' `detail`);
//! - a commit status for each stage, and for each deploy action, of a push
//!   from GitHub (`stage_status`, `deployment_status`).
//!
//! The orchestrator derives these as it reads the stream and hands them to
//! the reporter's queue: a slow or failing GitHub, SNS or EventBridge never
//! holds a stream batch, a rollout or a pipeline back.

use crate::domain::analysis::Counts;
use crate::domain::deployment::{Deployment, Phase, Time};
use crate::domain::execution::{ActionState, Execution, Status};
use crate::domain::limits::shortened_to;
use crate::domain::pipeline::Push;
use crate::orchestrator::deployment_origin;
use serde::{Deserialize, Serialize};

/// One message on the reporter's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// Published to the topic and the event bus.
    Notice(Box<Notice>),
    /// A commit status of an execution's push to post: the one of its state
    /// when posted, so a late or repeated message never posts a stale one.
    CommitStatus(StatusReport),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub execution: String,
    pub subject: StatusSubject,
    /// What the change made the status, posted first: every step a
    /// rollout takes is shown, however late it is read. Then the status as
    /// it is now is posted if it differs, so the last post is the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<StatusLine>,
    /// Posts tried before this one (GitHub down or limiting).
    #[serde(default)]
    pub attempt: u32,
}

/// Which commit status: a stage's, or a deploy action's deployment's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StatusSubject {
    Stage(usize),
    Deployment(String),
}

/// A fact about a deployment or an execution, as the topic and the event
/// bus receive it. The README documents this schema: it is what users'
/// rules and filters match, so a field is never renamed or removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    DeploymentStarted(DeploymentNotice),
    DeploymentPromoted(DeploymentNotice),
    DeploymentRolledBack(DeploymentNotice),
    DeploymentFailedToStart(DeploymentNotice),
    /// A failure froze it, its split held for an operator (`rollback: freeze`).
    DeploymentFrozen(DeploymentNotice),
    ExecutionEnded(ExecutionNotice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentNotice {
    pub deployment_id: String,
    pub function: String,
    pub alias: String,
    pub config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// Percent on the new version when it happened.
    pub weight: f64,
    /// Why it rolled back or could not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last analysis verdict: values measured next to their thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<String>,
    /// The numbers that verdict judged, new and old version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
    /// The pipeline execution whose deploy action started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// A release group's other members, each from and to its versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<NoticeMember>,
    pub at: Time,
}

/// One more alias of a release group, as a notice names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeMember {
    pub function: String,
    pub alias: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
}

impl NoticeMember {
    fn versions(&self) -> String {
        versions(self.from_version.as_deref(), self.to_version.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub new: Counts,
    pub old: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionNotice {
    pub execution_id: String,
    pub pipeline: String,
    pub repository: String,
    /// The branch or tag pushed.
    pub reference: String,
    pub sha: String,
    /// `succeeded`, `failed`, `stopped` or `superseded`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stage it ended in.
    pub stage: String,
    pub at: Time,
}

impl Notice {
    /// The EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Notice::DeploymentStarted(_) => "Sluice Deployment Started",
            Notice::DeploymentPromoted(_) => "Sluice Deployment Promoted",
            Notice::DeploymentRolledBack(_) => "Sluice Deployment Rolled Back",
            Notice::DeploymentFailedToStart(_) => "Sluice Deployment Failed To Start",
            Notice::DeploymentFrozen(_) => "Sluice Deployment Frozen",
            Notice::ExecutionEnded(_) => "Sluice Execution Ended",
        }
    }

    /// The `event` field's value: what a subscription's filter policy matches.
    pub fn event(&self) -> &'static str {
        match self {
            Notice::DeploymentStarted(_) => "deployment_started",
            Notice::DeploymentPromoted(_) => "deployment_promoted",
            Notice::DeploymentRolledBack(_) => "deployment_rolled_back",
            Notice::DeploymentFailedToStart(_) => "deployment_failed_to_start",
            Notice::DeploymentFrozen(_) => "deployment_frozen",
            Notice::ExecutionEnded(_) => "execution_ended",
        }
    }

    /// The deployment or execution it is about.
    pub fn subject_id(&self) -> &str {
        match self {
            Notice::DeploymentStarted(d)
            | Notice::DeploymentPromoted(d)
            | Notice::DeploymentRolledBack(d)
            | Notice::DeploymentFailedToStart(d)
            | Notice::DeploymentFrozen(d) => &d.deployment_id,
            Notice::ExecutionEnded(e) => &e.execution_id,
        }
    }

    /// An email's subject line: SNS takes under 100 ASCII characters, with
    /// no line break
    /// (<https://docs.aws.amazon.com/sns/latest/api/API_Publish.html>).
    pub fn subject(&self) -> String {
        let line = match self {
            Notice::DeploymentStarted(d) => d.headline("started"),
            Notice::DeploymentPromoted(d) => d.headline("promoted"),
            Notice::DeploymentRolledBack(d) => d.headline("rolled back"),
            Notice::DeploymentFailedToStart(d) => d.headline("failed to start"),
            Notice::DeploymentFrozen(d) => d.headline("frozen"),
            Notice::ExecutionEnded(e) => format!(
                "{} {} at {}: {}",
                e.pipeline,
                e.execution_id,
                short_sha(&e.sha),
                e.status
            ),
        };
        let ascii: String = format!("Sluice: {line}")
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        ascii.chars().take(99).collect()
    }

    /// The message's text, for people (an email); the JSON is the events'.
    pub fn text(&self) -> String {
        let mut lines = Vec::new();
        match self {
            Notice::DeploymentStarted(d)
            | Notice::DeploymentPromoted(d)
            | Notice::DeploymentRolledBack(d)
            | Notice::DeploymentFailedToStart(d)
            | Notice::DeploymentFrozen(d) => {
                lines.push(format!(
                    "Deployment {} of {}:{} ({}): {}.",
                    d.deployment_id,
                    d.function,
                    d.alias,
                    d.versions(),
                    self.event()
                        .trim_start_matches("deployment_")
                        .replace('_', " ")
                ));
                if !d.group.is_empty() {
                    let members: Vec<String> = d
                        .group
                        .iter()
                        .map(|m| format!("{}:{} ({})", m.function, m.alias, m.versions()))
                        .collect();
                    lines.push(format!(
                        "With its release group, in lockstep: {}.",
                        members.join(", ")
                    ));
                }
                lines.push(format!(
                    "Config: {}; {}% on the new version{}.",
                    d.config,
                    d.weight,
                    if d.group.is_empty() {
                        ""
                    } else {
                        " of every member"
                    }
                ));
                if let Some(reason) = &d.reason {
                    lines.push(format!("Reason: {reason}"));
                }
                if let Some(analysis) = &d.analysis {
                    lines.push(format!("Analysis: {analysis}"));
                }
                if let Some(execution) = &d.execution_id {
                    lines.push(format!("Started by pipeline execution {execution}."));
                }
                lines.push(format!("At {}.", d.at.to_rfc3339()));
            }
            Notice::ExecutionEnded(e) => {
                lines.push(format!(
                    "Execution {} of pipeline {} ({} {} at {}): {} in stage {}.",
                    e.execution_id, e.pipeline, e.repository, e.reference, e.sha, e.status, e.stage
                ));
                if let Some(reason) = &e.reason {
                    lines.push(format!("Reason: {reason}"));
                }
                lines.push(format!("At {}.", e.at.to_rfc3339()));
            }
        }
        lines.join("\n")
    }
}

impl DeploymentNotice {
    fn of(d: &Deployment) -> Self {
        let reason = match &d.phase {
            Phase::RolledBack { reason }
            | Phase::RollingBack { reason }
            | Phase::FailedToStart { reason }
            | Phase::FrozenOnFailure { reason, .. }
            | Phase::SteppingBack { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let verdict = d.analysis.as_ref().and_then(|a| a.verdict.as_ref());
        DeploymentNotice {
            deployment_id: d.id.clone(),
            function: d.spec.function.clone(),
            alias: d.spec.alias.clone(),
            config: d.spec.config.to_string(),
            from_version: d.from_version.clone(),
            to_version: d.to_version.clone(),
            weight: d.weight,
            reason,
            analysis: verdict.map(|v| v.detail().to_owned()),
            measured: d
                .analysis
                .as_ref()
                .and_then(|a| a.counted.as_deref())
                .map(|(new, old)| Measured {
                    new: *new,
                    old: *old,
                }),
            execution_id: deployment_origin(&d.id).map(|(execution, _)| execution),
            group: (1..d.members())
                .map(|m| {
                    let (function, alias) = d.target(m);
                    let state = d.member(m);
                    NoticeMember {
                        function: function.to_owned(),
                        alias: alias.to_owned(),
                        from_version: state.from_version,
                        to_version: state.to_version,
                    }
                })
                .collect(),
            at: d.updated_at,
        }
    }

    /// The subject's line: what happened before the group's size, so a
    /// subject cut short keeps it.
    fn headline(&self, what: &str) -> String {
        let more = match self.group.len() {
            0 => String::new(),
            n => format!(" (+{n} in its group)"),
        };
        format!(
            "{}:{} {} {what}{more}",
            self.function,
            self.alias,
            self.versions()
        )
    }

    fn versions(&self) -> String {
        versions(self.from_version.as_deref(), self.to_version.as_deref())
    }
}

fn versions(from: Option<&str>, to: Option<&str>) -> String {
    format!("v{} -> v{}", from.unwrap_or("?"), to.unwrap_or("?"))
}

fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// Whether a deployment has begun work on its alias.
fn has_started(d: &Deployment) -> bool {
    !matches!(
        d.phase,
        Phase::Created | Phase::Queued { .. } | Phase::FailedToStart { .. }
    )
}

/// What a deployment's save (`old` before it, none for its creation) is to
/// tell.
pub fn deployment_reports(old: Option<&Deployment>, new: &Deployment) -> Vec<Report> {
    let mut reports = Vec::new();
    let ended = |d: &Deployment| d.phase.is_terminal();
    if has_started(new) && !old.is_some_and(has_started) {
        reports.push(Report::Notice(Box::new(Notice::DeploymentStarted(
            DeploymentNotice::of(new),
        ))));
    }
    let frozen = |d: &Deployment| matches!(d.phase, Phase::FrozenOnFailure { .. });
    if frozen(new) && !old.is_some_and(frozen) {
        reports.push(Report::Notice(Box::new(Notice::DeploymentFrozen(
            DeploymentNotice::of(new),
        ))));
    }
    if ended(new) && !old.is_some_and(ended) {
        let notice = DeploymentNotice::of(new);
        reports.push(Report::Notice(Box::new(match new.phase {
            Phase::Promoted => Notice::DeploymentPromoted(notice),
            Phase::FailedToStart { .. } => Notice::DeploymentFailedToStart(notice),
            _ => Notice::DeploymentRolledBack(notice),
        })));
    }
    let line = deployment_status(new);
    if let Some((execution, _)) = deployment_origin(&new.id)
        && old.map(deployment_status).as_ref() != Some(&line)
    {
        reports.push(Report::CommitStatus(StatusReport {
            execution,
            subject: StatusSubject::Deployment(new.id.clone()),
            line: Some(line),
            attempt: 0,
        }));
    }
    reports
}

/// Whether an execution's status is an end (a failed one may be retried,
/// and end again).
fn has_ended(e: &Execution) -> bool {
    e.status.is_final() || matches!(e.status, Status::Failed { .. })
}

/// What an execution's save (`old` before it, none for its creation) is to
/// tell.
pub fn execution_reports(old: Option<&Execution>, new: &Execution) -> Vec<Report> {
    let mut reports = Vec::new();
    if has_ended(new) && !old.is_some_and(has_ended) {
        let (status, reason) = match &new.status {
            Status::Failed { reason } => ("failed", Some(reason.clone())),
            Status::Stopped { reason } => ("stopped", Some(reason.clone())),
            Status::Superseded { by } => ("superseded", Some(format!("superseded by {by}"))),
            _ => ("succeeded", None),
        };
        reports.push(Report::Notice(Box::new(Notice::ExecutionEnded(
            ExecutionNotice {
                execution_id: new.id.clone(),
                pipeline: new.pipeline.clone(),
                repository: new.push.repository.clone(),
                reference: new.push.reference.name().to_owned(),
                sha: new.push.sha.clone(),
                status: status.to_owned(),
                reason,
                stage: new.stage_name().to_owned(),
                at: new.updated_at,
            },
        ))));
    }
    if github_repository(&new.push).is_some() {
        for stage in 0..new.definition.stages.len() {
            let before = old.and_then(|o| stage_status(o, stage));
            let line = stage_status(new, stage);
            if line.is_some() && line != before {
                reports.push(Report::CommitStatus(StatusReport {
                    execution: new.id.clone(),
                    subject: StatusSubject::Stage(stage),
                    line,
                    attempt: 0,
                }));
            }
        }
    }
    reports
}

impl Report {
    /// The deployment or execution it is about.
    pub fn subject_id(&self) -> &str {
        match self {
            Report::Notice(notice) => notice.subject_id(),
            Report::CommitStatus(status) => &status.execution,
        }
    }
}

/// A commit status's state, as GitHub names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

/// A commit status without its context: what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusLine {
    pub state: CommitState,
    /// At most `MAX_DESCRIPTION_CHARS`.
    pub description: String,
}

/// GitHub keeps a status's description short; a longer one is cut (the
/// whole reason is in the timelines and the notices).
pub const MAX_DESCRIPTION_CHARS: usize = 139;

fn line(state: CommitState, description: impl AsRef<str>) -> StatusLine {
    StatusLine {
        state,
        description: shortened_to(description.as_ref(), MAX_DESCRIPTION_CHARS),
    }
}

/// `owner` and `name` of a push's repository when it is GitHub's (CodeCommit
/// names a repository without an owner, and has no commit statuses).
pub fn github_repository(push: &Push) -> Option<(&str, &str)> {
    push.repository
        .split_once('/')
        .filter(|(owner, name)| !owner.is_empty() && !name.is_empty() && !name.contains('/'))
}

/// The status of stage `stage` of `e`: none for a stage not reached.
pub fn stage_status(e: &Execution, stage: usize) -> Option<StatusLine> {
    use std::cmp::Ordering::*;
    match stage.cmp(&e.stage) {
        Less => Some(line(CommitState::Success, "passed")),
        Greater => None,
        Equal => Some(match &e.status {
            Status::Queued => line(CommitState::Pending, "waiting to start"),
            Status::InProgress => {
                let running: Vec<&str> = e
                    .actions
                    .iter()
                    .filter(|a| matches!(a.state, ActionState::Running { .. }))
                    .map(|a| a.name.as_str())
                    .collect();
                if running.is_empty() {
                    line(CommitState::Pending, "in progress")
                } else {
                    line(
                        CommitState::Pending,
                        format!("running {}", running.join(", ")),
                    )
                }
            }
            Status::Succeeded => line(CommitState::Success, "passed"),
            Status::Failed { reason } => line(CommitState::Failure, reason),
            Status::Stopped { reason } => line(CommitState::Error, format!("stopped: {reason}")),
            Status::Superseded { by } => {
                line(CommitState::Error, format!("superseded by execution {by}"))
            }
        }),
    }
}

/// The status of a deploy action: its deployment's weight while it runs
/// (one change a shift), then its verdict.
pub fn deployment_status(d: &Deployment) -> StatusLine {
    let more = match d.members() {
        1 => String::new(),
        n => format!(" and {} more of its group", n - 1),
    };
    let target = format!(
        "version {} of {}:{}{more}",
        d.to_version.as_deref().unwrap_or("?"),
        d.spec.function,
        d.spec.alias
    );
    match &d.phase {
        Phase::Created => line(CommitState::Pending, format!("starting {}", d.spec.config)),
        Phase::Queued { holder, .. } => {
            line(CommitState::Pending, format!("queued behind {holder}"))
        }
        Phase::Frozen { .. } => line(
            CommitState::Pending,
            format!(
                "frozen at {}% on {target}: the alias was changed outside Sluice",
                d.weight
            ),
        ),
        Phase::FrozenOnFailure { reason, until, .. } => line(
            CommitState::Pending,
            format!(
                "frozen at {}% on {target}: {reason}; abort, resume or promote by {}, else rolled back then",
                d.weight,
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        Phase::SteppingBack { reason, .. } => line(
            CommitState::Pending,
            format!("stepping back at {}% on {target}: {reason}", d.weight),
        ),
        Phase::RollingBack { reason } => {
            line(CommitState::Pending, format!("rolling back: {reason}"))
        }
        Phase::Promoted => line(CommitState::Success, format!("promoted {target}")),
        Phase::RolledBack { reason } => {
            line(CommitState::Failure, format!("rolled back: {reason}"))
        }
        Phase::FailedToStart { reason } => {
            line(CommitState::Failure, format!("failed to start: {reason}"))
        }
        Phase::PreTraffic { step }
        | Phase::Shifting { step }
        | Phase::PostTraffic { step }
        | Phase::Baking { step, .. } => line(
            CommitState::Pending,
            format!(
                "step {}/{}: {}% on {target}",
                step + 1,
                d.schedule.steps.len(),
                d.weight
            ),
        ),
    }
}

/// The context a status is posted under: one per stage, and one per deploy
/// action beside its stage's.
pub fn status_context(pipeline: &str, stage: &str, action: Option<&str>) -> String {
    match action {
        Some(action) => format!("sluice/{pipeline}/{stage}/{action}"),
        None => format!("sluice/{pipeline}/{stage}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deployment::AnalysisProgress;
    use crate::domain::deployment::{DeploymentSpec, VersionSource};
    use crate::domain::execution::ActionRun;
    use crate::domain::pipeline::{GitRef, PipelineDefinition};

    fn deployment(id: &str) -> Deployment {
        let spec = DeploymentSpec::new(
            "greeter",
            "live",
            VersionSource::Version("2".into()),
            "canary:10:5m".parse().unwrap(),
        );
        let (mut d, _) = Deployment::create(id, spec, chrono::Utc::now());
        d.from_version = Some("1".into());
        d.to_version = Some("2".into());
        d
    }

    fn moved(d: &Deployment, phase: Phase, weight: f64) -> Deployment {
        Deployment {
            phase,
            weight,
            ..d.clone()
        }
    }

    fn execution(repository: &str) -> Execution {
        let definition = PipelineDefinition::parse(
            "name: greeter\nsource: {repository: acme/greeter}\nstages:\n  - name: build\n    actions: [{name: wait, kind: approval}]\n  - name: live\n    actions: [{name: deploy-live, kind: deploy, config: {function: greeter, alias: live, version: '2', config: AllAtOnce}}]\n",
        )
        .unwrap();
        let push = Push {
            repository: repository.into(),
            reference: GitRef::Branch("main".into()),
            sha: "a1b2c3d4e5f6".into(),
            deleted: false,
            forced: false,
            changed_paths: None,
            message: None,
            author: None,
        };
        Execution::create("e-1", definition, push, chrono::Utc::now()).0
    }

    fn notices(reports: &[Report]) -> Vec<&'static str> {
        reports
            .iter()
            .filter_map(|r| match r {
                Report::Notice(n) => Some(n.event()),
                Report::CommitStatus(_) => None,
            })
            .collect()
    }

    fn statuses(reports: &[Report]) -> Vec<&StatusSubject> {
        reports
            .iter()
            .filter_map(|r| match r {
                Report::CommitStatus(s) => Some(&s.subject),
                Report::Notice(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_deployment_tells_its_start_and_its_end_once_each() {
        let created = deployment("d-1");
        assert!(
            deployment_reports(None, &created).is_empty(),
            "not started yet"
        );
        let queued = moved(
            &created,
            Phase::Queued {
                holder: "d-0".into(),
                member: 0,
            },
            0.0,
        );
        assert!(notices(&deployment_reports(Some(&created), &queued)).is_empty());
        let gate = moved(&created, Phase::PreTraffic { step: 0 }, 0.0);
        assert_eq!(
            notices(&deployment_reports(Some(&queued), &gate)),
            ["deployment_started"]
        );
        let baking = moved(
            &created,
            Phase::Baking {
                step: 0,
                until: chrono::Utc::now(),
            },
            10.0,
        );
        assert!(notices(&deployment_reports(Some(&gate), &baking)).is_empty());
        let back = moved(
            &created,
            Phase::RollingBack {
                reason: "alarm greeter-errors".into(),
            },
            10.0,
        );
        assert!(notices(&deployment_reports(Some(&baking), &back)).is_empty());
        let mut done = moved(
            &created,
            Phase::RolledBack {
                reason: "alarm greeter-errors".into(),
            },
            0.0,
        );
        let now = chrono::Utc::now();
        done.analysis = Some(AnalysisProgress {
            step: 0,
            from: now,
            through: now,
            verdict: Some(crate::domain::analysis::Verdict::Fail(
                "error rate 40.0% > 5.0%".into(),
            )),
            failed: None,
            retry_at: None,
            wait_until: None,
            counted: None,
            group_counted: vec![],
        });
        let reports = deployment_reports(Some(&back), &done);
        assert_eq!(notices(&reports), ["deployment_rolled_back"]);
        let Report::Notice(notice) = &reports[0] else {
            unreachable!()
        };
        let Notice::DeploymentRolledBack(n) = notice.as_ref() else {
            unreachable!()
        };
        assert_eq!(n.reason.as_deref(), Some("alarm greeter-errors"));
        assert_eq!(n.analysis.as_deref(), Some("error rate 40.0% > 5.0%"));
        // The same save seen again (a record delivered twice) tells nothing new.
        assert!(deployment_reports(Some(&done), &done).is_empty());
        // Ended at once: promoted from its last bake.
        let promoted = moved(&created, Phase::Promoted, 100.0);
        assert_eq!(
            notices(&deployment_reports(Some(&baking), &promoted)),
            ["deployment_promoted"]
        );
        let failed = moved(
            &created,
            Phase::FailedToStart {
                reason: "no version 2".into(),
            },
            0.0,
        );
        assert_eq!(
            notices(&deployment_reports(Some(&created), &failed)),
            ["deployment_failed_to_start"]
        );
    }

    #[test]
    fn a_pipelines_deployment_reports_its_status_at_each_change_of_weight_or_verdict() {
        let created = deployment("e-1~1.0.1");
        let step = |s: usize, w: f64| moved(&created, Phase::Shifting { step: s }, w);
        let first = deployment_reports(None, &created);
        assert_eq!(
            statuses(&first),
            [&StatusSubject::Deployment("e-1~1.0.1".into())]
        );
        let Report::CommitStatus(s) = &first[0] else {
            unreachable!()
        };
        assert_eq!(s.execution, "e-1");
        // A save that changes nothing shown posts nothing.
        let shifting = step(0, 0.0);
        let gate = moved(&created, Phase::PostTraffic { step: 0 }, 0.0);
        assert!(statuses(&deployment_reports(Some(&shifting), &gate)).is_empty());
        let shifted = moved(&created, Phase::PostTraffic { step: 0 }, 10.0);
        assert_eq!(
            statuses(&deployment_reports(Some(&gate), &shifted)).len(),
            1
        );
        assert_eq!(
            deployment_status(&shifted).description,
            "step 1/2: 10% on version 2 of greeter:live"
        );
        let promoted = moved(&created, Phase::Promoted, 100.0);
        assert_eq!(
            deployment_status(&promoted),
            StatusLine {
                state: CommitState::Success,
                description: "promoted version 2 of greeter:live".into()
            }
        );
        let long = moved(
            &created,
            Phase::RolledBack {
                reason: "x".repeat(500),
            },
            0.0,
        );
        let line = deployment_status(&long);
        assert_eq!(line.state, CommitState::Failure);
        assert_eq!(line.description.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        // A deployment no pipeline started has no commit.
        let alone = deployment("d-1");
        assert!(statuses(&deployment_reports(None, &alone)).is_empty());
    }

    #[test]
    fn an_execution_reports_each_stage_it_moves_and_its_end() {
        let queued = execution("acme/greeter");
        let created = execution_reports(None, &queued);
        assert_eq!(statuses(&created), [&StatusSubject::Stage(0)]);
        assert_eq!(
            stage_status(&queued, 0).unwrap().description,
            "waiting to start"
        );
        let mut running = queued.clone();
        running.status = Status::InProgress;
        running.actions = vec![ActionRun {
            name: "wait".into(),
            run_order: 1,
            state: ActionState::Running {
                since: chrono::Utc::now(),
            },
            attempt: 1,
            run: None,
        }];
        assert_eq!(
            stage_status(&running, 0).unwrap(),
            line(CommitState::Pending, "running wait")
        );
        let mut live = running.clone();
        live.stage = 1;
        live.actions.clear();
        let moved_on = execution_reports(Some(&running), &live);
        assert_eq!(
            statuses(&moved_on),
            [&StatusSubject::Stage(0), &StatusSubject::Stage(1)]
        );
        assert_eq!(stage_status(&live, 0).unwrap().state, CommitState::Success);
        assert!(notices(&moved_on).is_empty());
        let mut failed = live.clone();
        failed.status = Status::Failed {
            reason: "deploy-live failed in stage live: rolled back".into(),
        };
        let ended = execution_reports(Some(&live), &failed);
        assert_eq!(notices(&ended), ["execution_ended"]);
        assert_eq!(statuses(&ended), [&StatusSubject::Stage(1)]);
        let Report::Notice(notice) = &ended[0] else {
            unreachable!()
        };
        let Notice::ExecutionEnded(n) = notice.as_ref() else {
            unreachable!()
        };
        assert_eq!((n.status.as_str(), n.stage.as_str()), ("failed", "live"));
        // CodeCommit's pushes have no commit statuses; their end is told.
        let mut codecommit = failed.clone();
        codecommit.push.repository = "greeter".into();
        let mut before = live.clone();
        before.push.repository = "greeter".into();
        let ended = execution_reports(Some(&before), &codecommit);
        assert_eq!(notices(&ended), ["execution_ended"]);
        assert!(statuses(&ended).is_empty());
    }

    #[test]
    fn a_report_reads_back_as_sent_and_unknown_fields_are_refused() {
        let d = moved(&deployment("d-1"), Phase::Promoted, 100.0);
        for report in deployment_reports(Some(&deployment("d-1")), &d) {
            let text = serde_json::to_string(&report).unwrap();
            assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), report);
        }
        let notice = Notice::DeploymentPromoted(DeploymentNotice::of(&d));
        let mut json = serde_json::to_value(&notice).unwrap();
        assert_eq!(json["event"], "deployment_promoted");
        assert_eq!(json["function"], "greeter");
        json["fucntion"] = "typo".into();
        assert!(serde_json::from_value::<Notice>(json).is_err());
        let subject = notice.subject();
        assert_eq!(subject, "Sluice: greeter:live v1 -> v2 promoted");
        assert!(subject.is_ascii() && subject.len() < 100);
        assert!(!notice.text().contains("release group"));
    }

    #[test]
    fn a_release_group_s_notices_and_statuses_name_its_members() {
        let spec = DeploymentSpec {
            group: vec![crate::domain::deployment::MemberSpec {
                function: "greeter-worker".into(),
                alias: "live".into(),
                source: VersionSource::Version("7".into()),
            }],
            ..DeploymentSpec::new(
                "greeter",
                "live",
                VersionSource::Version("2".into()),
                "canary:10:5m".parse().unwrap(),
            )
        };
        let (mut d, _) = Deployment::create("d-g", spec, chrono::Utc::now());
        d.from_version = Some("1".into());
        d.to_version = Some("2".into());
        d.group = vec![crate::domain::deployment::MemberState {
            from_version: Some("6".into()),
            to_version: Some("7".into()),
            ..Default::default()
        }];
        let promoted = moved(&d, Phase::Promoted, 100.0);
        let notice = Notice::DeploymentPromoted(DeploymentNotice::of(&promoted));
        let json = serde_json::to_value(&notice).unwrap();
        assert_eq!(
            json["group"],
            serde_json::json!([{"function": "greeter-worker", "alias": "live", "from_version": "6", "to_version": "7"}])
        );
        assert_eq!(serde_json::from_value::<Notice>(json).unwrap(), notice);
        assert_eq!(
            notice.subject(),
            "Sluice: greeter:live v1 -> v2 promoted (+1 in its group)"
        );
        let text = notice.text();
        assert!(
            text.contains("With its release group, in lockstep: greeter-worker:live (v6 -> v7).")
                && text.contains("100% on the new version of every member."),
            "{text}"
        );
        let shifting = moved(
            &d,
            Phase::Baking {
                step: 0,
                until: chrono::Utc::now(),
            },
            10.0,
        );
        let status = deployment_status(&shifting);
        assert!(
            status
                .description
                .contains("version 2 of greeter:live and 1 more of its group"),
            "{}",
            status.description
        );
    }
}
