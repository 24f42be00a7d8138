//! `make bench-engine`: the deployment engine on the local stack (release build).
//!
//! - Reaction latency: from an input (a hook result, a timer, an alarm) given
//!   to the engine to the completed `UpdateAlias` it causes.
//! - DynamoDB requests per step of a deployment.
//! - Drift of a `linear:10:10s` deployment's shifts from its schedule, with
//!   timers through the SQS timer queue as the shifter receives them.
//! - The time a release group's step takes, 5 and 20 members, one alias
//!   write a member within the Lambda control-plane budget.
//!
//! Times come from SDK interceptors on the engine's own clients.

#[path = "support/mod.rs"]
mod support;

use anyhow::{Context, Result};
use aws_sdk_lambda::primitives::Blob;
use sluice::domain::deployment::{
    Deployment, DeploymentSpec, EventKind, Gate, Input, MemberSpec, OnBusy, Phase, VersionSource,
};
use sluice::ports::Deployments as _;
use sluice::store::keys::Lock;
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::build_dir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::Calls;

/// When the first `operation` call finished at `start` or later.
fn first_after(calls: &Calls, operation: &str, start: Instant) -> Option<Instant> {
    calls
        .since(start)
        .into_iter()
        .find(|c| c.operation == operation)
        .map(|c| c.finished)
}

/// Each operation's count, median and p99 time, over every call since `start`.
fn latencies(calls: &Calls, start: Instant) -> Vec<(String, usize, Duration, Duration)> {
    let mut by_op = BTreeMap::<String, Vec<Duration>>::new();
    for call in calls.since(start) {
        by_op.entry(call.operation).or_default().push(call.took);
    }
    by_op
        .into_iter()
        .map(|(op, mut samples)| {
            let n = samples.len();
            let median = percentile(&mut samples, 0.5);
            let p99 = percentile(&mut samples, 0.99);
            (op, n, median, p99)
        })
        .collect()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn spec(version: &str, config: &str, alarms: Vec<String>) -> DeploymentSpec {
    DeploymentSpec {
        function: "app".into(),
        alias: "live".into(),
        source: VersionSource::Version(version.into()),
        config: config.parse().expect("config"),
        pre_traffic_hook: None,
        post_traffic_hook: None,
        alarms,
        on_manual_change: Default::default(),
        on_busy: OnBusy::Refuse,
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

const SAMPLES: usize = 30;

/// Deployments of each release group size, each of two steps.
const GROUP_RUNS: usize = 3;

/// How long a deployment of this bench may take to run to its end.
const RUN_WITHIN: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() -> Result<()> {
    let bench_start = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir()?;
    let stack = support::template_stack(&root, work.path())?;
    let sdk = stack.sdk_config().await;

    let calls = Calls::default();
    let engine = support::recorded_engine(&stack, &sdk, &calls, Duration::from_secs(10));
    let lambda = engine.cloud().lambda.clone();

    // The app: two versions of the greeter behind `live`, and an alarm to raise.
    let role = support::role(&sdk, "bench").await?;
    let greeter = std::fs::read(build_dir().join("greeter"))
        .context("greeter (make bench-engine builds it)")?;
    lambda
        .create_function()
        .function_name("app")
        .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(bootstrap_zip(&greeter, &[("release", b"1")])))
                .build(),
        )
        .publish(true)
        .send()
        .await?;
    support::wait_ready(&lambda, "app").await?;
    lambda
        .update_function_code()
        .function_name("app")
        .zip_file(Blob::new(bootstrap_zip(&greeter, &[("release", b"2")])))
        .send()
        .await?;
    support::wait_ready(&lambda, "app").await?;
    lambda.publish_version().function_name("app").send().await?;
    lambda
        .create_alias()
        .function_name("app")
        .name("live")
        .function_version("1")
        .send()
        .await?;
    let cloudwatch = &engine.cloud().cloudwatch;
    cloudwatch
        .put_metric_alarm()
        .alarm_name("app-errors")
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(
            aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
        )
        .send()
        .await?;

    // Reaction latency, alternating 1 → 2 and 2 → 1 so each deployment has something to shift.
    let other = |v: u32| if v == 1 { "2" } else { "1" };
    let (mut hook, mut timer, mut alarm) = (Vec::new(), Vec::new(), Vec::new());
    let mut on = 1u32;
    // Each input comes to a budget that has sat idle two slots, as in a calm
    // account: how steps queue for it under load is the fleet bench's.
    let calm = Duration::from_millis(2000 / sluice::budget::DEFAULT_PER_SECOND);
    for i in 0..SAMPLES {
        // A deployment whose first PreTraffic gate is under way (set up directly in that phase).
        let id = format!("shift-{i}");
        let (mut d, _) = Deployment::create(
            &id,
            spec(other(on), "canary:10:1s", vec![]),
            chrono::Utc::now(),
        );
        d.phase = Phase::PreTraffic { step: 0 };
        d.from_version = Some(on.to_string());
        d.to_version = Some(other(on).to_owned());
        // The alias's revision, as Prepare leaves it.
        let alias = lambda
            .get_alias()
            .function_name("app")
            .name("live")
            .send()
            .await?;
        d.alias_revision = alias.revision_id().map(str::to_owned);
        engine.store().create(&d, &[]).await?;
        engine
            .store()
            .acquire_lock(&Lock::alias("app", "live"), &id, chrono::Utc::now())
            .await?;
        // A hook result: the gate passes; the alias takes 10%.
        tokio::time::sleep(calm).await;
        let start = Instant::now();
        let d = engine
            .apply(
                &id,
                Input::GateResult {
                    gate: Gate::PreTraffic,
                    step: 0,
                    passed: true,
                    reason: "bench".into(),
                },
            )
            .await?;
        hook.push(first_after(&calls, "UpdateAlias", start).context("no UpdateAlias")? - start);
        // A timer: once the 1 s bake is over, the next gate runs and the alias takes 100%.
        let Phase::Baking { until, .. } = d.phase else {
            anyhow::bail!("{id} is {:?}", d.phase)
        };
        tokio::time::sleep(
            (until - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(5),
        )
        .await;
        let start = Instant::now();
        let input = Input::TimerFired {
            step: 0,
            at: Some(until),
        };
        let d = engine.apply(&id, input).await?;
        timer.push(first_after(&calls, "UpdateAlias", start).context("no UpdateAlias")? - start);
        anyhow::ensure!(d.phase == Phase::Promoted, "{id} ended {:?}", d.phase);
        on = if on == 1 { 2 } else { 1 };

        // An alarm: the state change arrives mid-bake; the alias goes back at once.
        let id = format!("alarm-{i}");
        engine
            .start(
                &id,
                spec(other(on), "canary:10:1h", vec!["app-errors".into()]),
            )
            .await?;
        tokio::time::sleep(calm).await;
        let start = Instant::now();
        let hit = engine.alarm_raised("app-errors").await?;
        anyhow::ensure!(hit == 1, "the alarm reached {hit} deployments");
        alarm.push(first_after(&calls, "UpdateAlias", start).context("no UpdateAlias")? - start);
    }

    // DynamoDB requests per step: the same deployment with 2 and with 4 steps,
    // timers from the queue; the difference is what the 2 more steps cost.
    let mut requests = Vec::new();
    let mut by_operation = BTreeMap::new();
    let mut control_plane = Vec::new();
    for (id, config) in [
        ("two-steps", "linear:50:1s"),
        ("four-steps", "linear:25:1s"),
    ] {
        let from = Instant::now();
        let (d, _) =
            support::run_with_timers(&engine, id, spec(other(on), config, vec![]), RUN_WITHIN)
                .await?;
        anyhow::ensure!(d.phase == Phase::Promoted, "{id} ended {:?}", d.phase);
        let totals = calls.totals(from);
        // Lambda's control-plane calls: all but Invoke, GetFunction and GetPolicy.
        let shifts = d.schedule.steps.len();
        let control: usize = totals
            .iter()
            .filter_map(|(call, (n, _))| {
                let op = call.strip_prefix("Lambda ")?;
                (!matches!(op, "Invoke" | "GetFunction" | "GetPolicy")).then_some(*n)
            })
            .sum();
        control_plane.push((shifts, control));
        let dynamodb: BTreeMap<String, usize> = totals
            .into_iter()
            .filter_map(|(call, (n, _))| Some((call.strip_prefix("DynamoDB ")?.to_owned(), n)))
            .collect();
        requests.push(dynamodb.values().sum::<usize>());
        by_operation = dynamodb;
        on = if on == 1 { 2 } else { 1 };
    }
    let per_step = (requests[1] as f64 - requests[0] as f64) / 2.0;

    // Drift: linear:10:10s with timers through the queue, as the shifter gets them.
    let drift_start = Instant::now();
    let (d, _) = support::run_with_timers(
        &engine,
        "drift",
        spec(other(on), "linear:10:10s", vec![]),
        RUN_WITHIN,
    )
    .await?;
    anyhow::ensure!(d.phase == Phase::Promoted, "drift ended {:?}", d.phase);
    let shifts: Vec<Instant> = calls
        .since(drift_start)
        .into_iter()
        .filter(|c| c.operation == "UpdateAlias")
        .map(|c| c.finished)
        .collect();
    let first = shifts[0];
    let drift: Vec<Duration> = shifts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let scheduled = first + Duration::from_secs(10 * i as u64);
            if *t > scheduled {
                *t - scheduled
            } else {
                scheduled - *t
            }
        })
        .collect();

    // A release group's step: the group's gate passes (no hook, no alarm),
    // then one UpdateAlias a member, each within the budget, until the
    // last lands; timed from the gate's line to the shift's on the
    // timeline. Members `m1`..`m19`, each with versions 1 and 2.
    let mut member_on: BTreeMap<String, u32> = BTreeMap::new();
    for i in 1..20 {
        let name = format!("m{i}");
        lambda
            .create_function()
            .function_name(&name)
            .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(Blob::new(bootstrap_zip(&greeter, &[("release", b"1")])))
                    .build(),
            )
            .publish(true)
            .send()
            .await?;
        support::wait_ready(&lambda, &name).await?;
        lambda
            .update_function_code()
            .function_name(&name)
            .zip_file(Blob::new(bootstrap_zip(&greeter, &[("release", b"2")])))
            .send()
            .await?;
        support::wait_ready(&lambda, &name).await?;
        lambda.publish_version().function_name(&name).send().await?;
        lambda
            .create_alias()
            .function_name(&name)
            .name("live")
            .function_version("1")
            .send()
            .await?;
        member_on.insert(name, 1);
    }
    let mut group_steps: Vec<(usize, Vec<Duration>)> = Vec::new();
    for members in [5, 20] {
        let mut steps = Vec::new();
        for run in 0..GROUP_RUNS {
            let mut grouped = spec(other(on), "linear:50:1s", vec![]);
            for i in 1..members {
                let name = format!("m{i}");
                let now_on = member_on[&name];
                grouped.group.push(MemberSpec {
                    function: name.clone(),
                    alias: "live".into(),
                    source: VersionSource::Version(other(now_on).into()),
                });
                member_on.insert(name, if now_on == 1 { 2 } else { 1 });
            }
            let id = format!("group-{members}-{run}");
            tokio::time::sleep(calm * members as u32).await;
            let (d, _) = support::run_with_timers(&engine, &id, grouped, RUN_WITHIN).await?;
            anyhow::ensure!(d.phase == Phase::Promoted, "{id} ended {:?}", d.phase);
            on = if on == 1 { 2 } else { 1 };
            let timeline = engine.store().events(&id).await?;
            for pair in timeline.windows(2) {
                if pair[1].kind == EventKind::Shifted && pair[0].kind == EventKind::GatePassed {
                    steps.push((pair[1].at - pair[0].at).to_std().unwrap_or_default());
                }
            }
        }
        group_steps.push((members, steps));
    }

    println!("sluice engine benchmark (release build, local stack, {SAMPLES} samples per input)");
    for (name, samples) in [
        ("hook result", &mut hook),
        ("timer", &mut timer),
        ("alarm event", &mut alarm),
    ] {
        println!(
            "reaction, {name:<12} → alias updated: median {}  p99 {}   (goal: median under 25 ms)",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        );
    }
    println!(
        "DynamoDB requests per step: {per_step:.1}   (target: 4 or fewer; a deployment of 2 steps made {}, of 4 steps {})",
        requests[0], requests[1]
    );
    println!("   4 steps: {by_operation:?}");
    let (shifted, calls_made): (usize, usize) = control_plane
        .iter()
        .fold((0, 0), |(s, c), (shifts, calls)| (s + shifts, c + calls));
    println!(
        "Lambda control-plane calls per shift: {:.2}   (goal 1.0; the deployments of 2 and 4 steps, each starting where Sluice left the alias, made {calls_made} for {shifted} shifts: {control_plane:?})",
        calls_made as f64 / shifted as f64
    );
    println!(
        "drift, linear:10:10s ({} shifts): median {}  max {}   (target: under 1 s)",
        shifts.len(),
        ms(percentile(&mut drift.clone(), 0.5)),
        ms(*drift.iter().max().unwrap_or(&Duration::ZERO))
    );
    for (members, steps) in &mut group_steps {
        println!(
            "release group step, {members:>2} members (gate passed → every alias written): median {}  max {}   ({} steps; one UpdateAlias a member, {} a second in the budget)",
            ms(percentile(steps, 0.5)),
            ms(*steps.iter().max().unwrap_or(&Duration::ZERO)),
            steps.len(),
            sluice::budget::DEFAULT_PER_SECOND
        );
    }
    println!("time per call, as the engine's clients see it:");
    for (op, n, median, p99) in latencies(&calls, bench_start) {
        println!(
            "  {op:<26} {n:>4} calls  median {}  p99 {}",
            ms(median),
            ms(p99)
        );
    }
    Ok(())
}
