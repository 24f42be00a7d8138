//! Pipeline definitions: which pushes start a pipeline, and the stages its
//! executions go through. A definition is YAML (or JSON, which is YAML too);
//! validation reports every problem with its path, not only the first.

use crate::analysis::AnalysisSettings;
use crate::config::DeploymentConfig;
use crate::deployment::{
    HookInvocation, OnBusy, OnManualChange, RollbackPolicy, group_shape_problems,
    group_size_problem, hook_problems, rollback_problems,
};
use crate::names;
use crate::smoke::{S3Uri, SmokeTest};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// What CodePipeline calls an execution mode, with its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// A newer execution replaces an older one at the next stage boundary.
    #[default]
    Superseded,
    /// Executions run one at a time, in the order they started.
    Queued,
    /// Executions run side by side.
    Parallel,
}

/// Glob patterns (`*` within a path segment, `**` across them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patterns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Which pushes start an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFilter {
    /// `owner/name` on GitHub, the repository name on CodeCommit.
    pub repository: String,
    /// Branch pushes: all branches when `include` is empty.
    #[serde(default)]
    pub branches: Patterns,
    /// Tag pushes start nothing unless `include` names some.
    #[serde(default)]
    pub tags: Patterns,
    /// Branch pushes must change a file that is included and not excluded.
    #[serde(default)]
    pub paths: Patterns,
}

/// How long something may take, written like `30s`, `5m`, `2h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeout(#[serde(with = "humantime_serde")] pub Duration);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactAction {
    /// The bucket the build writes to; Sluice's artifact bucket when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The object key, templated: `builds/{repo}/{sha}/app.zip`.
    pub key: String,
    #[serde(default = "ArtifactAction::default_timeout")]
    pub timeout: Timeout,
}

impl ArtifactAction {
    fn default_timeout() -> Timeout {
        Timeout(Duration::from_secs(30 * 60))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeAction {
    pub function: String,
    /// Sent as the event, beside the execution's context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployAction {
    pub function: String,
    pub alias: String,
    /// The name of an `artifact` action of an earlier stage whose zip is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// A version already published (templated, e.g. `{var.version}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smoke_tests: Vec<SmokeTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_tests_from: Option<S3Uri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSettings>,
    #[serde(default)]
    pub hook_invocation: HookInvocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub rollback: RollbackPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_for_seconds: Option<u64>,
    /// More functions moved in lockstep with `function` (a release group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<DeployMember>,
}

/// One more function of a deploy action's release group, with its own
/// artifact or version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployMember {
    pub function: String,
    pub alias: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAction {
    #[serde(default = "ApprovalAction::default_timeout")]
    pub timeout: Timeout,
}

impl ApprovalAction {
    fn default_timeout() -> Timeout {
        Timeout(Duration::from_secs(7 * 24 * 3600))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitAction {
    pub duration: Timeout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodePipelineAction {
    /// The AWS CodePipeline to start (templated).
    pub pipeline: String,
    /// That pipeline's source action, to run it on this execution's commit
    /// rather than the latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_action: Option<String>,
    #[serde(default = "CodePipelineAction::default_timeout")]
    pub timeout: Timeout,
}

impl CodePipelineAction {
    fn default_timeout() -> Timeout {
        Timeout(Duration::from_secs(3600))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config", rename_all = "snake_case")]
pub enum ActionKind {
    Artifact(ArtifactAction),
    Invoke(InvokeAction),
    Deploy(Box<DeployAction>),
    Approval(ApprovalAction),
    Wait(WaitAction),
    #[serde(rename = "codepipeline")]
    CodePipeline(CodePipelineAction),
}

const KINDS: &str = "artifact, invoke, deploy, approval, wait, codepipeline";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    /// Actions of a stage run in groups of equal run order, lowest first.
    pub run_order: u32,
    #[serde(flatten)]
    pub kind: ActionKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefinition {
    pub name: String,
    pub source: SourceFilter,
    pub execution_mode: ExecutionMode,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    pub stages: Vec<Stage>,
}

/// One problem of a definition, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pipeline definition:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct InvalidDefinition(pub Vec<Problem>);

/// The placeholders a templated value may use; `{var.NAME}` names a variable.
pub const PLACEHOLDERS: [&str; 6] = ["repo", "sha", "short_sha", "ref", "pipeline", "execution"];

/// The shape as written, before each action's config is read by its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    source: serde_json::Value,
    #[serde(default)]
    execution_mode: Option<serde_json::Value>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    stages: Vec<RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    actions: Vec<RawAction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: String,
    kind: String,
    #[serde(default)]
    run_order: Option<u32>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Reads `value` as a `T`, or says what is wrong and where below `path`.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            problems.push(Problem {
                path,
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

fn problem(problems: &mut Vec<Problem>, path: impl Into<String>, message: impl Into<String>) {
    problems.push(Problem {
        path: path.into(),
        message: message.into(),
    });
}

/// Names are used in keys, URLs and CLI arguments.
fn check_name(name: &str, path: &str, problems: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        problem(
            problems,
            path,
            format!("{name:?} must be 1 to 100 letters, digits, '-', '_' or '.'"),
        );
    }
}

fn check_globs(patterns: &Patterns, path: &str, problems: &mut Vec<Problem>) {
    for (list, globs) in [
        ("include", &patterns.include),
        ("exclude", &patterns.exclude),
    ] {
        for (i, g) in globs.iter().enumerate() {
            if let Err(e) = Glob::new(g) {
                problem(
                    problems,
                    format!("{path}.{list}[{i}]"),
                    e.kind().to_string(),
                );
            }
        }
    }
}

/// Checks the `{...}` placeholders of a templated value.
fn check_template(
    text: &str,
    variables: &BTreeMap<String, String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for name in placeholders(text) {
        match name {
            Err(e) => problem(problems, path, e),
            Ok(name) => {
                let known = match name.strip_prefix("var.") {
                    Some(var) => variables.contains_key(var),
                    None => PLACEHOLDERS.contains(&name),
                };
                if !known {
                    problem(
                        problems,
                        path,
                        format!(
                            "unknown placeholder {{{name}}}: use {} or {{var.NAME}} of a declared variable",
                            PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// The names between braces, or an error for an unclosed brace.
fn placeholders(text: &str) -> Vec<Result<&str, String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        match rest[open..].find('}') {
            Some(close) => {
                out.push(Ok(&rest[open + 1..open + close]));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push(Err(format!("unclosed '{{' in {text:?}")));
                break;
            }
        }
    }
    out
}

/// Fills a templated value; `validate` has checked its placeholders.
pub fn render(
    text: &str,
    context: &TemplateContext,
    variables: &BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..open + close];
        let value = match name.strip_prefix("var.") {
            Some(var) => variables.get(var).map(String::as_str),
            None => context.get(name),
        };
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// What placeholders stand for in one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContext {
    pub repo: String,
    pub sha: String,
    pub reference: String,
    pub pipeline: String,
    pub execution: String,
}

impl TemplateContext {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "repo" => &self.repo,
            "sha" => &self.sha,
            "short_sha" => super::clip(&self.sha, 7),
            "ref" => &self.reference,
            "pipeline" => &self.pipeline,
            "execution" => &self.execution,
            _ => return None,
        })
    }
}

impl PipelineDefinition {
    /// Parses and validates a definition written in YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, InvalidDefinition> {
        let value: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            InvalidDefinition(vec![Problem {
                path: String::new(),
                message: format!("not YAML or JSON: {e}"),
            }])
        })?;
        Self::from_value(value)
    }

    /// Validates a definition already read into JSON values.
    pub fn from_value(value: serde_json::Value) -> Result<Self, InvalidDefinition> {
        let mut problems = Vec::new();
        if !value.is_object() {
            problem(
                &mut problems,
                "",
                "a pipeline definition is a mapping with name, source, execution_mode, variables and stages",
            );
            return Err(InvalidDefinition(problems));
        }
        let Some(raw) = typed::<RawDefinition>(value, "", &mut problems) else {
            return Err(InvalidDefinition(problems));
        };
        check_name(&raw.name, "name", &mut problems);
        for name in raw.variables.keys() {
            check_name(name, &format!("variables.{name}"), &mut problems);
        }
        let source = typed::<SourceFilter>(raw.source, "source", &mut problems);
        if let Some(source) = &source {
            if source.repository.trim().is_empty() {
                problem(&mut problems, "source.repository", "must name a repository");
            }
            check_globs(&source.branches, "source.branches", &mut problems);
            check_globs(&source.tags, "source.tags", &mut problems);
            check_globs(&source.paths, "source.paths", &mut problems);
        }
        let execution_mode = match raw.execution_mode {
            None => Some(ExecutionMode::default()),
            Some(v) => typed::<ExecutionMode>(v, "execution_mode", &mut problems),
        };
        if raw.stages.is_empty() {
            problem(
                &mut problems,
                "stages",
                "a pipeline needs at least one stage",
            );
        }

        let mut stages = Vec::new();
        let mut stage_names = HashSet::new();
        // Artifact actions of earlier stages, which a deploy action may name.
        let mut artifacts_before: HashSet<String> = HashSet::new();
        let mut action_names = HashSet::new();
        for (s, raw_stage) in raw.stages.into_iter().enumerate() {
            let path = format!("stages[{s}]");
            check_name(&raw_stage.name, &format!("{path}.name"), &mut problems);
            if !stage_names.insert(raw_stage.name.clone()) {
                problem(
                    &mut problems,
                    format!("{path}.name"),
                    format!("stage {:?} is defined twice", raw_stage.name),
                );
            }
            if raw_stage.actions.is_empty() {
                problem(
                    &mut problems,
                    format!("{path}.actions"),
                    "a stage needs at least one action",
                );
            }
            let mut actions = Vec::new();
            let mut artifacts_here = Vec::new();
            for (a, raw_action) in raw_stage.actions.into_iter().enumerate() {
                let path = format!("{path}.actions[{a}]");
                check_name(&raw_action.name, &format!("{path}.name"), &mut problems);
                if !action_names.insert(raw_action.name.clone()) {
                    problem(
                        &mut problems,
                        format!("{path}.name"),
                        format!(
                            "action {:?} is defined twice (action names are unique in a pipeline)",
                            raw_action.name
                        ),
                    );
                }
                let run_order = raw_action.run_order.unwrap_or(1);
                if run_order == 0 || run_order > 999 {
                    problem(
                        &mut problems,
                        format!("{path}.run_order"),
                        "must be from 1 to 999",
                    );
                }
                let tagged = serde_json::json!({
                    "kind": raw_action.kind,
                    "config": raw_action.config.unwrap_or_else(|| serde_json::json!({})),
                });
                let config_path = format!("{path}.config");
                let kind = match serde_json::from_value::<ActionKind>(tagged.clone()) {
                    Ok(kind) => Some(kind),
                    Err(_) if !KINDS.split(", ").any(|k| k == raw_action.kind) => {
                        problem(
                            &mut problems,
                            format!("{path}.kind"),
                            format!("unknown kind {:?}: use one of {KINDS}", raw_action.kind),
                        );
                        None
                    }
                    Err(_) => typed_config(tagged, &config_path, &mut problems),
                };
                let Some(kind) = kind else { continue };
                check_action(
                    &kind,
                    &raw.variables,
                    &artifacts_before,
                    &config_path,
                    &mut problems,
                );
                if matches!(kind, ActionKind::Artifact(_)) {
                    artifacts_here.push(raw_action.name.clone());
                }
                actions.push(Action {
                    name: raw_action.name,
                    run_order,
                    kind,
                });
            }
            artifacts_before.extend(artifacts_here);
            stages.push(Stage {
                name: raw_stage.name,
                actions,
            });
        }
        match (source, execution_mode) {
            (Some(source), Some(execution_mode)) if problems.is_empty() => Ok(PipelineDefinition {
                name: raw.name,
                source,
                execution_mode,
                variables: raw.variables,
                stages,
            }),
            _ => Err(InvalidDefinition(problems)),
        }
    }

    /// Whether a push starts an execution of this pipeline.
    pub fn matches(&self, push: &Push) -> bool {
        let source = &self.source;
        if !push.repository.eq_ignore_ascii_case(&source.repository) || push.deleted {
            return false;
        }
        match &push.reference {
            GitRef::Tag(tag) => {
                !source.tags.include.is_empty()
                    && selected(&source.tags, std::iter::once(tag.as_str()))
            }
            GitRef::Branch(branch) => {
                if !selected(&source.branches, std::iter::once(branch.as_str())) {
                    return false;
                }
                let paths = &source.paths;
                if paths.include.is_empty() && paths.exclude.is_empty() {
                    return true;
                }
                match &push.changed_paths {
                    // The source could not list the files (e.g. too many): build it.
                    None => true,
                    Some(files) => selected(paths, files.iter().map(String::as_str)),
                }
            }
        }
    }
}

/// Deserializes an action's config again to find where it is wrong.
fn typed_config(
    tagged: serde_json::Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<ActionKind> {
    let kind = tagged["kind"].as_str().unwrap_or_default().to_owned();
    let config = tagged["config"].clone();
    match kind.as_str() {
        "artifact" => typed(config, path, problems).map(ActionKind::Artifact),
        "invoke" => typed(config, path, problems).map(ActionKind::Invoke),
        "deploy" => typed(config, path, problems).map(|d| ActionKind::Deploy(Box::new(d))),
        "approval" => typed(config, path, problems).map(ActionKind::Approval),
        "wait" => typed(config, path, problems).map(ActionKind::Wait),
        "codepipeline" => typed(config, path, problems).map(ActionKind::CodePipeline),
        _ => None,
    }
}

fn check_action(
    kind: &ActionKind,
    variables: &BTreeMap<String, String>,
    artifacts_before: &HashSet<String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    match kind {
        ActionKind::Artifact(a) => {
            check_template(&a.key, variables, &format!("{path}.key"), problems)
        }
        ActionKind::Invoke(i) => {
            check_template(
                &i.function,
                variables,
                &format!("{path}.function"),
                problems,
            );
            check_literal_name(
                &i.function,
                names::invocable,
                &format!("{path}.function"),
                problems,
            );
        }
        ActionKind::Deploy(d) => {
            let own = DeployMember {
                function: d.function.clone(),
                alias: d.alias.clone(),
                artifact: d.artifact.clone(),
                version: d.version.clone(),
            };
            let members = std::iter::once((path.to_owned(), &own)).chain(
                d.group
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("{path}.group[{i}]"), m)),
            );
            let mut paths = Vec::new();
            let mut targets = Vec::new();
            for (at, member) in members {
                check_deploy_target(member, variables, artifacts_before, &at, problems);
                // Templated names are checked once rendered.
                let templated = |text: &str| text.contains('{');
                let literal = !templated(&member.function) && !templated(&member.alias);
                targets.push(literal.then_some((member.function.as_str(), member.alias.as_str())));
                paths.push(at);
            }
            for (member, why) in group_shape_problems(&targets, d.on_manual_change) {
                let at = member.map_or(path.to_owned(), |m| paths[m].clone());
                problem(problems, at, why);
            }
            if let Some(why) = group_size_problem(d.group.len() + 1, &d.function) {
                problem(problems, format!("{path}.group"), why);
            }
            let named: [(&str, Option<&String>, NameRule); 2] = [
                (
                    "pre_traffic_hook",
                    d.pre_traffic_hook.as_ref(),
                    names::invocable,
                ),
                (
                    "post_traffic_hook",
                    d.post_traffic_hook.as_ref(),
                    names::invocable,
                ),
            ];
            for (field, value, rule) in named {
                if let Some(value) = value {
                    check_literal_name(value, rule, &format!("{path}.{field}"), problems);
                }
            }
            for (i, alarm) in d.alarms.iter().enumerate() {
                check_literal_name(
                    alarm,
                    names::alarm,
                    &format!("{path}.alarms[{i}]"),
                    problems,
                );
            }
            if let Some(analysis) = &d.analysis {
                for why in analysis.problems(&d.config) {
                    problem(problems, path, why);
                }
            }
            for why in hook_problems(d.hook_invocation, d.hook_timeout_seconds) {
                problem(problems, path, why);
            }
            for why in rollback_problems(d.rollback, d.frozen_for_seconds, d.hook_invocation) {
                problem(problems, path, why);
            }
        }
        ActionKind::CodePipeline(c) => check_template(
            &c.pipeline,
            variables,
            &format!("{path}.pipeline"),
            problems,
        ),
        ActionKind::Approval(_) | ActionKind::Wait(_) => {}
    }
}

type NameRule = fn(&str) -> Result<(), String>;

/// A deploy action's function, alias and new version (its own, or a group
/// member's at `path`).
fn check_deploy_target(
    d: &DeployMember,
    variables: &BTreeMap<String, String>,
    artifacts_before: &HashSet<String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    check_template(
        &d.function,
        variables,
        &format!("{path}.function"),
        problems,
    );
    check_template(&d.alias, variables, &format!("{path}.alias"), problems);
    let named: [(&str, Option<&String>, NameRule); 3] = [
        ("function", Some(&d.function), names::function),
        ("alias", Some(&d.alias), names::alias),
        ("version", d.version.as_ref(), names::version),
    ];
    for (field, value, rule) in named {
        if let Some(value) = value {
            check_literal_name(value, rule, &format!("{path}.{field}"), problems);
        }
    }
    match (&d.artifact, &d.version) {
        (Some(_), Some(_)) | (None, None) => problem(
            problems,
            path,
            "give exactly one of `artifact` (an artifact action of an earlier stage) or `version`",
        ),
        (Some(artifact), None) if !artifacts_before.contains(artifact) => problem(
            problems,
            format!("{path}.artifact"),
            format!("{artifact:?} is not an artifact action of an earlier stage"),
        ),
        (None, Some(version)) => {
            check_template(version, variables, &format!("{path}.version"), problems)
        }
        _ => {}
    }
}

/// A name written out in full (no `{...}` to fill in at run time) is checked
/// against AWS's pattern when the definition is applied, not when a push
/// reaches it.
fn check_literal_name(value: &str, rule: NameRule, path: &str, problems: &mut Vec<Problem>) {
    if value.contains('{') {
        return;
    }
    if value.trim().is_empty() {
        problem(problems, path, "must not be empty");
    } else if let Err(why) = rule(value) {
        problem(problems, path, why);
    }
}

/// Whether any of `candidates` is included and not excluded (all are included when
/// `include` is empty).
fn selected<'a>(patterns: &Patterns, mut candidates: impl Iterator<Item = &'a str>) -> bool {
    let include = glob_set(&patterns.include);
    let exclude = glob_set(&patterns.exclude);
    candidates.any(|c| (patterns.include.is_empty() || include.is_match(c)) && !exclude.is_match(c))
}

fn glob_set(patterns: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        // Validation refused bad globs; one that slips through matches nothing.
        if let Ok(g) = Glob::new(p) {
            builder.add(g);
        }
    }
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// A git reference as pushes name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// `refs/heads/x` or `refs/tags/x`; anything else is not a push Sluice acts on.
    pub fn parse(full: &str) -> Option<Self> {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            return Some(GitRef::Branch(b.to_owned()));
        }
        full.strip_prefix("refs/tags/")
            .map(|t| GitRef::Tag(t.to_owned()))
    }

    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(n) | GitRef::Tag(n) => n,
        }
    }
}

/// One reference update of a push, from any source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub repository: String,
    pub reference: GitRef,
    /// The commit the reference now points to.
    pub sha: String,
    /// The reference was deleted: nothing to build.
    pub deleted: bool,
    /// History was rewritten (a force push).
    pub forced: bool,
    /// Files the push changed, when the source lists them.
    pub changed_paths: Option<Vec<String>>,
    pub message: Option<String>,
    pub author: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../pipelines/greeter.yaml");

    fn problems(text: &str) -> Vec<String> {
        match PipelineDefinition::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(InvalidDefinition(ps)) => ps.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn push(branch: &str, files: Option<&[&str]>) -> Push {
        Push {
            repository: "acme/greeter".into(),
            reference: GitRef::Branch(branch.into()),
            sha: "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4".into(),
            deleted: false,
            forced: false,
            changed_paths: files.map(|f| f.iter().map(|s| s.to_string()).collect()),
            message: None,
            author: None,
        }
    }

    #[test]
    fn the_sample_pipeline_is_valid_and_round_trips_through_json() {
        let def = PipelineDefinition::parse(SAMPLE).unwrap();
        assert_eq!(def.name, "greeter");
        assert_eq!(def.execution_mode, ExecutionMode::Superseded);
        let names: Vec<_> = def.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build", "beta", "approve", "live"]);
        assert_eq!(def.stages[1].actions[1].run_order, 2);
        let ActionKind::Approval(a) = &def.stages[2].actions[0].kind else {
            panic!("{:?}", def.stages[2].actions[0].kind)
        };
        assert_eq!(a.timeout.0, Duration::from_secs(2 * 24 * 3600));
        let json = serde_json::to_string(&def).unwrap();
        assert_eq!(PipelineDefinition::parse(&json).unwrap(), def);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
name: "bad name!"
source: { repository: acme/greeter, branches: { include: ["[main"] } }
execution_mode: sometimes
stages:
  - name: build
    actions:
      - { name: artifact, kind: artifact, config: { key: "builds/{sha}/{nope}.zip" } }
  - name: build
    actions:
      - { name: deploy, kind: deploy, config: { function: app, alias: live, artifact: missing, config: "canary:200:5s" } }
      - { name: deploy2, kind: deploy, config: { function: app, alias: live, config: AllAtOnce, analysis: { min_invocations: 0 } } }
      - { name: test, kind: test, run_order: 0 }
      - { name: wait, kind: wait, config: { duration: soon } }
      - { name: artifact, kind: approval }
  - name: empty
    actions: []
"#;
        let found = problems(text);
        let expected_paths = [
            "name: ",
            "source.branches.include[0]: ",
            "execution_mode: ",
            "stages[0].actions[0].config.key: unknown placeholder {nope}",
            "stages[1].name: stage \"build\" is defined twice",
            "stages[1].actions[0].config.config: deployment config \"canary:200:5s\": percent \"200\" must be above 0 and below 100",
            "stages[1].actions[1].config: give exactly one of",
            "stages[1].actions[1].config: analysis.min_invocations must be at least 1",
            "stages[1].actions[1].config: analysis: AllAtOnce shifts all traffic at once",
            "stages[1].actions[2].run_order: must be from 1 to 999",
            "stages[1].actions[2].kind: unknown kind \"test\"",
            "stages[1].actions[3].config.duration: ",
            "stages[1].actions[4].name: action \"artifact\" is defined twice",
            "stages[2].actions: a stage needs at least one action",
        ];
        for prefix in expected_paths {
            assert!(
                found.iter().any(|p| p.starts_with(prefix)),
                "no problem starting {prefix:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected_paths.len(), "{found:#?}");
        // A deploy naming an artifact action that does not come earlier.
        let text = SAMPLE.replace(
            "artifact: artifact\n          config: AllAtOnce",
            "artifact: deploy-live\n          config: AllAtOnce",
        );
        assert!(problems(&text).iter().any(|p| p.starts_with(
            "stages[1].actions[0].config.artifact: \"deploy-live\" is not an artifact action of an earlier stage"
        )));
        // Names written out in full are checked as AWS would; templated ones when rendered.
        let text = r#"
name: names
source: { repository: acme/greeter }
stages:
  - name: live
    actions:
      - { name: a, kind: deploy, config: { function: "greeter/../x", alias: "../cli", version: live, config: AllAtOnce, pre_traffic_hook: " ", alarms: ["ok", ""] } }
      - { name: b, kind: invoke, config: { function: "no such!" } }
      - { name: c, kind: deploy, config: { function: "{var.app}", alias: live, version: "{var.version}", config: AllAtOnce } }
variables: { app: greeter, version: "3" }
"#;
        let found = problems(text);
        let paths: Vec<&str> = found
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "stages[0].actions[0].config.function",
                "stages[0].actions[0].config.alias",
                "stages[0].actions[0].config.version",
                "stages[0].actions[0].config.pre_traffic_hook",
                "stages[0].actions[0].config.alarms[1]",
                "stages[0].actions[1].config.function",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn unreadable_text_is_one_clear_problem() {
        assert!(problems("stages: [")[0].starts_with("not YAML or JSON"));
        let top = problems("[]");
        assert!(
            top[0].starts_with("a pipeline definition is a mapping"),
            "{top:?}"
        );
        assert!(
            problems("name: x\nsource: {repository: r}\nstages: []\ncolour: red")[0]
                .contains("unknown field `colour`")
        );
    }

    #[test]
    fn branches_tags_and_paths_select_pushes() {
        let def = PipelineDefinition::parse(SAMPLE).unwrap();
        assert!(def.matches(&push("main", Some(&["src/main.rs", "README.md"]))));
        assert!(
            def.matches(&push("release/2.0", None)),
            "unknown files build"
        );
        assert!(!def.matches(&push("feature/x", Some(&["src/main.rs"]))));
        assert!(
            !def.matches(&push("main", Some(&["docs/guide.txt", "src/README.md"]))),
            "a docs-only push is excluded"
        );
        assert!(!def.matches(&push("main", Some(&[]))), "no file changed");
        let mut other_repo = push("main", None);
        other_repo.repository = "acme/other".into();
        assert!(!def.matches(&other_repo));
        let mut deleted = push("main", None);
        deleted.deleted = true;
        assert!(!def.matches(&deleted), "a deleted branch starts nothing");
        let mut tag = push("main", None);
        tag.reference = GitRef::Tag("v1.0.0".into());
        assert!(!def.matches(&tag), "tags need an explicit include");

        let tagged = SAMPLE.replace(
            "  paths:",
            "  tags:\n    include: [\"v*\"]\n    exclude: [\"v*-rc*\"]\n  paths:",
        );
        let def = PipelineDefinition::parse(&tagged).unwrap();
        assert!(def.matches(&tag));
        tag.reference = GitRef::Tag("v1.0.0-rc1".into());
        assert!(!def.matches(&tag));
    }

    #[test]
    fn templates_fill_in_the_commit_and_variables() {
        let context = TemplateContext {
            repo: "acme/greeter".into(),
            sha: "9a1f3c2e8b7d4a6f".into(),
            reference: "main".into(),
            pipeline: "greeter".into(),
            execution: "e-1".into(),
        };
        let vars = BTreeMap::from([("function".to_owned(), "greeter".to_owned())]);
        assert_eq!(
            render(
                "builds/{repo}/{short_sha}/{var.function}.zip",
                &context,
                &vars
            ),
            "builds/acme/greeter/9a1f3c2/greeter.zip"
        );
        assert_eq!(
            render("{ref}-{pipeline}-{execution}-{sha}", &context, &vars),
            "main-greeter-e-1-9a1f3c2e8b7d4a6f"
        );
    }

    #[test]
    fn a_deploy_action_s_release_group_is_checked_member_by_member() {
        let pipeline = |group: &str| {
            format!(
                r#"
name: grouped
source: {{ repository: acme/greeter }}
stages:
  - name: build
    actions:
      - {{ name: artifact, kind: artifact, config: {{ key: "builds/{{sha}}.zip" }} }}
  - name: live
    actions:
      - {{ name: deploy, kind: deploy, config: {{ function: api, alias: live, artifact: artifact, config: AllAtOnce, group: {group} }} }}
"#
            )
        };
        let ok = pipeline(
            "[{ function: worker, alias: live, artifact: artifact }, { function: cron, alias: live, version: \"{sha}\" }]",
        );
        let def = PipelineDefinition::parse(&ok).unwrap();
        let ActionKind::Deploy(d) = &def.stages[1].actions[0].kind else {
            panic!("a deploy action")
        };
        assert_eq!(d.group.len(), 2);
        let found = problems(&pipeline(
            "[{ function: worker, alias: live, artifact: artifact, version: \"2\" }, { function: api, alias: live, version: \"2\" }, { function: \"bad name!\", alias: live, artifact: nope }]",
        ));
        for expected in [
            "stages[1].actions[0].config.group[0]: give exactly one of",
            "stages[1].actions[0].config.group[1]: api:live is in the group twice",
            "stages[1].actions[0].config.group[2].function: ",
            "stages[1].actions[0].config.group[2].artifact: \"nope\" is not an artifact action of an earlier stage",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected}: {found:?}"
            );
        }
        // Strict: a misspelled member field is refused by name.
        let found = problems(&pipeline(
            "[{ function: worker, alias: live, artefact: artifact }]",
        ));
        assert!(
            found.iter().any(|p| p.contains("unknown field `artefact`")),
            "{found:?}"
        );
    }
}
