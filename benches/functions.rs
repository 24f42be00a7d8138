//! Part of `make bench`: each function of template.yaml as Lambda gets it.
//!
//! - Size: the release binary (stripped by the release profile), and zipped
//!   as a package (`bootstrap`; deflate level 1, as sluice-local packs: a
//!   package built by `sam build` is no larger).
//! - Cold init: from spawning the binary to its first `GET .../invocation/next`
//!   on a Runtime API served here, the work its `main` does before taking an
//!   event (settings, SDK clients). Median and p99 of 30 starts; and the
//!   median again with `SSL_CERT_FILE` naming this machine's CA bundle, when
//!   a function trusts the system store instead of its compiled-in Amazon
//!   Trust Services roots (`sluice::aws::Trust`): what that choice costs.
//! - An SDK client's first request after init, with and without a warming
//!   request made during init (DynamoDB on the local moto: plain HTTP, so
//!   without the DNS and TLS handshakes a first request pays in AWS).

use anyhow::{Context, Result, bail};
use sluice_local::code::bootstrap_zip;
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use sluice_local::template::Template;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STARTS: usize = 30;
const MAX_ZIPPED_MB: f64 = 8.0;
const MAX_INIT_MS: f64 = 5.0;
/// This machine's CA bundle (Debian's path).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the functions read at init, with values that need no network.
const ENVIRONMENT: [(&str, &str); 17] = [
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "bench"),
    ("AWS_SECRET_ACCESS_KEY", "bench"),
    ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
    ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
    ("SLUICE_TABLE", "sluice-state"),
    ("SLUICE_ARTIFACT_BUCKET", "sluice-artifacts"),
    (
        "SLUICE_TIMER_QUEUE_URL",
        "https://sqs.us-east-1.amazonaws.com/123456789012/timers",
    ),
    (
        "SLUICE_PIPELINE_TIMER_QUEUE_URL",
        "https://sqs.us-east-1.amazonaws.com/123456789012/pipeline-timers",
    ),
    ("SLUICE_HISTORY_RETENTION_DAYS", "90"),
    ("SLUICE_STACK_NAME", "sluice"),
    ("SLUICE_HOOK_TIMEOUT_SECONDS", "60"),
    (
        "SLUICE_WEBHOOK_SECRET",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook",
    ),
    ("RUST_LOG", "info"),
];

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// Spawns the binary against a Runtime API of our own and times its first `next`.
async fn cold_init(binary: &PathBuf, extra: &[(&str, &str)]) -> Result<Duration> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(ENVIRONMENT)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut stream, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let took = started.elapsed();
        let _ = stream
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            .await;
        anyhow::Ok((took, request))
    })
    .await;
    let _ = child.start_kill();
    let (took, request) = match accepted {
        Ok(outcome) => outcome?,
        Err(_) => {
            let output = child.wait_with_output().await?;
            bail!(
                "{} never asked for an event: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    let line = String::from_utf8_lossy(&request);
    if !line.starts_with("GET /2018-06-01/runtime/invocation/next") {
        bail!("{} asked first: {line}", binary.display());
    }
    let _ = child.wait().await;
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let template = Template::load(&root.join("template.yaml"))?;
    let mut functions: Vec<(String, String)> = template
        .resources
        .iter()
        .filter(|(_, r)| r.kind == "AWS::Serverless::Function")
        .filter_map(|(id, r)| {
            let binary = r.metadata.pointer("/BuildProperties/Binary")?.as_str()?;
            Some((id.clone(), binary.to_owned()))
        })
        .collect();
    functions.sort();
    println!(
        "functions benchmark (release build in {}; {STARTS} cold starts each)",
        build_dir().display()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "function", "binary MB", "zipped MB", "init median", "init p99", "system store"
    );
    let mut over = Vec::new();
    for (id, binary) in &functions {
        let path = build_dir().join(binary);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{} (make bench builds it)", path.display()))?;
        let zipped = bootstrap_zip(&bytes, &[]).len();
        let mut starts = Vec::with_capacity(STARTS);
        for _ in 0..STARTS {
            starts.push(cold_init(&path, &[]).await?);
        }
        let median = percentile(&mut starts, 0.5);
        let p99 = percentile(&mut starts, 0.99);
        let mut bundled = Vec::with_capacity(STARTS);
        for _ in 0..STARTS {
            bundled.push(cold_init(&path, &[("SSL_CERT_FILE", CA_BUNDLE)]).await?);
        }
        let bundled = percentile(&mut bundled, 0.5);
        let mb = |n: usize| n as f64 / 1024.0 / 1024.0;
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>9.2} ms {:>9.2} ms {:>11.2} ms",
            id,
            mb(bytes.len()),
            mb(zipped),
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            bundled.as_secs_f64() * 1e3
        );
        if mb(zipped) > MAX_ZIPPED_MB {
            over.push(format!("{id} is {:.1} MB zipped", mb(zipped)));
        }
        if median.as_secs_f64() * 1e3 > MAX_INIT_MS {
            over.push(format!(
                "{id} takes {:.2} ms to init",
                median.as_secs_f64() * 1e3
            ));
        }
    }
    println!("targets: zipped under {MAX_ZIPPED_MB} MB, init median under {MAX_INIT_MS} ms");
    if over.is_empty() {
        println!("all functions meet both");
    } else {
        println!("over target: {}", over.join("; "));
    }
    first_requests(&root).await
}

/// The time of an SDK client's first request after init, cold and after a
/// warming request during init, against the local moto.
async fn first_requests(root: &std::path::Path) -> Result<()> {
    let work = tempfile::tempdir()?;
    let stack = LocalStack::start(&StackOptions::for_checkout(
        root,
        &build_dir(),
        &work.path().join("stack"),
    ))?;
    let endpoint = stack.var("AWS_ENDPOINT_URL").to_owned();
    let table = "first-requests";
    let setup = aws_sdk_dynamodb::Client::new(&stack.sdk_config().await);
    setup
        .create_table()
        .table_name(table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;
    // As the functions build their client: a fresh configuration and HTTP
    // client each time, as a new sandbox has.
    let client = || async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(sluice::aws::http_client(
                sluice::aws::Trust::AmazonTrustServices,
            ))
            .timeout_config(sluice::aws::api_timeouts())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .load()
            .await;
        aws_sdk_dynamodb::Client::new(&config)
    };
    let get = |c: aws_sdk_dynamodb::Client| async move {
        let started = Instant::now();
        c.get_item()
            .table_name(table)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
            .send()
            .await?;
        anyhow::Ok(started.elapsed())
    };
    let (mut cold, mut warming, mut warmed, mut second) = (vec![], vec![], vec![], vec![]);
    for _ in 0..STARTS {
        let c = client().await;
        cold.push(get(c.clone()).await?);
        second.push(get(c).await?);
        let c = client().await;
        warming.push(get(c.clone()).await?);
        warmed.push(get(c).await?);
    }
    let ms = |samples: &mut Vec<Duration>| {
        format!(
            "median {:.2} ms  p99 {:.2} ms",
            percentile(samples, 0.5).as_secs_f64() * 1e3,
            percentile(samples, 0.99).as_secs_f64() * 1e3
        )
    };
    println!(
        "an SDK client's first request (DynamoDB GetItem, local moto over plain HTTP; {STARTS} fresh clients each):"
    );
    println!("  first request, no warming:             {}", ms(&mut cold));
    println!(
        "  first request after a warming request: {}",
        ms(&mut warmed)
    );
    println!(
        "  the warming request itself (in init):  {}",
        ms(&mut warming)
    );
    println!(
        "  any later request:                     {}",
        ms(&mut second)
    );
    Ok(())
}
