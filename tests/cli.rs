//! The `sluice` CLI against the local stack (its env file), as an operator uses it.

mod support;

use anyhow::{Context, Result};
use serde_json::Value;
use sluice::commits::sign;
use sluice_local::launcher::build_dir;
use std::process::Command;
use std::time::Duration;
use support::*;

struct Cli {
    stack: TestStack,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Result<Run> {
        let out = Command::new(build_dir().join("sluice"))
            .arg("--env-file")
            .arg(self.stack.dir.path().join("state/env"))
            .args(args)
            .current_dir(workspace_root())
            .output()
            .context("running sluice (cargo build --workspace --bins builds it)")?;
        Ok(Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs with `--output json` and parses the answer; the command must succeed.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let run = self.run(&all)?;
        anyhow::ensure!(run.ok, "sluice {args:?} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {}", run.stdout))
    }

    /// Runs a command that must fail with one line naming the problem.
    fn fails(&self, args: &[&str], expected: &str) -> Result<()> {
        let run = self.run(args)?;
        assert!(!run.ok, "sluice {args:?} succeeded: {}", run.stdout);
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        assert!(
            run.stderr.starts_with("sluice: ") && run.stderr.contains(expected),
            "sluice {args:?}: {}",
            run.stderr
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subcommand_works_against_the_local_stack() -> Result<()> {
    // The greeter and its release-group sibling are Sluice's to deploy.
    let stack = start_stack_without(
        Some("template.yaml"),
        &[("ManagedFunctions", "greeter*")],
        0.1,
        &["CodePipelineActionFunction", "PostTrafficFunction"],
    )?;
    greeter_live_on_1(&stack, 3).await?;
    let cli = Cli { stack };

    // Pipelines: invalid ones are refused with every problem; apply shows the diff.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nsource: {repository: r}\nstages: []\nexecution_mode: often\n",
    )?;
    cli.fails(
        &["pipeline", "apply", "-f", bad.to_str().unwrap()],
        "bad.yaml: not a valid pipeline: execution_mode:",
    )?;
    let gated = dir.path().join("gated.yaml");
    std::fs::write(
        &gated,
        "name: gated\nsource: {repository: acme/greeter}\nstages:\n  - name: approve\n    actions: [{name: ok, kind: approval}]\n",
    )?;
    let path = gated.to_str().unwrap();
    let dry = cli.json(&["pipeline", "apply", "-f", path, "--dry-run"])?;
    assert_eq!(
        (dry["changed"].clone(), dry["applied"].clone()),
        (true.into(), false.into())
    );
    assert!(
        dry["diff"]
            .as_str()
            .unwrap_or_default()
            .contains("+  \"name\": \"gated\"")
    );
    assert_eq!(
        cli.json(&["pipeline", "list"])?["pipelines"],
        serde_json::json!([])
    );
    assert_eq!(
        cli.json(&["pipeline", "apply", "-f", path])?["applied"],
        true
    );
    assert_eq!(
        cli.json(&["pipeline", "apply", "-f", path])?["changed"],
        false
    );
    assert_eq!(
        cli.json(&["pipeline", "list"])?["pipelines"],
        serde_json::json!(["gated"])
    );
    assert_eq!(
        cli.json(&["pipeline", "show", "gated"])?["pipeline"]["stages"][0]["name"],
        "approve"
    );
    cli.fails(&["pipeline", "show", "nope"], "no pipeline nope")?;

    // Deployments: deploy, watch it end, and transitions that do not apply.
    let started = cli.json(&["deploy", "greeter", "--alias", "live", "--version", "2"])?;
    let id = started["deployment"].as_str().context("id")?.to_owned();
    let shown = wait_for(
        "the deployment to be promoted",
        Duration::from_secs(60),
        || async {
            let shown = cli.json(&["deployment", "show", &id])?;
            Ok((shown["deployment"]["phase"]["phase"] == "promoted").then_some(shown))
        },
    )
    .await?;
    assert!(
        shown["timeline"].as_array().is_some_and(|t| t.len() >= 3),
        "{shown}"
    );
    cli.fails(
        &["pause", &id],
        &format!("cannot pause deployment {id}: it has no bake left to pause at (promoted)"),
    )?;
    cli.fails(&["deployment", "show", "nope"], "no deployment nope")?;
    let text = cli.run(&["deployment", "show", &id])?;
    assert!(
        text.ok && text.stdout.contains("greeter:live  1 → 2"),
        "{}",
        text.stdout
    );

    let slow = cli.json(&[
        "deploy",
        "greeter",
        "--alias",
        "live",
        "--version",
        "3",
        "--config",
        "canary:10:1h",
    ])?;
    let slow = slow["deployment"].as_str().context("id")?.to_owned();
    wait_for("the canary to bake", Duration::from_secs(60), || async {
        let shown = cli.json(&["deployment", "show", &slow])?;
        Ok((shown["deployment"]["phase"]["phase"] == "baking").then_some(()))
    })
    .await?;
    let status = cli.json(&["status"])?;
    let active = &status["deployments"][0];
    assert_eq!(
        (active["id"].as_str(), active["weight"].as_f64()),
        (Some(slow.as_str()), Some(10.0))
    );
    let text = cli.run(&["status"])?.stdout;
    assert!(
        text.contains("greeter:live [#.........]  10.0% v2 → v3  step 1/2: baking"),
        "{text}"
    );
    // A busy alias: --refuse-if-busy fails at once; otherwise the deployment
    // is queued, and the CLI says behind which.
    let again_v2 = ["deploy", "greeter", "--alias", "live", "--version", "2"];
    cli.fails(
        &[&again_v2[..], &["--refuse-if-busy"]].concat(),
        &format!("greeter:live is busy with deployment {slow}"),
    )?;
    let queued = cli.run(&again_v2)?;
    assert!(
        queued.ok && queued.stdout.contains(&format!("queued behind {slow}")),
        "{}{}",
        queued.stdout,
        queued.stderr
    );
    let queued_id = queued
        .stdout
        .split_whitespace()
        .nth(1)
        .context("the queued deployment's id")?
        .to_owned();
    cli.json(&["abort", &queued_id, "--reason", "not now"])?;
    // What cannot start is refused before anything is written.
    cli.fails(
        &["deploy", "greeter", "--alias", "live", "--version", "9"],
        "version 9 of greeter does not exist",
    )?;
    cli.fails(
        &["deploy", "greeter", "--alias", "staging", "--version", "2"],
        "alias greeter:staging does not exist",
    )?;
    assert_eq!(cli.json(&["pause", &slow])?["deployment"]["paused"], true);
    cli.fails(&["pause", &slow], "(paused)")?;
    assert_eq!(cli.json(&["resume", &slow])?["deployment"]["paused"], false);
    let aborted = cli.json(&["abort", &slow, "--reason", "wrong build"])?;
    assert_eq!(aborted["deployment"]["phase"]["phase"], "rolled_back");
    let retried = cli.json(&["retry", &slow])?;
    assert!(retried["deployment"]["retried_as"].is_string());
    let again = retried["deployment"]["retried_as"]
        .as_str()
        .context("retried as")?
        .to_owned();
    cli.fails(
        &["retry", &slow],
        &format!("cannot retry deployment {slow}: it was already retried as {again}"),
    )?;
    cli.fails(
        &[
            "deploy",
            "greeter",
            "--alias",
            "live",
            "--version",
            "2",
            "--config",
            "fast",
        ],
        "config",
    )?;
    // Analysis settings are strict, and checked against the config.
    let deploy_v2 = ["deploy", "greeter", "--alias", "live", "--version", "2"];
    cli.fails(
        &[&deploy_v2[..], &["--analysis", r#"{"max_eror_rate": 2}"#]].concat(),
        "--analysis: unknown field `max_eror_rate`",
    )?;
    cli.fails(
        &[&deploy_v2[..], &["--analysis", r#"{"max_error_rate": 2}"#]].concat(),
        "analysis: AllAtOnce shifts all traffic at once",
    )?;

    // Executions: a push waits for approval; approve it; what no longer applies is refused.
    let secret = webhook_secret(&cli.stack).await?;
    let body = std::fs::read(workspace_root().join("events/github-push.json"))?;
    let answer: Value = reqwest::Client::new()
        .post(cli.stack.var("SLUICE_URL_SOURCE_FUNCTION"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign(&body, secret.as_bytes()))
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    let execution = answer["executions"][0]["execution"]
        .as_str()
        .context("execution")?
        .to_owned();
    wait_for("the approval to wait", Duration::from_secs(60), || async {
        let shown = cli.json(&["execution", "show", &execution])?;
        Ok((shown["execution"]["actions"][0]["state"]["state"] == "running").then_some(()))
    })
    .await?;
    let approved = cli.json(&["approve", &execution, "--comment", "ship it"])?;
    assert_eq!(approved["execution"]["status"], "succeeded");
    cli.fails(&["approve", &execution], "is not waiting for an approval")?;
    cli.fails(&["stop", &execution], "cannot stop execution")?;
    cli.fails(&["retry-stage", &execution], "cannot retry-stage execution")?;
    cli.fails(&["execution", "show", "nope"], "no execution nope")?;
    let timeline = cli.run(&["execution", "show", &execution])?;
    assert!(
        timeline.stdout.contains("approved by"),
        "{}",
        timeline.stdout
    );

    cli.fails(
        &["abort", &again, "--reason", &"x".repeat(1_001)],
        "reason is 1001 characters long: the most is 1000",
    )?;
    cli.json(&["abort", &again])?;

    // Off a terminal, a live status prints a plain snapshot each time it
    // changes, says how each deployment ended, and ends by itself.
    let watched = cli.json(&[
        "deploy",
        "greeter",
        "--alias",
        "live",
        "--version",
        "3",
        "--config",
        "linear:50:2s",
    ])?;
    let watched = watched["deployment"].as_str().context("id")?.to_owned();
    let watch = cli.run(&["status", "--watch"])?;
    assert!(watch.ok, "{}", watch.stderr);
    assert!(
        watch.stdout.starts_with("--- ") && !watch.stdout.contains('\u{1b}'),
        "plain text: {}",
        watch.stdout
    );
    assert!(
        watch.stdout.contains("greeter:live [")
            && watch
                .stdout
                .contains(&format!("greeter:live ended: promoted  ({watched})")),
        "{}",
        watch.stdout
    );

    // A reader that goes away (`| head -1`) ends a command quietly, exit 0.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let piped = Command::new(build_dir().join("sluice"))
        .arg("--env-file")
        .arg(cli.stack.dir.path().join("state/env"))
        .args(["deployment", "show", &watched])
        .stdout(writer)
        .output()?;
    assert!(
        piped.status.success() && piped.stderr.is_empty(),
        "{:?}: {}",
        piped.status,
        String::from_utf8_lossy(&piped.stderr)
    );

    // A release group: refused with each problem named before anything is
    // written; then promoted in lockstep, each member shown.
    live_on_1(&cli.stack, "greeter-worker", 2).await?;
    cli.fails(
        &[&deploy_v2[..], &["--group", "worker=2"]].concat(),
        "--group worker=2: \"worker\" must be FUNCTION:ALIAS",
    )?;
    cli.fails(
        &[&deploy_v2[..], &["--group", "greeter:live=3"]].concat(),
        "group[0]: greeter:live is in the group twice",
    )?;
    cli.fails(
        &[
            &deploy_v2[..],
            &[
                "--group",
                "greeter-worker:live=7",
                "--group",
                "greeter-worker:staging=2",
            ],
        ]
        .concat(),
        "version 7 of greeter-worker does not exist; alias greeter-worker:staging does not exist",
    )?;
    let grouped = cli.json(&[&deploy_v2[..], &["--group", "greeter-worker:live=2"]].concat())?;
    let grouped = grouped["deployment"].as_str().context("id")?.to_owned();
    let shown = wait_for(
        "the group to be promoted",
        Duration::from_secs(60),
        || async {
            let shown = cli.run(&["deployment", "show", &grouped])?;
            Ok(shown.stdout.contains("promoted").then_some(shown))
        },
    )
    .await?;
    assert!(
        shown
            .stdout
            .contains("  + greeter-worker:live 100.0% v1 → v2"),
        "{}",
        shown.stdout
    );

    // --help has examples.
    let help = cli.run(&["--help"])?;
    assert!(help.ok && help.stdout.contains("Examples:"));
    Ok(())
}
