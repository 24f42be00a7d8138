//! `sluice-demo`: the whole of Sluice on the local stack, from nothing.
//!
//! `run` starts the local stack from template.yaml, creates the sample app
//! (`greeter`, alias `live`), applies `pipelines/demo.yaml`, and makes a git
//! repository whose `post-receive` hook plays GitHub and CI (`post-receive`
//! below). Then it pushes three releases while traffic flows through the
//! alias: a healthy one (promoted through every gated shift), one that cannot
//! start (stopped by the PreTraffic gate before any traffic), and one that
//! fails real callers only (caught by analysis after the first shift). A
//! fourth push, to the `release-group` branch (`pipelines/demo-group.yaml`),
//! moves the greeter and a second sample function, `greeter-worker`,
//! together: one release group, promoted or rolled back as a whole. It ends
//! with the timelines and a verdict per push, and stops all it started.
//! The commit statuses Sluice posts go to a recorder that stands in for
//! GitHub (`github`), and each push shows its own.

mod github;
mod hook;
mod traffic;

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_lambda::client::Waiters;
use clap::{Parser, Subcommand};
use serde::Serialize;
use sluice::domain::deployment::{EventKind, Phase};
use sluice::domain::execution::ActionRef;
use sluice::orchestrator::deployment_id;
use sluice::ports::{Deployments as _, Executions as _};
use sluice::store::Store;
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REPOSITORY: &str = "demo/greeter";
/// The sample app's functions: the greeter, and the worker the fourth
/// push releases with it.
const FUNCTIONS: [&str; 2] = ["greeter", "greeter-worker"];
/// The deployment an execution's deploy action started: the demo pipeline's
/// stage `live`, its first action, first attempt.
fn live_deployment(execution: &str) -> String {
    deployment_id(
        execution,
        &ActionRef {
            stage: 1,
            action: 0,
            attempt: 1,
        },
    )
}
/// The demo's time: every time the local stack keeps, a minute of Lambda's
/// metrics included, passes 20 times faster.
const DEMO_SCALE: f64 = 0.05;
/// How long one push may take, from `git push` to the execution's end.
const PUSH_DEADLINE: Duration = Duration::from_secs(150);

#[derive(Parser)]
#[command(
    about = "Sluice's demo on the local stack: four pushes, four verdicts",
    after_help = "Examples:\n  make demo                      # builds, then runs `sluice-demo run`\n  sluice-demo run --json         # a JSON summary as the last line (the test suite reads it)"
)]
struct Cli {
    #[command(subcommand)]
    command: DemoCommand,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Run the demo from the checkout's root.
    Run {
        /// Print a JSON summary as the last line.
        #[arg(long)]
        json: bool,
    },
    /// The demo repository's post-receive hook (git runs it).
    PostReceive {
        #[arg(long)]
        env_file: PathBuf,
        #[arg(long)]
        repository: String,
        /// The built sample app, packed into each commit's build.
        #[arg(long)]
        greeter: PathBuf,
    },
}

/// One push of the demo: what it ships, where, and what Sluice must make of it.
struct Release {
    title: &'static str,
    settings: &'static str,
    /// The branch pushed, and the pipeline that takes its pushes.
    branch: &'static str,
    pipeline: &'static str,
    expected: Expected,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Promoted,
    RolledBackByGate,
    RolledBackByAnalysis,
    /// Ended otherwise: an alarm, an abort, a gate after the first shift.
    EndedOtherwise,
}

const RELEASES: [Release; 4] = [
    Release {
        title: "a friendlier greeting",
        settings: "GREETER_MODE=healthy\n",
        branch: "main",
        pipeline: "demo",
        expected: Expected::Promoted,
    },
    Release {
        title: "a release that cannot start",
        settings: "GREETER_MODE=crash\n",
        branch: "main",
        pipeline: "demo",
        expected: Expected::RolledBackByGate,
    },
    Release {
        title: "stricter name parsing",
        settings: "# Names with digits in them now fail: the smoke test's do not have any.\nGREETER_MODE=picky\n",
        branch: "main",
        pipeline: "demo",
        expected: Expected::RolledBackByAnalysis,
    },
    Release {
        title: "the greeter and its worker, released together",
        settings: "# One release group: both functions move in lockstep.\nGREETER_MODE=healthy\n",
        branch: "release-group",
        pipeline: "demo-group",
        expected: Expected::Promoted,
    },
];

#[derive(Debug, Serialize)]
struct Verdict {
    push: usize,
    title: &'static str,
    sha: String,
    execution: String,
    deployment: String,
    expected: Expected,
    outcome: Expected,
    /// The phase it ended in, as stored.
    phase: Phase,
    /// Whether any traffic was shifted to the new version.
    shifted: bool,
    /// Each alias it moved and the version it left there: one, or a
    /// release group's every member.
    members: Vec<String>,
    seconds: f64,
    traffic: traffic::Tally,
    /// The last commit status of each context, as GitHub would show them.
    statuses: std::collections::BTreeMap<String, github::Status>,
}

#[tokio::main]
async fn main() {
    let outcome = match Cli::parse().command {
        DemoCommand::Run { json } => run(json).await,
        DemoCommand::PostReceive {
            env_file,
            repository,
            greeter,
        } => hook::post_receive(&env_file, &repository, &greeter).await,
    };
    if let Err(e) = outcome {
        eprintln!("sluice-demo: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A step of the demo, with the time since it started.
fn say(line: impl AsRef<str>) {
    let elapsed = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!("==> [{elapsed:5.1} s] {}", line.as_ref());
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.com")
        .env("GIT_COMMITTER_NAME", "Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.com")
        .output()
        .context("running git (is it installed?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        stderr.trim()
    );
    // The hook's lines come back through git as `remote: ...`.
    for line in stderr.lines().filter(|l| l.starts_with("remote: ")) {
        println!("    {line}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs the `sluice` CLI against the demo's stack, as an operator would.
fn sluice(env_file: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(build_dir().join("sluice"))
        .arg("--env-file")
        .arg(env_file)
        .args(args)
        .output()
        .context("running sluice (cargo build --workspace --bins builds it)")?;
    ensure!(
        out.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn run(json: bool) -> Result<()> {
    let started = *STARTED.get_or_init(Instant::now);
    let root = std::env::current_dir()?;
    ensure!(
        root.join("template.yaml").exists(),
        "run the demo from the checkout's root (make demo does)"
    );
    let work = tempfile::Builder::new().prefix("sluice-demo").tempdir()?;
    let state = work.path().join("stack");
    let mut opts = StackOptions::for_checkout(&root, &build_dir(), &state);
    opts.template = Some(root.join("template.yaml"));
    // Sluice may rewrite the sample app's functions, and nothing else.
    opts.parameters
        .push(("ManagedFunctions".into(), "greeter*".into()));
    // A minute in 3 s: Lambda's metrics come a (scaled) minute at a time,
    // readable a while after it closes, as on AWS, and analysis waits for them.
    opts.schedule_scale = DEMO_SCALE;
    let github = github::StatusRecorder::start().await?;
    opts.parameters
        .push(("GitHubApiUrl".into(), github.url.clone()));
    say("starting the local stack (moto + sluice-local) with template.yaml's resources");
    let stack = LocalStack::start(&opts)?;
    let env_file = state.join("env");
    let outcome = tokio::select! {
        outcome = demo(&stack, &github, &env_file, work.path(), &root) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    say("stopping the local stack");
    drop(stack);
    let verdicts = outcome?;
    println!();
    for v in &verdicts {
        println!(
            "push {} ({}): {}  [{:.0} s; traffic {}]",
            v.push,
            v.title,
            describe(v),
            v.seconds,
            v.traffic
        );
    }
    let total = started.elapsed().as_secs_f64();
    println!("demo finished in {total:.0} s");
    if json {
        println!(
            "{}",
            serde_json::json!({ "pushes": verdicts, "seconds": total })
        );
    }
    let wrong: Vec<String> = verdicts
        .iter()
        .filter(|v| v.outcome != v.expected)
        .map(|v| {
            format!(
                "push {} ended {:?}, not {:?}",
                v.push, v.outcome, v.expected
            )
        })
        .collect();
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(())
}

fn describe(v: &Verdict) -> String {
    match (&v.phase, v.outcome) {
        (Phase::Promoted, _) if v.members.len() > 1 => format!(
            "PROMOTED as one release group: {}, every shift gated for both",
            v.members.join(", ")
        ),
        (Phase::Promoted, _) => "PROMOTED: live serves the new version, every shift gated".into(),
        (Phase::RolledBack { reason }, _) if v.members.len() > 1 => format!(
            "ROLLED BACK as one release group ({}): {reason}",
            v.members.join(", ")
        ),
        (Phase::RolledBack { reason }, Expected::RolledBackByGate) => {
            format!("ROLLED BACK by a gate before any traffic: {reason}")
        }
        (Phase::RolledBack { reason }, Expected::RolledBackByAnalysis) => {
            format!("ROLLED BACK by analysis after the first shift: {reason}")
        }
        (Phase::RolledBack { reason }, _) => format!("ROLLED BACK: {reason}"),
        (other, _) => format!("ended {other:?}"),
    }
}

/// Everything between the stack's start and its stop.
async fn demo(
    stack: &LocalStack,
    github: &github::StatusRecorder,
    env_file: &Path,
    work: &Path,
    root: &Path,
) -> Result<Vec<Verdict>> {
    let config = stack.sdk_config().await;
    let lambda = stack.lambda().await;
    let store = Store::new(
        aws_sdk_dynamodb::Client::new(&config),
        stack.var("SLUICE_RESOURCE_STATE_TABLE"),
        chrono::Duration::days(1),
    );

    say(
        "creating the sample app: functions greeter and greeter-worker, version 1 behind alias live",
    );
    let greeter = build_dir().join("greeter");
    let binary =
        std::fs::read(&greeter).with_context(|| format!("reading {}", greeter.display()))?;
    let role = aws_sdk_iam::Client::new(&config)
        .create_role()
        .role_name("greeter")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await?
        .role()
        .context("the role")?
        .arn()
        .to_owned();
    for function in FUNCTIONS {
        lambda
            .create_function()
            .function_name(function)
            .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .timeout(5)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(bootstrap_zip(&binary, &[("release", b"initial")]).into())
                    .build(),
            )
            .send()
            .await?;
    }
    for function in FUNCTIONS {
        // Lambda creates a function `Pending`: it can be published once `Active`.
        lambda
            .wait_until_function_active_v2()
            .function_name(function)
            .wait(Duration::from_secs(60))
            .await
            .with_context(|| format!("waiting for {function} to be active"))?;
        let first = lambda
            .publish_version()
            .function_name(function)
            .send()
            .await?;
        lambda
            .create_alias()
            .function_name(function)
            .name("live")
            .function_version(first.version().unwrap_or("1"))
            .send()
            .await?;
    }

    say("applying pipelines/demo.yaml and pipelines/demo-group.yaml with the CLI");
    for pipeline in ["demo", "demo-group"] {
        let file = format!("pipelines/{pipeline}.yaml");
        let applied = sluice(
            env_file,
            &[
                "pipeline",
                "apply",
                "-f",
                &root.join(&file).to_string_lossy(),
            ],
        )?;
        // The whole definition is the diff of a new pipeline: its verdict suffices.
        println!("    $ sluice pipeline apply -f {file}");
        println!("    {}", applied.lines().last().unwrap_or_default());
        let listed = sluice(env_file, &["pipeline", "list"])?;
        ensure!(
            listed.lines().any(|l| l == pipeline),
            "the pipeline {pipeline} was not applied"
        );
    }

    say(format!(
        "commit statuses: a token in the stack's GitHub token secret; GitHub's API stands in at {}",
        github.url
    ));
    aws_sdk_secretsmanager::Client::new(&config)
        .put_secret_value()
        .secret_id(stack.var("SLUICE_RESOURCE_GIT_HUB_TOKEN_SECRET"))
        .secret_string(github::TOKEN)
        .send()
        .await
        .context("putting the GitHub token")?;

    say("creating the repository: its post-receive hook posts signed GitHub webhooks and builds");
    let bare = work.join("greeter.git");
    let clone = work.join("greeter");
    git(work, &["init", "--quiet", "--bare", "greeter.git"])?;
    let hook = bare.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec {} post-receive --env-file {} --repository {REPOSITORY} --greeter {}\n",
            shell_quote(&std::env::current_exe()?),
            shell_quote(env_file),
            shell_quote(&greeter)
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    git(work, &["clone", "--quiet", "greeter.git", "greeter"])?;
    git(&clone, &["checkout", "--quiet", "-b", "main"])?;
    std::fs::write(
        clone.join("README.md"),
        "# greeter\n\nSays hello. Every push to main goes to `live` through Sluice.\n",
    )?;

    say("demo traffic: two callers invoke greeter:live as visitor-N all along");
    let traffic = traffic::Traffic::start(lambda.clone());

    let mut verdicts = Vec::new();
    for (n, release) in RELEASES.iter().enumerate() {
        let push = n + 1;
        println!();
        say(format!(
            "push {push}: {} ({})",
            release.title,
            release.settings.lines().last().unwrap_or_default()
        ));
        if git(&clone, &["branch", "--show-current"])? != release.branch {
            git(&clone, &["checkout", "--quiet", "-B", release.branch])?;
        }
        std::fs::write(clone.join("greeter.env"), release.settings)?;
        git(&clone, &["add", "-A"])?;
        git(&clone, &["commit", "--quiet", "-m", release.title])?;
        let sha = git(&clone, &["rev-parse", "HEAD"])?;
        let pushed = Instant::now();
        traffic.next_window();
        git(&clone, &["push", "--quiet", "origin", release.branch])?;

        let execution = wait(PUSH_DEADLINE, "the push's execution", || async {
            Ok(store.execution_for_commit(release.pipeline, &sha).await?)
        })
        .await?;
        follow(env_file, &store, &execution).await?;
        let deployment = live_deployment(&execution);
        let d = store.load(&deployment).await?.deployment;
        let timeline = store.events(&deployment).await?;
        let shifted = timeline.iter().any(|e| e.kind == EventKind::Shifted);
        let outcome = match &d.phase {
            Phase::Promoted => Expected::Promoted,
            Phase::RolledBack { .. } if !shifted => Expected::RolledBackByGate,
            Phase::RolledBack { reason } if reason.starts_with("analysis failed") => {
                Expected::RolledBackByAnalysis
            }
            _ => Expected::EndedOtherwise,
        };
        let statuses = commit_statuses(github, &sha).await?;
        let members = (0..d.members())
            .map(|m| {
                let member = d.member(m);
                let left = match d.phase {
                    Phase::Promoted => member.to_version,
                    _ => member.from_version,
                };
                format!("{} on v{}", d.target_name(m), left.unwrap_or_default())
            })
            .collect();
        verdicts.push(Verdict {
            members,
            push,
            title: release.title,
            statuses,
            sha,
            execution,
            deployment,
            expected: release.expected,
            outcome,
            phase: d.phase,
            shifted,
            seconds: pushed.elapsed().as_secs_f64(),
            traffic: traffic.window(),
        });
    }
    traffic.stop().await;
    println!();
    say("the deployments' timelines, as `sluice deployment show` prints them");
    for v in &verdicts {
        println!("    $ sluice deployment show {}", v.deployment);
        print!(
            "{}",
            indent(&sluice(env_file, &["deployment", "show", &v.deployment])?)
        );
    }
    Ok(verdicts)
}

/// The commit statuses of `sha` once each context's is final, as GitHub
/// would show them, printed.
async fn commit_statuses(
    github: &github::StatusRecorder,
    sha: &str,
) -> Result<std::collections::BTreeMap<String, github::Status>> {
    // The build's, the stage live's and its deployment's.
    let latest = wait(Duration::from_secs(20), "the commit's statuses", || async {
        let latest = github.latest(sha);
        Ok((latest.len() == 3 && latest.values().all(|s| s.state != "pending")).then_some(latest))
    })
    .await?;
    println!(
        "    GitHub statuses of {} ({} posted on the way):",
        &sha[..7],
        github.count(sha)
    );
    for s in latest.values() {
        println!("      {:<8} {:<30} {}", s.state, s.context, s.description);
    }
    Ok(latest)
}

/// Shows the execution until it ends: the CLI's live status on a terminal,
/// the timelines' new lines otherwise.
async fn follow(env_file: &Path, store: &Store, execution: &str) -> Result<()> {
    let ended = || async {
        let e = store.load_execution(execution).await?.execution;
        Ok(
            (!e.status.is_running() && e.status != sluice::domain::execution::Status::Queued)
                .then_some(e),
        )
    };
    if std::io::stdout().is_terminal() {
        let mut watch = tokio::process::Command::new(build_dir().join("sluice"))
            .arg("--env-file")
            .arg(env_file)
            .args(["status", "--watch"])
            .kill_on_drop(true)
            .spawn()
            .context("running sluice status --watch")?;
        wait(PUSH_DEADLINE, "the execution to end", ended).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), watch.wait()).await;
        return Ok(());
    }
    let mut shown = 0;
    let deadline = Instant::now() + PUSH_DEADLINE;
    loop {
        let mut lines: Vec<(chrono::DateTime<chrono::Utc>, String)> = store
            .execution_events(execution)
            .await?
            .into_iter()
            .map(|e| (e.at, e.message))
            .collect();
        if let Ok(events) = store.events(&live_deployment(execution)).await {
            lines.extend(events.into_iter().map(|e| (e.at, e.message)));
        }
        lines.sort_by_key(|(at, _)| *at);
        for (at, message) in lines.iter().skip(shown) {
            println!("    {}  {message}", at.format("%H:%M:%S%.3f"));
        }
        shown = lines.len();
        if ended().await?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("execution {execution} did not end within {PUSH_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` until it gives a value, failing after `deadline`.
async fn wait<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > until {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}
