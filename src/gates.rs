//! The two hooks Sluice ships. PreTraffic runs the deployment's smoke tests
//! against the new version itself (by version number), before traffic reaches
//! it. PostTraffic runs them through the alias and judges the new version's
//! CloudWatch numbers since the shift against thresholds and the old version.

use crate::aws::service_message;
use crate::clock::{Clock, SystemClock};
use crate::domain::analysis::{Counts, OnInconclusive, Verdict, judge};
use crate::domain::hooks::{Check, HookRequest, HookResponse, HookStatus};
use crate::domain::smoke::{Observed, S3Uri, SmokeTest, evaluate, parse_smoke_test_file};
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_lambda::primitives::Blob;
use std::time::{Duration, Instant};

/// How often PostTraffic looks again while it waits for enough calls.
const ANALYSIS_POLL: Duration = Duration::from_secs(1);

/// The clients a hook needs, built once per process.
#[derive(Clone)]
pub struct HookClients<K = SystemClock> {
    pub lambda: aws_sdk_lambda::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub s3: aws_sdk_s3::Client,
    pub clock: K,
}

impl HookClients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        HookClients {
            lambda: aws_sdk_lambda::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            s3: aws_sdk_s3::Client::new(config),
            clock: SystemClock,
        }
    }
}

pub async fn pre_traffic<K: Clock>(
    clients: &HookClients<K>,
    request: &HookRequest,
) -> HookResponse {
    let checks = smoke_tests(clients, request, &request.to_version).await;
    verdict(request, checks)
}

pub async fn post_traffic<K: Clock>(
    clients: &HookClients<K>,
    request: &HookRequest,
) -> HookResponse {
    let cloudwatch = &clients.cloudwatch;
    let mut checks = smoke_tests(clients, request, &request.alias).await;
    if let Some(settings) = &request.analysis {
        let started = clients.clock.now();
        let since = request.shifted_at.unwrap_or(started);
        let check = loop {
            let measured = async {
                let now = clients.clock.now();
                let new = counts(cloudwatch, request, &request.to_version, since, now).await?;
                let old = counts(cloudwatch, request, &request.from_version, since, now).await?;
                Ok::<_, String>((new, old))
            }
            .await;
            let (new, old) = match measured {
                Ok(c) => c,
                Err(e) => break failed_check(format!("metrics could not be read: {e}")),
            };
            match judge(settings, &new, &old) {
                Verdict::Pass(why) => break passed_check(why),
                Verdict::Fail(why) => break failed_check(why),
                Verdict::Inconclusive(why) => match settings.on_inconclusive {
                    OnInconclusive::Pass => {
                        break passed_check(format!(
                            "inconclusive, passed by configuration: {why}"
                        ));
                    }
                    OnInconclusive::Fail => break failed_check(format!("inconclusive: {why}")),
                    OnInconclusive::Wait
                        if clients.clock.now() - started
                            >= chrono::Duration::seconds(settings.max_wait_seconds as i64) =>
                    {
                        break failed_check(format!(
                            "still inconclusive after {} s: {why}",
                            settings.max_wait_seconds
                        ));
                    }
                    OnInconclusive::Wait => clients.clock.sleep(ANALYSIS_POLL).await,
                },
            }
        };
        checks.push(check);
    }
    verdict(request, checks)
}

fn passed_check(detail: String) -> Check {
    Check {
        name: "analysis".into(),
        passed: true,
        detail: Some(detail),
    }
}

fn failed_check(detail: String) -> Check {
    Check {
        name: "analysis".into(),
        passed: false,
        detail: Some(detail),
    }
}

/// The new version's (or the old one's) calls through the alias since `since`.
async fn counts(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    request: &HookRequest,
    version: &str,
    since: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Counts, String> {
    let resource = format!("{}:{}", request.function, request.alias);
    let dims = [
        ("FunctionName", request.function.as_str()),
        ("Resource", resource.as_str()),
        ("ExecutedVersion", version),
    ];
    let start = aws_smithy_types::DateTime::from_millis(since.timestamp_millis());
    let end = aws_smithy_types::DateTime::from_secs(now.timestamp() + 60);
    let mut sums = [0.0; 3];
    for (i, metric) in ["Invocations", "Errors", "Duration"].iter().enumerate() {
        let out = cloudwatch
            .get_metric_statistics()
            .namespace("AWS/Lambda")
            .metric_name(*metric)
            .set_dimensions(Some(
                dims.iter()
                    .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                    .collect(),
            ))
            .start_time(start)
            .end_time(end)
            .period(60)
            .statistics(Statistic::Sum)
            .send()
            .await
            .map_err(|e| format!("GetMetricStatistics {metric}: {e:?}"))?;
        sums[i] = out.datapoints().iter().filter_map(|d| d.sum()).sum();
    }
    Ok(Counts {
        invocations: sums[0],
        errors: sums[1],
        duration_ms: sums[2],
    })
}

/// Reads the deployment's smoke-test file from S3.
async fn smoke_test_file(s3: &aws_sdk_s3::Client, uri: &S3Uri) -> Result<Vec<SmokeTest>, String> {
    let object = s3
        .get_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .send()
        .await
        .map_err(|e| service_message(&e))?;
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    parse_smoke_test_file(&body.into_bytes())
}

async fn smoke_tests<K>(
    clients: &HookClients<K>,
    request: &HookRequest,
    qualifier: &str,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut tests = request.smoke_tests.clone();
    if let Some(uri) = &request.smoke_tests_from {
        match smoke_test_file(&clients.s3, uri).await {
            Ok(more) => tests.extend(more),
            Err(reason) => checks.push(Check {
                name: format!("smoke tests from {uri}"),
                passed: false,
                detail: Some(reason),
            }),
        }
    }
    for test in &tests {
        let check = run_smoke_test(&clients.lambda, &request.function, qualifier, test).await;
        tracing::info!(deployment_id = %request.deployment_id, check = %check.name, passed = check.passed, detail = ?check.detail, "smoke test");
        checks.push(check);
    }
    checks
}

async fn run_smoke_test(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    qualifier: &str,
    test: &SmokeTest,
) -> Check {
    let started = Instant::now();
    let invoked = lambda
        .invoke()
        .function_name(function)
        .qualifier(qualifier)
        .payload(Blob::new(
            serde_json::to_vec(&test.event).expect("JSON values serialise"),
        ))
        .send()
        .await;
    match invoked {
        Ok(out) => evaluate(
            test,
            &Observed {
                status: out.status_code(),
                function_error: out.function_error().map(str::to_owned),
                payload: out
                    .payload()
                    .map(|p| p.as_ref().to_vec())
                    .unwrap_or_default(),
                latency: started.elapsed(),
            },
        ),
        Err(e) => Check {
            name: test.name.clone(),
            passed: false,
            detail: Some(format!("could not invoke {function}:{qualifier}: {e:?}")),
        },
    }
}

fn verdict(request: &HookRequest, checks: Vec<Check>) -> HookResponse {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail.clone().unwrap_or_default()))
        .collect();
    let (status, reason) = match (checks.is_empty(), failed.is_empty()) {
        (true, _) => (
            HookStatus::Succeeded,
            "no smoke tests or analysis configured".to_owned(),
        ),
        (false, true) => (
            HookStatus::Succeeded,
            format!(
                "{} checks passed on version {}",
                checks.len(),
                request.to_version
            ),
        ),
        (false, false) => (
            HookStatus::Failed,
            format!(
                "checks failed on version {}: {}",
                request.to_version,
                failed.join("; ")
            ),
        ),
    };
    HookResponse {
        status,
        reason: Some(reason),
        checks,
    }
}
