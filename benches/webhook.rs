//! `make bench-webhook`: the path a user feels, from `git push` to the first
//! shift, on the template's whole stack (release builds, the local stack at
//! AWS's own pace: function states, stream polling and the control-plane
//! quota unscaled).
//!
//! Each push is a signed GitHub webhook to the source function, for a
//! commit whose build is already in the bucket; its pipeline builds (finds
//! the artifact) and deploys to `live` with a PreTraffic gate. Each hop's
//! time comes from the webhook's answer and the deployment's timeline:
//! received → execution saved (the webhook's answer) → deployment created
//! (handed to the orchestrator, the artifact found, the stage begun) →
//! version published (handed to the shifter, the lock, `UpdateFunctionCode`,
//! the function's update, `PublishVersion`, the version's `Pending`) →
//! PreTraffic passed → first shift. The function-state windows Lambda
//! imposes are measured apart, read every 50 ms: what the shifter's waiters
//! add beyond them is Sluice's own time.

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::client::Waiters;
use sluice::domain::deployment::{Event, EventKind};
use sluice::domain::pipeline::PipelineDefinition;
use sluice::orchestrator::deployment_id;
use sluice::ports::{Deployments as _, Executions as _};
use sluice::store::Store;
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PUSHES: usize = 20;

const PIPELINE: &str = r#"
name: app
source:
  repository: acme/app
  branches: { include: [main] }
stages:
  - name: build
    actions:
      - { name: artifact, kind: artifact, config: { key: "builds/{repo}/{sha}/app.zip", timeout: 2m } }
  - name: live
    actions:
      - name: deploy-live
        kind: deploy
        config:
          function: app
          alias: live
          artifact: artifact
          config: "canary:10:1s"
          pre_traffic_hook: PRE_TRAFFIC
          smoke_tests:
            - { name: greets, event: { name: Ada }, expect: { fields: { /message: "Hello, Ada!" } } }
"#;

fn ms(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or_default() as f64 / 1e3
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// When the first event of `kind` happened.
fn at(timeline: &[Event], kind: EventKind) -> Result<chrono::DateTime<chrono::Utc>> {
    timeline
        .iter()
        .find(|e| e.kind == kind)
        .map(|e| e.at)
        .with_context(|| format!("no {kind:?} in {timeline:#?}"))
}

/// Reads the probe's `qualifier` every 50 ms until `done` says its state window ended.
async fn settle(
    lambda: &aws_sdk_lambda::Client,
    qualifier: &str,
    done: impl Fn(&aws_sdk_lambda::types::FunctionConfiguration) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = lambda
            .get_function()
            .function_name("probe")
            .qualifier(qualifier)
            .send()
            .await?;
        if got.configuration().is_some_and(&done) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("probe {qualifier} did not settle");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Sample {
    /// received → saved, saved → created, created → published, published → gate passed, gate → shift.
    hops: [f64; 5],
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir()?;
    let mut opts = StackOptions::for_checkout(&root, &build_dir(), &work.path().join("stack"));
    opts.template = Some(root.join("template.yaml"));
    opts.parameters
        .push(("ManagedFunctions".into(), "app".into()));
    let stack = LocalStack::start(&opts)?;
    let outcome = run(&stack).await;
    drop(stack);
    outcome
}

async fn run(stack: &LocalStack) -> Result<()> {
    let config = stack.sdk_config().await;
    let lambda = stack.lambda().await;
    let store = Store::new(
        aws_sdk_dynamodb::Client::new(&config),
        stack.var("SLUICE_RESOURCE_STATE_TABLE"),
        chrono::Duration::days(1),
    );
    let s3 = aws_sdk_s3::Client::new(&config);
    let bucket = stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET").to_owned();
    let greeter = std::fs::read(build_dir().join("greeter")).context("the greeter's build")?;
    let role = aws_sdk_iam::Client::new(&config)
        .create_role()
        .role_name("app")
        .assume_role_policy_document("{}")
        .send()
        .await?
        .role
        .context("role")?
        .arn;
    let zip = |release: &str| bootstrap_zip(&greeter, &[("release", release.as_bytes())]);
    for name in ["app", "probe"] {
        lambda
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(zip("r0").into())
                    .build(),
            )
            .send()
            .await?;
        lambda
            .wait_until_function_active_v2()
            .function_name(name)
            .wait(Duration::from_secs(60))
            .await?;
    }
    let v1 = lambda.publish_version().function_name("app").send().await?;
    lambda
        .wait_until_published_version_active()
        .function_name("app")
        .qualifier(v1.version().unwrap_or("1"))
        .wait(Duration::from_secs(60))
        .await?;
    lambda
        .create_alias()
        .function_name("app")
        .name("live")
        .function_version(v1.version().unwrap_or("1"))
        .send()
        .await?;
    let definition = PIPELINE.replace(
        "PRE_TRAFFIC",
        stack.var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION"),
    );
    store
        .put_definition(&PipelineDefinition::parse(&definition)?, chrono::Utc::now())
        .await?;
    let secret = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id(stack.var("SLUICE_RESOURCE_WEBHOOK_SECRET"))
        .send()
        .await?
        .secret_string
        .context("the webhook secret")?;
    let http = reqwest::Client::new();
    let url = stack.var("SLUICE_URL_SOURCE_FUNCTION").to_owned();

    let mut samples = Vec::new();
    for n in 0..=PUSHES {
        let sha = format!("{:040x}", 0xa000 + n);
        s3.put_object()
            .bucket(&bucket)
            .key(format!("builds/acme/app/{sha}/app.zip"))
            .body(zip(&format!("r{}", n + 1)).into())
            .send()
            .await?;
        let mut body: serde_json::Value =
            serde_json::from_slice(include_bytes!("../events/github-push.json"))?;
        body["after"] = sha.clone().into();
        body["repository"]["full_name"] = "acme/app".into();
        let body = serde_json::to_vec(&body)?;
        let received = chrono::Utc::now();
        let answer: serde_json::Value = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header(
                "x-hub-signature-256",
                sluice::commits::sign(&body, secret.as_bytes()),
            )
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        let saved = chrono::Utc::now();
        let execution = answer["executions"][0]["execution"]
            .as_str()
            .with_context(|| format!("no execution in {answer}"))?
            .to_owned();
        let deployment = deployment_id(
            &execution,
            &sluice::domain::execution::ActionRef {
                stage: 1,
                action: 0,
                attempt: 1,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let timeline = loop {
            if let Ok(timeline) = store.events(&deployment).await
                && timeline.iter().any(|e| e.kind == EventKind::Shifted)
            {
                break timeline;
            }
            if Instant::now() > deadline {
                let e = store.load_execution(&execution).await;
                bail!("push {n}: no first shift within 60 s: {e:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let created = at(&timeline, EventKind::Created)?;
        let published = at(&timeline, EventKind::Prepared)?;
        let passed = at(&timeline, EventKind::GatePassed)?;
        let shifted = at(&timeline, EventKind::Shifted)?;
        // The rollout ends (its one-second bake, then 100%) before the next push.
        let ended = Instant::now() + Duration::from_secs(60);
        while !store
            .load(&deployment)
            .await?
            .deployment
            .phase
            .is_terminal()
        {
            if Instant::now() > ended {
                bail!("push {n}: {deployment} did not end");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first push warms every function: not a sample.
        if n > 0 {
            samples.push(Sample {
                hops: [
                    ms(saved - received),
                    ms(created - saved),
                    ms(published - created),
                    ms(passed - published),
                    ms(shifted - passed),
                ],
            });
        }
    }

    // What Lambda imposes: an update's `InProgress`, then the published
    // version's `Pending`, each read every 50 ms with `GetFunction` (its
    // quota is 100 a second, not the control plane's 15) until it ends.
    let mut imposed = Vec::new();
    for n in 0..PUSHES {
        lambda
            .update_function_code()
            .function_name("probe")
            .zip_file(zip(&format!("p{n}")).into())
            .send()
            .await?;
        let start = Instant::now();
        settle(&lambda, "$LATEST", |c| {
            c.last_update_status().map(|s| s.as_str()) == Some("Successful")
        })
        .await?;
        let v = lambda
            .publish_version()
            .function_name("probe")
            .send()
            .await?;
        let version = v.version().unwrap_or_default().to_owned();
        settle(&lambda, &version, |c| {
            c.state().map(|s| s.as_str()) == Some("Active")
        })
        .await?;
        imposed.push(start.elapsed().as_secs_f64() * 1e3);
    }

    let totals: Vec<f64> = samples.iter().map(|s| s.hops.iter().sum()).collect();
    let total_median = percentile(&totals, 0.5);
    println!(
        "webhook to first shift ({} pushes after a warm-up, each with its build in the bucket; canary:10:1s with a PreTraffic smoke test; release build, local stack at AWS's pace)",
        samples.len()
    );
    println!(
        "total: median {:.0} ms  p99 {:.0} ms",
        total_median,
        percentile(&totals, 0.99)
    );
    let names = [
        "webhook received → execution saved (the source function's answer)",
        "saved → deployment created (handed to the orchestrator, artifact found)",
        "created → version published (handed to the shifter, lock, code, waits)",
        "published → PreTraffic passed (the hook's smoke test)",
        "PreTraffic passed → first shift (UpdateAlias)",
    ];
    for (i, name) in names.iter().enumerate() {
        let hop: Vec<f64> = samples.iter().map(|s| s.hops[i]).collect();
        let median = percentile(&hop, 0.5);
        println!(
            "  {name:<75} median {median:>6.0} ms  p99 {:>6.0} ms  ({:.0}% of the median total)",
            percentile(&hop, 0.99),
            100.0 * median / total_median
        );
    }
    let imposed_median = percentile(&imposed, 0.5);
    println!(
        "function-state windows Lambda imposes (UpdateFunctionCode's InProgress, the new version's Pending; read every 50 ms, measured apart): median {imposed_median:.0} ms  p99 {:.0} ms",
        percentile(&imposed, 0.99)
    );
    println!(
        "Sluice's own time (median total less the median imposed wait): {:.0} ms   (target: under 1000 ms)",
        total_median - imposed_median
    );
    Ok(())
}
