//! `make bench-local`: what sluice-local adds to an invocation.
//!
//! - Warm: median and p99 of an invoke through sluice-local's Lambda API (HTTP,
//!   qualifier resolution, metrics) against the same release binary driven
//!   through the Runtime API loop directly (in-process `Pool::invoke`).
//! - Cold: the first invoke of a new version through sluice-local (unpack
//!   included), against the binary's own start (spawn to first response on
//!   code already unpacked, driven directly).

use anyhow::{Context, Result};
use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use bytes::Bytes;
use sluice_local::code::{CodeStore, bootstrap_zip};
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use sluice_local::sandbox::{FunctionSpec, Pool, SandboxSettings};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARM_CALLS: usize = 2000;
const COLD_STARTS: usize = 20;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

/// `a - b` in milliseconds, with its sign.
fn signed_ms(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn spec(code_sha: &str, version: &str) -> FunctionSpec {
    FunctionSpec {
        function_name: "bench".into(),
        function_arn: "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
        version: version.into(),
        code_sha: code_sha.into(),
        timeout: Duration::from_secs(5),
        memory_mb: 128,
        handler: None,
        environment: Default::default(),
        role: String::new(),
    }
}

async fn direct(greeter: &[u8], work: &std::path::Path) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let store = Arc::new(CodeStore::open(&work.join("direct-code"))?);
    let settings = SandboxSettings {
        region: "us-east-1".into(),
        inherited_env: Vec::new(),
    };
    let payload = Bytes::from_static(br#"{"name":"bench"}"#);
    // The binary's own start: a fresh process on code already unpacked.
    let mut starts = Vec::new();
    for i in 0..COLD_STARTS {
        let zip = bootstrap_zip(greeter, &[("release", format!("direct-{i}").as_bytes())]);
        let sha = store.put(&zip)?;
        store.unpacked(&sha).await?;
        let pool = Pool::new(store.clone(), settings.clone(), 4);
        let started = Instant::now();
        pool.invoke(&spec(&sha, "1"), "cold", payload.clone(), "arn", None)
            .await?;
        starts.push(started.elapsed());
        pool.shutdown();
    }
    let zip = bootstrap_zip(greeter, &[("release", b"direct-warm")]);
    let sha = store.put(&zip)?;
    let pool = Pool::new(store.clone(), settings, 4);
    let warm_spec = spec(&sha, "1");
    pool.invoke(&warm_spec, "warm-up", payload.clone(), "arn", None)
        .await?;
    let mut warm = Vec::with_capacity(WARM_CALLS);
    for i in 0..WARM_CALLS {
        let started = Instant::now();
        let outcome = pool
            .invoke(&warm_spec, &i.to_string(), payload.clone(), "arn", None)
            .await?;
        warm.push(started.elapsed());
        anyhow::ensure!(!outcome.is_error(), "direct invoke failed");
    }
    pool.shutdown();
    Ok((warm, starts))
}

async fn through_sluice_local(
    greeter: &[u8],
    work: &std::path::Path,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut opts = StackOptions::for_checkout(&root, &build_dir(), &work.join("stack"));
    opts.sluice_local = PathBuf::from(env!("CARGO_BIN_EXE_sluice-local"));
    let stack = LocalStack::start(&opts)?;
    let lambda = stack.lambda().await;
    let iam = aws_sdk_iam::Client::new(&stack.sdk_config().await);
    let role = iam
        .create_role()
        .role_name("bench")
        .assume_role_policy_document("{}")
        .send()
        .await?
        .role
        .context("role")?
        .arn;
    let http = reqwest::Client::new();
    let endpoint = stack.var("AWS_ENDPOINT_URL_LAMBDA").to_owned();
    let invoke = |name: String| {
        let http = http.clone();
        let url = format!("{endpoint}/2015-03-31/functions/{name}/invocations?Qualifier=1");
        async move {
            let started = Instant::now();
            let answer = http.post(url).body(r#"{"name":"bench"}"#).send().await?;
            anyhow::ensure!(
                answer.status() == 200 && answer.headers().get("x-amz-function-error").is_none()
            );
            answer.bytes().await?;
            Ok(started.elapsed())
        }
    };
    let mut cold = Vec::new();
    for i in 0..=COLD_STARTS {
        let name = format!("bench-{i}");
        let zip = bootstrap_zip(greeter, &[("release", name.as_bytes())]);
        lambda
            .create_function()
            .function_name(&name)
            .runtime(Runtime::from("provided.al2023"))
            .handler("bootstrap")
            .role(&role)
            .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
            .publish(true)
            .send()
            .await?;
        lambda
            .wait_until_function_active_v2()
            .function_name(&name)
            .wait(Duration::from_secs(60))
            .await?;
        // bench-0 warms sluice-local's own connections; the rest are measured.
        let took = invoke(name).await?;
        if i > 0 {
            cold.push(took);
        }
    }
    let warm_name = "bench-0".to_owned();
    let mut warm = Vec::with_capacity(WARM_CALLS);
    for _ in 0..WARM_CALLS {
        warm.push(invoke(warm_name.clone()).await?);
    }
    Ok((warm, cold))
}

#[tokio::main]
async fn main() -> Result<()> {
    let greeter_path = build_dir().join("greeter");
    let greeter = std::fs::read(&greeter_path)
        .with_context(|| format!("{} (make bench-local builds it)", greeter_path.display()))?;
    let work = tempfile::tempdir()?;
    let (mut direct_warm, mut own_start) = direct(&greeter, work.path()).await?;
    let (mut local_warm, mut local_cold) = through_sluice_local(&greeter, work.path()).await?;

    let (d50, d99) = (
        percentile(&mut direct_warm, 0.5),
        percentile(&mut direct_warm, 0.99),
    );
    let (l50, l99) = (
        percentile(&mut local_warm, 0.5),
        percentile(&mut local_warm, 0.99),
    );
    let (s50, c50) = (
        percentile(&mut own_start, 0.5),
        percentile(&mut local_cold, 0.5),
    );
    println!(
        "sluice-local invoke benchmark (release build; greeter, release build; {WARM_CALLS} warm calls, {COLD_STARTS} cold starts)"
    );
    println!(
        "warm, Runtime API loop directly:  median {}  p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "warm, through sluice-local:       median {}  p99 {}",
        ms(l50),
        ms(l99)
    );
    // The two runs are not paired, so this is the difference of their
    // percentiles; shown signed, so noise (a negative difference) is seen,
    // not hidden as zero.
    println!(
        "warm, added by sluice-local:      median {}  p99 {}   (difference of the percentiles above; target: median under 1 ms)",
        signed_ms(l50, d50),
        signed_ms(l99, d99)
    );
    println!("cold, binary's own start:         median {}", ms(s50));
    println!(
        "cold, first invoke via sluice-local (unpack included): median {}  p99 {}",
        ms(c50),
        ms(percentile(&mut local_cold, 0.99))
    );
    println!(
        "cold, added by sluice-local:      median {}   (target: under 50 ms)",
        signed_ms(c50, s50)
    );
    Ok(())
}
