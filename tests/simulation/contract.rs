//! The table model keeps the simulation honest only if it answers as the
//! real table does: one script of conditional writes, locks, index reads and
//! execution claims, run against `Store` on moto and against `MemoryTable`,
//! must give the same answers.

use super::dice::Dice;
use super::model::MemoryTable;
use super::support::{start_stack_without, template_store};
use sluice::domain::deployment::{
    AliasLeft, Deployment, DeploymentSpec, OnBusy, Phase, Time, VersionSource,
};
use sluice::domain::execution::{Execution, Status};
use sluice::domain::pipeline::{GitRef, PipelineDefinition, Push};
use sluice::ports::Executions;
use sluice::store::StoreError;
use sluice::store::keys::Lock;

fn spec(alias: &str) -> DeploymentSpec {
    DeploymentSpec {
        function: "app".into(),
        alias: alias.into(),
        source: VersionSource::Version("2".into()),
        config: "canary:10:1m".parse().unwrap(),
        pre_traffic_hook: None,
        post_traffic_hook: None,
        alarms: vec![],
        on_manual_change: Default::default(),
        on_busy: OnBusy::Queue,
        smoke_tests: vec![],
        smoke_tests_from: None,
        analysis: None,
        hook_invocation: Default::default(),
        hook_timeout_seconds: None,
        rollback: Default::default(),
        frozen_for_seconds: None,
        group: vec![],
    }
}

/// An outcome as both tables can give it: the value, or the error's kind.
fn said<T: std::fmt::Debug>(outcome: Result<T, StoreError>) -> String {
    match outcome {
        Ok(value) => format!("{value:?}"),
        Err(StoreError::Conflict(id)) => format!("conflict {id}"),
        Err(StoreError::AlreadyExists(id)) => format!("exists {id}"),
        Err(StoreError::NotFound(id)) => format!("not found {id}"),
        Err(e) => format!("other error: {e}"),
    }
}

async fn script<T: Executions>(table: &T, now: Time) -> Vec<String> {
    let mut out = Vec::new();
    let at = |secs: i64| now + chrono::Duration::seconds(secs);
    let (first, _) = Deployment::create("c-first", spec("live"), at(0));
    let (mut queued, _) = Deployment::create("c-queued", spec("live"), at(1));
    queued.phase = Phase::Queued {
        holder: "c-first".into(),
        member: 0,
    };
    let mut watched = spec("other");
    watched.alarms = vec!["errors".into()];
    let (mut baking, _) = Deployment::create("c-baking", watched, at(2));
    baking.phase = Phase::Baking {
        step: 0,
        until: at(30),
    };
    let (mut paused, _) = Deployment::create("c-paused", spec("third"), at(3));
    paused.phase = Phase::Baking {
        step: 0,
        until: at(5),
    };
    paused.paused = true;
    // Queued behind the same holder, later: second in line.
    let (mut queued_later, _) = Deployment::create("c-queued-later", spec("live"), at(4));
    queued_later.phase = queued.phase.clone();
    for d in [&first, &queued, &baking, &paused, &queued_later] {
        out.push(said(table.create(d, &[]).await.map(|s| s.version)));
    }
    out.push(said(table.create(&first, &[]).await.map(|s| s.version)));
    out.push(said(table.load("c-missing").await.map(|s| s.version)));
    // Saves are conditional on the version loaded.
    let mut moved = first.clone();
    moved.phase = Phase::PreTraffic { step: 0 };
    out.push(said(table.save(&moved, 1, &[]).await.map(|s| s.version)));
    out.push(said(table.save(&moved, 1, &[]).await.map(|s| s.version)));
    out.push(said(
        table
            .load("c-first")
            .await
            .map(|s| (s.version, s.deployment.phase)),
    ));
    // The lock: free, held, taken again by its holder, released only by it.
    out.push(said(
        table
            .acquire_lock(&Lock::alias("app", "live"), "c-first", at(0))
            .await,
    ));
    out.push(said(
        table
            .acquire_lock(&Lock::alias("app", "live"), "c-queued", at(0))
            .await,
    ));
    out.push(said(
        table
            .acquire_lock(&Lock::alias("app", "live"), "c-first", at(0))
            .await,
    ));
    let left = AliasLeft {
        version: "2".into(),
        revision: "r-7".into(),
        function_arn: Some("arn:aws:lambda:us-east-1:123456789012:function:app".into()),
    };
    out.push(said(
        table
            .release_lock(&Lock::alias("app", "live"), "c-queued", Some(&left))
            .await,
    ));
    out.push(said(table.lock_holder(&Lock::alias("app", "live")).await));
    out.push(said(
        table
            .release_lock(&Lock::alias("app", "live"), "c-first", Some(&left))
            .await,
    ));
    out.push(said(table.lock_holder(&Lock::alias("app", "live")).await));
    // How the last holder left the alias goes to the next; a release that
    // does not know it clears it.
    let without_arn = AliasLeft {
        function_arn: None,
        ..left.clone()
    };
    for release in [Some(&without_arn), None] {
        out.push(said(
            table
                .acquire_lock(&Lock::alias("app", "live"), "c-next", at(1))
                .await,
        ));
        out.push(said(
            table
                .release_lock(&Lock::alias("app", "live"), "c-next", release)
                .await,
        ));
    }
    out.push(said(
        table
            .acquire_lock(&Lock::alias("app", "live"), "c-next", at(1))
            .await,
    ));
    out.push(said(
        table
            .release_lock(&Lock::alias("app", "live"), "c-next", None)
            .await,
    ));
    // The index: what is active, due, stuck and queued, in its order.
    out.push(said(table.active().await));
    for secs in [0, 10, 40, 200, 100_000] {
        out.push(said(table.due(at(secs)).await));
        out.push(said(table.stuck(at(secs)).await));
    }
    out.push(said(table.queued_for("app", "live").await));
    // What watches an alarm, with the version to save against.
    for alarm in ["errors", "latency"] {
        out.push(said(table.watching(alarm).await.map(|stored| {
            stored
                .into_iter()
                .map(|s| (s.deployment.id, s.version))
                .collect::<Vec<_>>()
        })));
    }
    out.push(said(table.queued_for("app", "other").await));
    // Out of the queue (its turn came): the next in line is the later one.
    let mut turn = queued.clone();
    turn.phase = Phase::Created;
    out.push(said(table.save(&turn, 1, &[]).await.map(|s| s.version)));
    out.push(said(table.queued_for("app", "live").await));
    let mut done = moved.clone();
    done.phase = Phase::Promoted;
    out.push(said(table.save(&done, 2, &[]).await.map(|s| s.version)));
    out.push(said(table.active().await));

    // Executions: one per (pipeline, commit); saves on version; the queue.
    let definition = PipelineDefinition::parse(
        "name: p\nsource: { repository: acme/app, branches: { include: [main] } }\nexecution_mode: queued\nstages:\n  - name: s\n    actions:\n      - { name: w, kind: wait, config: { duration: 1m } }\n",
    )
    .unwrap();
    let push = |sha: char| Push {
        repository: "acme/app".into(),
        reference: GitRef::Branch("main".into()),
        sha: sha.to_string().repeat(40),
        deleted: false,
        forced: false,
        changed_paths: None,
        message: None,
        author: None,
    };
    let (one, _) = Execution::create("e-one", definition.clone(), push('a'), at(0));
    let (again, _) = Execution::create("e-again", definition.clone(), push('a'), at(1));
    let (two, _) = Execution::create("e-two", definition.clone(), push('b'), at(2));
    for e in [&one, &again, &two] {
        out.push(said(table.start_execution(e, &[]).await));
    }
    out.push(said(table.queued_executions("p").await));
    let mut running = one.clone();
    running.status = Status::InProgress;
    out.push(said(
        table
            .save_execution(&running, 1, &[])
            .await
            .map(|s| s.version),
    ));
    out.push(said(
        table
            .save_execution(&running, 1, &[])
            .await
            .map(|s| s.version),
    ));
    out.push(said(table.live_executions("p").await));
    out.push(said(table.queued_executions("p").await));
    out.push(said(table.running_executions_all().await));
    for secs in [0, 89, 100] {
        out.push(said(table.due_executions(at(secs)).await));
    }
    out.push(said(
        table.load_execution("e-again").await.map(|s| s.version),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_model_answers_as_the_real_table_does() {
    let stack =
        start_stack_without(Some("template.yaml"), &[], 1.0, &ALL_FUNCTIONS).expect("local stack");
    let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
    let real = script(&template_store(&stack).await, now).await;
    let dice = Dice::new(1);
    dice.calm();
    let model = script(&MemoryTable::new(dice), now).await;
    for (i, (r, m)) in real.iter().zip(&model).enumerate() {
        assert_eq!(r, m, "step {i} of the script");
    }
    assert_eq!(real.len(), model.len());
}

/// The template's functions: none is needed here.
const ALL_FUNCTIONS: [&str; 7] = [
    "ShifterFunction",
    "PreTrafficFunction",
    "PostTrafficFunction",
    "SourceFunction",
    "OrchestratorFunction",
    "CodePipelineActionFunction",
    "ApiFunction",
];
