//! `make bench-fleet` (and `make bench`): many deployments at once on the
//! local stack, and what a deployment costs.
//!
//! One function with `SLUICE_FLEET_DEPLOYMENTS` (500) aliases, each deployed
//! from version 1 to 2 at the same moment with `steps:10@10s,50@10s,100`,
//! both hooks at every shift (a real hook function through sluice-local),
//! timers through the SQS queue as the shifter's poller takes them. It reports
//! the throughput, each step's lateness against its schedule, the invariants
//! checked at the end. Then one deployment runs alone: its requests and time
//! are the cost model's input (dollars per 1,000 deployments at list prices),
//! and its weight over time goes to `target/bench/weights.csv` for
//! `benches/plot_weights.py`.

#[path = "support/mod.rs"]
mod support;

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::primitives::Blob;
use sluice::domain::deployment::{
    AliasLeft, Deployment, DeploymentSpec, EventKind, OnBusy, Phase, VersionSource,
};
use sluice::ports::Deployments as _;
use sluice::store::Store;
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::build_dir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Calls;

const CONFIG: &str = "steps:10@10s,50@10s,100";
/// SQS pollers taking timer batches, as Lambda's event source mapping scales out.
const POLLERS: usize = 12;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn spec(alias: &str) -> DeploymentSpec {
    DeploymentSpec {
        function: "app".into(),
        alias: alias.into(),
        source: VersionSource::Version("2".into()),
        config: CONFIG.parse().expect("config"),
        pre_traffic_hook: Some("fleet-hook".into()),
        post_traffic_hook: Some("fleet-hook".into()),
        alarms: vec![],
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

#[tokio::main]
async fn main() -> Result<()> {
    let deployments: usize = std::env::var("SLUICE_FLEET_DEPLOYMENTS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(500);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir()?;
    let stack = support::template_stack(&root, work.path())?;
    let sdk = stack.sdk_config().await;
    let calls = Calls::default();
    let engine = support::recorded_engine(&stack, &sdk, &calls, Duration::from_secs(30));
    let lambda = engine.cloud().lambda.clone();

    // The app (greeter 1 and 2), its aliases on 1, and the hook.
    let role = support::role(&sdk, "fleet").await?;
    let function = |name: &str, zip: Vec<u8>, env: Vec<(&str, String)>| {
        let mut variables = aws_sdk_lambda::types::Environment::builder();
        for (k, v) in env {
            variables = variables.variables(k, v);
        }
        lambda
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .timeout(30)
            .environment(variables.build())
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(Blob::new(zip))
                    .build(),
            )
            .publish(true)
            .send()
    };
    let greeter = std::fs::read(build_dir().join("greeter")).context("greeter")?;
    function("app", bootstrap_zip(&greeter, &[("release", b"1")]), vec![]).await?;
    support::wait_ready(&lambda, "app").await?;
    lambda
        .update_function_code()
        .function_name("app")
        .zip_file(Blob::new(bootstrap_zip(&greeter, &[("release", b"2")])))
        .send()
        .await?;
    support::wait_ready(&lambda, "app").await?;
    lambda.publish_version().function_name("app").send().await?;
    let hooks = tempfile::tempdir()?;
    let recorder = std::fs::read(build_dir().join("recorder")).context("recorder")?;
    function(
        "fleet-hook",
        bootstrap_zip(&recorder, &[]),
        vec![
            ("RECORDER_DIR", hooks.path().display().to_string()),
            (
                "RECORDER_REPLY",
                r#"{"status":"Succeeded","reason":"fleet","checks":[]}"#.into(),
            ),
        ],
    )
    .await?;
    support::wait_ready(&lambda, "fleet-hook").await?;
    // The bench watches through a client of its own, so the counts are the engine's alone.
    let watch = Store::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        stack.var("SLUICE_RESOURCE_STATE_TABLE"),
        chrono::Duration::days(1),
    );
    // Each alias as an earlier deployment of Sluice's left it, whole on 1
    // (its `LEFT` item says so): a team's alias that ships many times a day.
    // A first deployment on an alias reads it once more (`GetAlias`).
    let aliases: Vec<String> = (0..deployments).map(|i| format!("live-{i}")).collect();
    for alias in &aliases {
        let created = lambda
            .create_alias()
            .function_name("app")
            .name(alias)
            .function_version("1")
            .send()
            .await?;
        let lock = sluice::store::keys::Lock::alias("app", alias);
        let earlier = format!("earlier-{alias}");
        watch
            .acquire_lock(&lock, &earlier, chrono::Utc::now())
            .await?;
        let left = AliasLeft {
            version: "1".into(),
            revision: created.revision_id().context("revision")?.to_owned(),
            function_arn: created
                .alias_arn()
                .and_then(|arn| arn.rsplit_once(':'))
                .map(|(function, _)| function.to_owned()),
        };
        watch.release_lock(&lock, &earlier, Some(&left)).await?;
    }
    // Lambda's control-plane quota, as sluice-local plays it for all callers.
    let quota_url = format!("{}/_sluice/quota", stack.var("AWS_ENDPOINT_URL_LAMBDA"));
    let quota_before = quota_report(&quota_url).await?;
    let fleet_start = Instant::now();
    // Time the engine spends in its entry points: the shifter's billed time.
    let busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let timed = |busy: &Arc<std::sync::atomic::AtomicU64>, since: Instant| {
        busy.fetch_add(
            since.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    };

    // Timer pollers, from the start: a start out of budget is handed back
    // to the queue, as in the shifter.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut pollers = tokio::task::JoinSet::new();
    for _ in 0..POLLERS {
        let (engine, done, failures, busy) =
            (engine.clone(), done.clone(), failures.clone(), busy.clone());
        pollers.spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(received) = engine
                    .cloud()
                    .sqs
                    .receive_message()
                    .queue_url(&engine.cloud().timer_queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                else {
                    continue;
                };
                if received.messages().is_empty() {
                    continue;
                }
                // The shifter's own handler, as Lambda's poller calls it: the
                // batch's items side by side, failures reported per message.
                let since = Instant::now();
                let answer = engine.handle(&sqs_event(received.messages()), None).await;
                timed(&busy, since);
                let again: Vec<String> = match answer {
                    Ok(answer) => answer["batchItemFailures"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                        .collect(),
                    Err(_) => received
                        .messages()
                        .iter()
                        .filter_map(|m| m.message_id().map(str::to_owned))
                        .collect(),
                };
                failures.fetch_add(again.len(), std::sync::atomic::Ordering::Relaxed);
                let done: Vec<_> = received
                    .messages()
                    .iter()
                    .filter(|m| !again.iter().any(|id| Some(id.as_str()) == m.message_id()))
                    .collect();
                // One request for the batch, as Lambda's poller deletes; a
                // failed delete is redelivered.
                let _ = support::delete_timers(&engine, &done).await;
            }
        });
    }
    // All at once: each start drives its deployment to its first bake.
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut starts = tokio::task::JoinSet::new();
    for (i, alias) in aliases.iter().enumerate() {
        let (engine, alias, busy) = (engine.clone(), alias.clone(), busy.clone());
        starts.spawn(async move {
            let since = Instant::now();
            let id = format!("fleet-{i}");
            // A start that failed before its deployment was saved is made
            // again, as the API's caller or the orchestrator's stream retry
            // does; one that failed after (out of budget and handed back,
            // say) is the queue's and the sweep's to finish.
            let (mut failed, mut made_again) = (0, Vec::new());
            for _ in 0..3 {
                match engine.start(&id, spec(&alias)).await {
                    Ok(_) => break,
                    Err(e) => match engine.store().load(&id).await {
                        Ok(_) => {
                            failed += 1;
                            break;
                        }
                        Err(_) => made_again.push(format!("{id}: {e}")),
                    },
                }
            }
            timed(&busy, since);
            (failed, made_again)
        });
    }
    let (mut failed_workers, mut start_errors) = (0, Vec::new());
    while let Some(outcome) = starts.join_next().await {
        let (failed, made_again) = outcome?;
        failed_workers += failed;
        start_errors.extend(made_again);
    }
    let all_started = started.elapsed();
    failures.fetch_add(failed_workers, std::sync::atomic::Ordering::Relaxed);

    // Done when the active index holds none: one Query a pass, every 2 s
    // (moto reads every item of the table for a query of an index: watching
    // more often would load the local stack the engine runs on, and the
    // total is read from the timelines anyway). The sweep repairs what a
    // failed worker left, once a minute as the shifter's schedule runs it.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut swept = Instant::now();
    loop {
        let open = watch.active().await?.len();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{open} of {deployments} deployments did not finish in 10 minutes");
        }
        if swept.elapsed() >= Duration::from_secs(60) {
            swept = Instant::now();
            let since = Instant::now();
            let (_, failed) = engine.reconcile().await?;
            failures.fetch_add(failed.len(), std::sync::atomic::Ordering::Relaxed);
            timed(&busy, since);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    while pollers.join_next().await.is_some() {}
    let ids: Vec<String> = (0..deployments).map(|i| format!("fleet-{i}")).collect();
    let mut finished = Vec::with_capacity(ids.len());
    let mut never_created = Vec::new();
    for id in &ids {
        match watch.load(id).await {
            Ok(stored) => finished.push(stored.deployment),
            Err(sluice::store::StoreError::NotFound(_)) => never_created.push(id.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::ensure!(
        never_created.is_empty(),
        "{} deployments were never created ({never_created:?}); the starts' errors: {start_errors:?}",
        never_created.len()
    );
    let fleet_calls = calls.totals(fleet_start);
    let quota_after = quota_report(&quota_url).await?;

    // Invariants: promoted, the alias whole on 2, one timeline shape for all.
    let mut violations = Vec::new();
    let mut timelines = BTreeMap::new();
    let mut late_deployments = 0;
    let mut lateness = Vec::new();
    let bakes: Vec<f64> = finished[0]
        .schedule
        .steps
        .iter()
        .map(|s| s.bake.as_secs_f64())
        .collect();
    let mut last_end = started_at;
    for (d, alias) in finished.iter().zip(&aliases) {
        if d.phase != Phase::Promoted {
            violations.push(format!("{} ended {:?}", d.id, d.phase));
        }
        let a = lambda
            .get_alias()
            .function_name("app")
            .name(alias)
            .send()
            .await?;
        let split = a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .is_some_and(|w| !w.is_empty());
        if a.function_version() != Some("2") || split {
            violations.push(format!("{alias} is not whole on 2: {a:?}"));
        }
        let events = watch.events(&d.id).await?;
        if let Some(end) = events.iter().rfind(|e| e.kind == EventKind::Promoted) {
            last_end = last_end.max(end.at);
        }
        // A step's lateness is said in the timeline (`Late`), and depends on
        // the load: the shape compared is the rest.
        if events.iter().any(|e| e.kind == EventKind::Late) {
            late_deployments += 1;
        }
        let kinds: Vec<EventKind> = events
            .iter()
            .map(|e| e.kind)
            .filter(|k| *k != EventKind::Late)
            .collect();
        *timelines.entry(format!("{kinds:?}")).or_insert(0usize) += 1;
        // How late each later step's shift landed against its schedule.
        let shifts: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::Shifted)
            .map(|e| e.at)
            .collect();
        let mut due = shifts[0];
        for (k, at) in shifts.iter().enumerate().skip(1) {
            due += chrono::Duration::milliseconds((bakes[k - 1] * 1000.0) as i64);
            lateness.push((*at - due).num_milliseconds() as f64);
        }
    }
    if timelines.len() != 1 {
        violations.push(format!(
            "{} different timelines: {timelines:?}",
            timelines.len()
        ));
    }

    // From the starts to the last promotion, as the timelines say.
    let wall = (last_end - started_at).to_std().unwrap_or_default();
    let shifts = deployments * finished[0].schedule.steps.len();
    println!(
        "{deployments} deployments at once ({CONFIG}, PreTraffic and PostTraffic hooks at every shift, {POLLERS} timer pollers; release build, local stack)"
    );
    println!(
        "every start returned (its first shift done, or handed back to wait for the budget) in {:.1} s; all promoted in {:.1} s (schedule alone: {:.0} s)",
        all_started.as_secs_f64(),
        wall.as_secs_f64(),
        bakes.iter().sum::<f64>()
    );
    println!(
        "throughput: {:.1} shifts/s, {:.1} gates/s over the run",
        shifts as f64 / wall.as_secs_f64(),
        2.0 * shifts as f64 / wall.as_secs_f64()
    );
    println!(
        "step lateness against the schedule (steps 2 and 3): median {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        percentile(&mut lateness, 0.5),
        percentile(&mut lateness, 0.99),
        percentile(&mut lateness, 1.0)
    );
    println!("deployments with a step the timeline says was late: {late_deployments}");
    if !start_errors.is_empty() {
        println!(
            "starts that failed before their deployment was saved, made again: {} (first: {})",
            start_errors.len(),
            start_errors[0]
        );
    }
    println!(
        "starts, queue messages and resumes that did not finish their work (out of budget and handed back, or failed): {}",
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    let rate = quota_after["rates"]["control_plane"]
        .as_f64()
        .unwrap_or(15.0);
    let control = |field: &str| {
        quota_after["requests"]["control_plane"][field]
            .as_u64()
            .unwrap_or(0)
            - quota_before["requests"]["control_plane"][field]
                .as_u64()
                .unwrap_or(0)
    };
    let (allowed, throttled) = (control("allowed"), control("throttled"));
    let per_shift = allowed as f64 / shifts as f64;
    println!(
        "Lambda control plane (the account's quota, {rate:.0}/s for all callers): {allowed} requests let through, {throttled} throttled (and retried); {per_shift:.2} a shift"
    );
    let budget = sluice::budget::DEFAULT_PER_SECOND as f64;
    let bound = shifts as f64 / budget;
    println!(
        "the bound Sluice's budget ({budget:.0} of the {rate:.0}/s) sets: {shifts} UpdateAlias / {budget:.0} per second = {bound:.0} s; at {per_shift:.2} control-plane calls a shift, {:.0} s; all promoted in {:.1} s, {:.2}x the bound",
        allowed as f64 / budget,
        wall.as_secs_f64(),
        wall.as_secs_f64() / bound
    );
    println!("invariant violations: {}", violations.len());
    for v in violations.iter().take(10) {
        println!("  {v}");
    }
    let requests: usize = fleet_calls.values().map(|(n, _)| n).sum();
    println!(
        "AWS requests of the engine and its pollers: {:.1} a deployment",
        requests as f64 / deployments as f64
    );
    let fleet_busy = busy.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    println!(
        "engine time per deployment under this load: {:.2} s (requests wait on the local stack's single moto process)",
        fleet_busy / deployments as f64
    );
    anyhow::ensure!(violations.is_empty(), "invariants broken");

    // One deployment alone: its requests and time are the cost model's
    // input, and its weight over time is the plot.
    lambda
        .create_alias()
        .function_name("app")
        .name("alone")
        .function_version("1")
        .send()
        .await?;
    let alone_start = Instant::now();
    // Nothing else going on: its requests and time are the cost model's input.
    let (alone, busy) =
        support::run_with_timers(&engine, "alone", spec("alone"), Duration::from_secs(120)).await?;
    let alone_calls = calls.totals(alone_start);
    anyhow::ensure!(
        alone.phase == Phase::Promoted,
        "alone ended {:?}",
        alone.phase
    );
    write_weights(&watch, &alone).await?;
    cost_model(1, &alone_calls, busy.as_secs_f64(), &alone, &watch).await
}

/// One deployment's weight on the new version over time, from its timeline.
async fn write_weights(watch: &Store, d: &Deployment) -> Result<()> {
    let events = watch.events(&d.id).await?;
    let start = events.first().context("timeline")?.at;
    let dir = build_dir().parent().context("target")?.join("bench");
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("seconds,weight,event\n");
    let mut step = 0;
    let mut weight = 0.0;
    for e in &events {
        if e.kind == EventKind::Shifted {
            weight = d.step_weight(step);
            step += 1;
        }
        let seconds = (e.at - start).num_milliseconds() as f64 / 1000.0;
        let label = format!("{:?}", e.kind);
        csv.push_str(&format!("{seconds:.3},{weight},{label}\n"));
    }
    std::fs::write(dir.join("weights.csv"), csv)?;
    Ok(())
}

/// List prices (us-east-1, on-demand, x86) the cost model uses, in dollars.
/// They change: check the AWS pricing pages before relying on the totals.
const DYNAMODB_PER_MILLION_WRITE_UNITS: f64 = 0.625;
const DYNAMODB_PER_MILLION_READ_UNITS: f64 = 0.125;
const LAMBDA_PER_MILLION_REQUESTS: f64 = 0.20;
const LAMBDA_PER_GB_SECOND: f64 = 0.000_016_666_7;
const SQS_PER_MILLION_REQUESTS: f64 = 0.40;
const CLOUDWATCH_PER_THOUSAND_API_REQUESTS: f64 = 0.01;
/// The shifter's and the hooks' memory (template.yaml's Globals).
const FUNCTION_GB: f64 = 0.25;

/// Requests per deployment, and what they cost at the prices above.
async fn cost_model(
    deployments: usize,
    calls: &BTreeMap<String, (usize, Duration)>,
    shifter_seconds: f64,
    sample: &Deployment,
    watch: &Store,
) -> Result<()> {
    let delta = |op: &str| calls.get(op).copied().unwrap_or_default();
    let per = |op: &str| delta(op).0 as f64 / deployments as f64;
    println!("requests of one deployment run alone (the cost model's input):");
    for op in calls.keys() {
        let n = per(op);
        if n > 0.0 {
            println!("  {op:<36} {n:>6.2}");
        }
    }
    // A state item grows with its timeline; every read and write is costed at
    // the finished item's size (an upper bound).
    let item = watch
        .events(&sample.id)
        .await?
        .iter()
        .map(|e| serde_json::to_string(e).map(|s| s.len()))
        .sum::<Result<usize, _>>()?
        + serde_json::to_string(sample)?.len();
    let write_units = (item as f64 / 1024.0).ceil();
    let read_units = (item as f64 / 4096.0).ceil();
    let sum = |ops: &[&str]| ops.iter().map(|op| per(op)).sum::<f64>();
    let dynamodb_writes = sum(&[
        "DynamoDB PutItem",
        "DynamoDB UpdateItem",
        "DynamoDB DeleteItem",
    ]);
    let dynamodb_reads = sum(&["DynamoDB GetItem", "DynamoDB Query"]);
    // Each timer is sent, received and deleted once; the poller's empty
    // receives are a fixed cost of the queue, not of a deployment.
    let timers = per("SQS SendMessage");
    let sqs = 3.0 * timers;
    let hooks = per("Lambda Invoke");
    let hook_seconds = delta("Lambda Invoke").1.as_secs_f64() / deployments as f64;
    let shifter_seconds = shifter_seconds / deployments as f64;
    // The shifter runs once from the table's stream and once per timer.
    let shifter_invocations = 1.0 + timers;
    let gb_seconds = (shifter_seconds + hook_seconds) * FUNCTION_GB;
    let dollars = [
        (
            "DynamoDB writes",
            dynamodb_writes * write_units * DYNAMODB_PER_MILLION_WRITE_UNITS / 1e6,
        ),
        (
            "DynamoDB reads",
            dynamodb_reads * read_units * DYNAMODB_PER_MILLION_READ_UNITS / 1e6,
        ),
        (
            "Lambda requests (shifter and hooks)",
            (shifter_invocations + hooks) * LAMBDA_PER_MILLION_REQUESTS / 1e6,
        ),
        ("Lambda GB-seconds", gb_seconds * LAMBDA_PER_GB_SECOND),
        ("SQS requests", sqs * SQS_PER_MILLION_REQUESTS / 1e6),
        (
            "CloudWatch API requests",
            per("CloudWatch DescribeAlarms") * CLOUDWATCH_PER_THOUSAND_API_REQUESTS / 1e3,
        ),
    ];
    println!(
        "cost per 1,000 deployments of {CONFIG}, from one deployment run alone, at list prices (us-east-1, on-demand, x86):"
    );
    println!(
        "  inputs a deployment: state item {item} bytes ({write_units} write / {read_units} read units a request), {dynamodb_writes:.1} writes, {dynamodb_reads:.1} reads, {shifter_invocations:.1} shifter invocations ({shifter_seconds:.2} s in all, as measured here), {hooks:.1} hook invocations ({hook_seconds:.2} s in all), {sqs:.1} SQS requests, {FUNCTION_GB} GB functions"
    );
    let mut total = 0.0;
    for (what, dollars_each) in dollars {
        total += dollars_each * 1000.0;
        println!("  {what:<36} ${:.4}", dollars_each * 1000.0);
    }
    println!("  {:<36} ${total:.4}", "total");
    println!(
        "  (hooks that run smoke tests or wait out an analysis window bill their own time on top; the Lambda API calls other than Invoke are free)"
    );
    Ok(())
}

/// sluice-local's count of Lambda requests let through and throttled, by quota.
async fn quota_report(url: &str) -> Result<serde_json::Value> {
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

/// Messages of the shifter's queue as Lambda delivers them to it.
fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> serde_json::Value {
    use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record.event_source = Some("aws:sqs".into());
            record
        })
        .collect();
    serde_json::to_value(event).expect("events serialise")
}
