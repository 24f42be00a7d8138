//! `sluice`: see and steer pipelines and deployments from a terminal.

mod connect;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice::clock::{Clock, SystemClock};
use sluice::domain::config::ConfigError;
use sluice::domain::deployment::{
    DeploymentSpec, HookInvocation, MemberSpec, OnBusy, OnManualChange, RollbackPolicy,
    VersionSource,
};
use sluice::domain::execution::StopMode;
use sluice::domain::smoke::S3Uri;
use sluice::operations::{DeploymentAction, ExecutionAction, Operations, Status};
use sluice::ports::Deployments as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "See and steer Sluice pipelines and deployments",
    after_help = "Examples:
  sluice pipeline apply -f pipelines/greeter.yaml
  sluice deploy greeter --alias live --version 7 --config canary:10:5m --pre-hook sluice-pre-traffic
  sluice deployment show 3f2a9c1e
  sluice approve 9a1f3c2-0c1e2d3f --comment 'ship it'
  sluice --output json execution show 9a1f3c2-0c1e2d3f

Against the local stack, the env file `make dev` writes (.sluice-local/env) is used when
it exists; otherwise the deployed stack named by --stack (default sluice) is found with
the standard AWS credential chain."
)]
struct Cli {
    /// sluice-local's env file (default: .sluice-local/env when it exists).
    #[arg(long, global = true, env = "SLUICE_ENV_FILE")]
    env_file: Option<PathBuf>,
    /// The deployed SAM stack (used when there is no env file).
    #[arg(long, global = true, env = "SLUICE_STACK", default_value = "sluice")]
    stack: String,
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Pipelines with their latest executions, and active deployments with their progress.
    Status {
        /// Redraw every second until no deployment or execution is active;
        /// into a file or a pipe, print a plain snapshot each time it changes.
        #[arg(long)]
        watch: bool,
    },
    /// Start a deployment of a function's alias.
    Deploy(Box<DeployArgs>),
    /// Deployments.
    Deployment {
        #[command(subcommand)]
        command: DeploymentCommand,
    },
    /// Skip the remaining waits of a deployment (its gates still run).
    Promote {
        id: String,
    },
    /// Hold a deployment at its next bake.
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Put 100% back on the old version.
    Abort {
        id: String,
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
    /// Deploy the same thing again, as a new deployment.
    Retry {
        id: String,
    },
    /// Pipeline definitions.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Pipeline executions.
    Execution {
        #[command(subcommand)]
        command: ExecutionCommand,
    },
    /// Approve the approval action an execution waits on.
    Approve {
        execution: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject it: the execution fails.
    Reject {
        execution: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Stop an execution: let running actions finish, or abandon them.
    Stop {
        execution: String,
        #[arg(long)]
        abandon: bool,
        #[arg(long, default_value = "stopped by an operator")]
        reason: String,
    },
    /// Run a failed execution's stage again: its failed actions, or all.
    RetryStage {
        execution: String,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum DeploymentCommand {
    /// A deployment and its timeline.
    Show { id: String },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Validate a definition, show what changes, and save it.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
        /// Validate and show the diff only.
        #[arg(long)]
        dry_run: bool,
    },
    List,
    Show {
        name: String,
    },
}

#[derive(Subcommand)]
enum ExecutionCommand {
    /// An execution, its current stage and its timeline.
    Show { id: String },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        // One clear line (the causes joined), and a non-zero exit.
        eprintln!("sluice: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn print(output: Output, value: &Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => emit(&serde_json::to_string_pretty(value).expect("JSON")),
        Output::Text => emit(&text()),
    }
}

/// Writes a line to stdout. A reader that has gone (`| head -1`) ends the
/// command quietly and successfully, as it does for other Unix tools.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("sluice: cannot write the output: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    function: String,
    #[arg(long)]
    alias: String,
    /// A published version.
    #[arg(
        long,
        conflicts_with = "artifact",
        required_unless_present = "artifact"
    )]
    version: Option<String>,
    /// A zip to publish, as s3://bucket/key.
    #[arg(long)]
    artifact: Option<String>,
    /// canary:10:5m, linear:20:1m, steps:..., or a CodeDeploy name.
    #[arg(long, default_value = "AllAtOnce")]
    config: String,
    #[arg(long)]
    pre_hook: Option<String>,
    #[arg(long)]
    post_hook: Option<String>,
    #[arg(long = "alarm")]
    alarms: Vec<String>,
    /// Fail at once if another deployment holds the alias (default: wait).
    #[arg(long)]
    refuse_if_busy: bool,
    /// If someone else changes the alias mid-way, freeze the deployment
    /// until an operator resumes or aborts it (default: take it as a
    /// rollback). The alias is left as found either way.
    #[arg(long)]
    freeze_on_manual_change: bool,
    /// Judge each bake on CloudWatch, as JSON: '{"max_error_rate": 2,
    /// "min_invocations": 50, "watch_after_promotion_seconds": 600}' (see the
    /// README's Analysis). A misspelled field is refused.
    #[arg(long, value_name = "JSON")]
    analysis: Option<String>,
    /// Invoke the hooks asynchronously: each reports with the callback
    /// token its request carries (POST /hook-reports), within SECONDS
    /// without a report or heartbeat (default 900, at most 3600).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1)]
    async_hooks: Option<Option<u64>>,
    /// When a gate or an analysis fails with traffic on the new version,
    /// hold the split and freeze for an operator (abort rolls back; resume
    /// or promote go on, the failed gate run again); rolled back after
    /// SECONDS without either (default 3600, at most a week). An alarm or
    /// an abort still rolls back at once.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1)]
    freeze_on_failure: Option<Option<u64>>,
    /// When a gate or an analysis fails with traffic on the new version,
    /// step its weight back down the schedule in reverse, each lower weight
    /// judged by the PostTraffic gate on the old version and baked; an
    /// alarm, an abort or a gate failed on the way down go to 0% at once.
    #[arg(long, conflicts_with = "freeze_on_failure")]
    gradual_rollback: bool,
    /// Another function to move in lockstep with this one (a release
    /// group, up to 20 functions in all), as FUNCTION:ALIAS=VERSION or
    /// FUNCTION:ALIAS=s3://bucket/key.zip; repeat for each. The gates run
    /// once a step for the whole group, and any failure rolls every
    /// member back.
    #[arg(long = "group", value_name = "FUNCTION:ALIAS=SOURCE")]
    group: Vec<String>,
}

/// A `--group` member: `function:alias=version` or `function:alias=s3://bucket/key`.
fn group_member(text: &str) -> Result<MemberSpec> {
    let (target, source) = text.split_once('=').with_context(|| {
        format!("--group {text}: write FUNCTION:ALIAS=VERSION or FUNCTION:ALIAS=s3://bucket/key")
    })?;
    let (function, alias) = target
        .rsplit_once(':')
        .with_context(|| format!("--group {text}: {target:?} must be FUNCTION:ALIAS"))?;
    let source = if source.starts_with("s3://") {
        let uri: S3Uri = source
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--group {text}: {e}"))?;
        VersionSource::Artifact {
            bucket: uri.bucket,
            key: uri.key,
            object_version: None,
        }
    } else {
        VersionSource::Version(source.to_owned())
    };
    Ok(MemberSpec {
        function: function.to_owned(),
        alias: alias.to_owned(),
        source,
    })
}

impl DeployArgs {
    /// The request these arguments make.
    fn spec(self) -> Result<DeploymentSpec> {
        let source = match (self.version, self.artifact) {
            (Some(v), _) => VersionSource::Version(v),
            (None, Some(uri)) => {
                let uri: S3Uri = uri.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                VersionSource::Artifact {
                    bucket: uri.bucket,
                    key: uri.key,
                    object_version: None,
                }
            }
            (None, None) => bail!("give --version or --artifact"),
        };
        Ok(DeploymentSpec {
            function: self.function,
            alias: self.alias,
            source,
            config: self
                .config
                .parse()
                .map_err(|e: ConfigError| anyhow::anyhow!("{e}"))?,
            pre_traffic_hook: self.pre_hook,
            post_traffic_hook: self.post_hook,
            alarms: self.alarms,
            on_busy: if self.refuse_if_busy {
                OnBusy::Refuse
            } else {
                OnBusy::Queue
            },
            on_manual_change: if self.freeze_on_manual_change {
                OnManualChange::Freeze
            } else {
                OnManualChange::Rollback
            },
            smoke_tests: vec![],
            smoke_tests_from: None,
            analysis: self
                .analysis
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .context("--analysis")?,
            hook_invocation: if self.async_hooks.is_some() {
                HookInvocation::Async
            } else {
                HookInvocation::Sync
            },
            hook_timeout_seconds: self.async_hooks.flatten(),
            group: self
                .group
                .iter()
                .map(|member| group_member(member))
                .collect::<Result<_>>()?,
            rollback: if self.freeze_on_failure.is_some() {
                RollbackPolicy::Freeze
            } else if self.gradual_rollback {
                RollbackPolicy::Gradual
            } else {
                RollbackPolicy::Immediate
            },
            frozen_for_seconds: self.freeze_on_failure.flatten(),
        })
    }
}

async fn run(cli: Cli) -> Result<()> {
    let env_file = cli.env_file.clone().or_else(|| {
        let default = PathBuf::from(".sluice-local/env");
        default.exists().then_some(default)
    });
    let ops = match &env_file {
        Some(path) => connect::local(path).await?,
        None => connect::deployed(&cli.stack).await?,
    };
    let out = cli.output;
    match cli.command {
        Command::Status { watch } => status(&ops, out, watch).await?,
        Command::Deploy(args) => deploy(&ops, out, (*args).spec()?).await?,
        Command::Deployment {
            command: DeploymentCommand::Show { id },
        } => show_deployment(&ops, out, &id).await?,
        Command::Promote { id } => {
            steer_deployment(&ops, out, &id, DeploymentAction::Promote).await?
        }
        Command::Pause { id } => steer_deployment(&ops, out, &id, DeploymentAction::Pause).await?,
        Command::Resume { id } => {
            steer_deployment(&ops, out, &id, DeploymentAction::Resume).await?
        }
        Command::Abort { id, reason } => {
            steer_deployment(&ops, out, &id, DeploymentAction::Abort { reason }).await?
        }
        Command::Retry { id } => steer_deployment(&ops, out, &id, DeploymentAction::Retry).await?,
        Command::Pipeline { command } => pipeline(&ops, out, command).await?,
        Command::Execution {
            command: ExecutionCommand::Show { id },
        } => show_execution(&ops, out, &id).await?,
        Command::Approve { execution, comment } => {
            approval(&ops, out, &execution, true, comment).await?
        }
        Command::Reject { execution, comment } => {
            approval(&ops, out, &execution, false, comment).await?
        }
        Command::Stop {
            execution,
            abandon,
            reason,
        } => {
            let mode = if abandon {
                StopMode::Abandon
            } else {
                StopMode::Finish
            };
            steer_execution(
                &ops,
                out,
                &execution,
                ExecutionAction::Stop { mode, reason },
            )
            .await?
        }
        Command::RetryStage { execution, all } => {
            let action = ExecutionAction::RetryStage { failed_only: !all };
            steer_execution(&ops, out, &execution, action).await?
        }
    }
    Ok(())
}

async fn deploy(ops: &Operations, out: Output, spec: DeploymentSpec) -> Result<()> {
    let submitted = ops.deploy(spec).await?;
    let id = &submitted.deployment;
    print(out, &json!(submitted), || match &submitted.queued_behind {
        Some(holder) => format!(
            "deployment {id} queued behind {holder}, which holds the alias: sluice deployment show {id}"
        ),
        None => format!("deployment {id} started: sluice deployment show {id}"),
    });
    Ok(())
}

async fn show_deployment(ops: &Operations, out: Output, id: &str) -> Result<()> {
    let view = ops.deployment(id).await?;
    print(out, &json!(view), || {
        let d = &view.deployment;
        let mut text = format!(
            "{} {}:{}  {} → {}  {}% on the new version  {}\n",
            d.id,
            d.spec.function,
            d.spec.alias,
            d.from_version.as_deref().unwrap_or("?"),
            d.to_version.as_deref().unwrap_or("?"),
            d.weight,
            d.status_text()
        );
        for line in member_lines(d) {
            text.push_str(&format!("{line}\n"));
        }
        for e in &view.timeline {
            text.push_str(&format!(
                "  {}  {}\n",
                e.at.format("%H:%M:%S%.3f"),
                e.message
            ));
        }
        text
    });
    Ok(())
}

async fn show_execution(ops: &Operations, out: Output, id: &str) -> Result<()> {
    let view = ops.execution(id).await?;
    print(out, &json!(view), || {
        let e = &view.execution;
        let mut text = format!(
            "{} {} at {} ({})  stage {}  {}\n",
            e.id,
            e.pipeline,
            &e.push.sha[..e.push.sha.len().min(7)],
            e.push.reference.name(),
            e.stage_name(),
            e.status
        );
        for a in &e.actions {
            text.push_str(&format!("  {}  {}\n", a.name, a.state));
        }
        for line in &view.timeline {
            text.push_str(&format!(
                "  {}  {}\n",
                line.at.format("%H:%M:%S%.3f"),
                line.message
            ));
        }
        text
    });
    Ok(())
}

/// An approval answered: approved or rejected, by the user running the CLI.
async fn approval(
    ops: &Operations,
    out: Output,
    execution: &str,
    approved: bool,
    comment: String,
) -> Result<()> {
    let by = std::env::var("USER").unwrap_or_else(|_| "an operator".into());
    let action = ExecutionAction::Approval {
        approved,
        by,
        comment,
    };
    steer_execution(ops, out, execution, action).await
}

async fn steer_deployment(
    ops: &Operations,
    out: Output,
    id: &str,
    action: DeploymentAction,
) -> Result<()> {
    let what = action.name();
    let retry = matches!(action, DeploymentAction::Retry);
    let after = ops.steer_deployment(id, action).await?;
    print(out, &json!({ "deployment": after }), || {
        match &after.retried_as {
            Some(new_id) if retry => format!("retry: deployment {id} is retried as {new_id}"),
            _ => format!("{what}: deployment {id} is {}", after.status_text()),
        }
    });
    Ok(())
}

async fn steer_execution(
    ops: &Operations,
    out: Output,
    id: &str,
    action: ExecutionAction,
) -> Result<()> {
    let what = action.name();
    let after = ops.steer_execution(id, action).await?;
    print(out, &json!({ "execution": after }), || {
        format!(
            "{what}: execution {id} is {} in stage {}",
            after.status,
            after.stage_name()
        )
    });
    Ok(())
}

async fn pipeline(ops: &Operations, out: Output, command: PipelineCommand) -> Result<()> {
    match command {
        PipelineCommand::Apply { file, dry_run } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let applied = ops
                .apply_pipeline(&text, None, dry_run)
                .await
                .with_context(|| file.display().to_string())?;
            print(out, &json!(applied), || {
                let (name, diff) = (&applied.pipeline, &applied.diff);
                match (applied.changed, dry_run) {
                    (false, _) => format!("pipeline {name} is unchanged"),
                    (true, true) => format!("{diff}pipeline {name} would change (dry run)"),
                    (true, false) => format!("{diff}pipeline {name} applied"),
                }
            });
        }
        PipelineCommand::List => {
            let names = ops.pipelines().await?;
            print(out, &json!({ "pipelines": names }), || names.join("\n"));
        }
        PipelineCommand::Show { name } => {
            let d = ops.pipeline(&name).await?;
            print(out, &json!({ "pipeline": d }), || {
                serde_json::to_string_pretty(&d).expect("definitions serialise")
            });
        }
    }
    Ok(())
}

async fn status(ops: &Operations, out: Output, watch: bool) -> Result<()> {
    if out == Output::Json || !watch {
        let status = ops.status().await?;
        print(out, &json!(status), || status_text(&status));
        return Ok(());
    }
    if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
        return watch_plainly(ops).await;
    }
    // Live: a bar per deployment (weight on the new version), redrawn each second.
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos:>3}% {msg}")
        .expect("a valid template")
        .progress_chars("#>.");
    let mut shown: std::collections::HashMap<String, indicatif::ProgressBar> =
        std::collections::HashMap::new();
    loop {
        let Status {
            executions,
            deployments,
            ..
        } = ops.status().await?;
        for d in &deployments {
            let bar = shown.entry(d.id.clone()).or_insert_with(|| {
                let bar = bars.add(indicatif::ProgressBar::new(100).with_style(style.clone()));
                bar.set_prefix(format!("{}:{}", d.spec.function, d.spec.alias));
                bar
            });
            bar.set_position(d.weight.round() as u64);
            bar.set_message(format!(
                "v{} → v{}  {}",
                d.from_version.as_deref().unwrap_or("?"),
                d.to_version.as_deref().unwrap_or("?"),
                d.status_text()
            ));
            // A release group's other members, each under the group's bar.
            for m in 1..d.members() {
                let bar = shown.entry(format!("{}/{m}", d.id)).or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new(100).with_style(style.clone()));
                    bar.set_prefix(format!("+ {}", d.target_name(m)));
                    bar
                });
                let member = d.member(m);
                bar.set_position(member.weight.round() as u64);
                bar.set_message(format!(
                    "v{} → v{}  in {}'s group",
                    member.from_version.as_deref().unwrap_or("?"),
                    member.to_version.as_deref().unwrap_or("?"),
                    d.id
                ));
            }
        }
        // Those no longer active have ended: their last state stays on screen.
        for (key, bar) in shown.iter() {
            let (id, member) = match key.split_once('/') {
                Some((id, m)) => (id, m.parse().unwrap_or(0)),
                None => (key.as_str(), 0),
            };
            if !bar.is_finished() && !deployments.iter().any(|d| d.id == id) {
                let ended = ops.store().load(id).await?.deployment;
                bar.set_position(ended.member(member).weight.round() as u64);
                bar.finish_with_message(ended.status_text());
            }
        }
        if deployments.is_empty() && executions.iter().all(|e| !e.status.is_running()) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A release group's other members, a line each: its alias, its versions
/// and its weight as last acknowledged.
fn member_lines(d: &sluice::domain::deployment::Deployment) -> Vec<String> {
    (1..d.members())
        .map(|m| {
            let member = d.member(m);
            if let (Some(from), Some(to)) = (&member.from_version, &member.to_version)
                && from == to
            {
                return format!("  + {} already on v{to}, left as it is", d.target_name(m));
            }
            format!(
                "  + {} {:>5.1}% v{} → v{}",
                d.target_name(m),
                member.weight,
                member.from_version.as_deref().unwrap_or("?"),
                member.to_version.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

/// What `status` shows as text.
fn status_text(status: &Status) -> String {
    let Status {
        pipelines,
        executions,
        deployments,
    } = status;
    let mut text = String::new();
    for p in pipelines {
        text.push_str(&format!("pipeline {p}\n"));
        for e in executions.iter().filter(|e| &e.pipeline == p) {
            text.push_str(&format!(
                "  {} at {}: stage {} {}\n",
                e.id,
                &e.push.sha[..e.push.sha.len().min(7)],
                e.stage_name(),
                e.status
            ));
        }
    }
    for d in deployments {
        let filled = (d.weight / 10.0).round() as usize;
        text.push_str(&format!(
            "{}:{} [{}{}] {:>5.1}% v{} → v{}  {}  ({})\n",
            d.spec.function,
            d.spec.alias,
            "#".repeat(filled),
            ".".repeat(10 - filled.min(10)),
            d.weight,
            d.from_version.as_deref().unwrap_or("?"),
            d.to_version.as_deref().unwrap_or("?"),
            d.status_text(),
            d.id
        ));
        for line in member_lines(d) {
            text.push_str(&format!("{line}\n"));
        }
    }
    if pipelines.is_empty() && deployments.is_empty() {
        text.push_str("no pipelines and no active deployments\n");
    }
    text.trim_end().to_owned()
}

/// `status --watch` when its output is a file or a pipe: no bars, but a
/// plain snapshot, under the time it was taken, each time what it shows
/// changes (as `kubectl get --watch` prints rows), until nothing runs.
async fn watch_plainly(ops: &Operations) -> Result<()> {
    let mut last = String::new();
    let mut active: Vec<String> = Vec::new();
    loop {
        let status = ops.status().await?;
        let mut text = status_text(&status);
        // Those no longer active have ended: how, once.
        for id in &active {
            if !status.deployments.iter().any(|d| &d.id == id) {
                let ended = ops.store().load(id).await?.deployment;
                let (function, alias) = (&ended.spec.function, &ended.spec.alias);
                text.push_str(&format!(
                    "\n{function}:{alias} ended: {}  ({id})",
                    ended.status_text()
                ));
            }
        }
        active = status.deployments.iter().map(|d| d.id.clone()).collect();
        if text != last {
            let at = SystemClock.now().format("%Y-%m-%dT%H:%M:%SZ");
            emit(&format!("--- {at}\n{text}"));
            last = text;
        }
        let running = !status.deployments.is_empty()
            || status.executions.iter().any(|e| e.status.is_running());
        if !running {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
