//! The two hooks Sluice ships. PreTraffic runs the deployment's smoke tests
//! against the new version itself (by version number), before traffic reaches
//! it. PostTraffic runs them through the alias, as callers reach it.

use crate::aws::service_message;
use crate::domain::hooks::{Check, HookRequest, HookResponse, HookStatus};
use crate::domain::smoke::{Observed, S3Uri, SmokeTest, evaluate, parse_smoke_test_file};
use aws_sdk_lambda::primitives::Blob;
use std::time::Instant;

/// The clients a hook needs, built once per process.
#[derive(Clone)]
pub struct HookClients {
    pub lambda: aws_sdk_lambda::Client,
    pub s3: aws_sdk_s3::Client,
}

impl HookClients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        HookClients {
            lambda: aws_sdk_lambda::Client::new(config),
            s3: aws_sdk_s3::Client::new(config),
        }
    }
}

pub async fn pre_traffic(clients: &HookClients, request: &HookRequest) -> HookResponse {
    let checks = smoke_tests(clients, request, Invoke::NewVersion).await;
    verdict(&tested(request, Invoke::NewVersion), checks)
}

/// Smoke tests through the alias, after a shift. The new version's metrics
/// are judged by the deployment itself, over CloudWatch's published minutes.
/// While a gradual rollback steps back, the old version is judged, by its
/// number: it is what the traffic goes back to.
pub async fn post_traffic(clients: &HookClients, request: &HookRequest) -> HookResponse {
    let invoke = if request.stepping_back {
        Invoke::OldVersion
    } else {
        Invoke::Alias
    };
    let checks = smoke_tests(clients, request, invoke).await;
    verdict(&tested(request, invoke), checks)
}

/// What a smoke test invokes of the function it names.
#[derive(Clone, Copy)]
enum Invoke {
    NewVersion,
    Alias,
    OldVersion,
}

/// The function and qualifier a smoke test invokes: the member it names
/// (by default the deployment's own function), as `invoke` says.
fn target(
    request: &HookRequest,
    test: &SmokeTest,
    invoke: Invoke,
) -> Result<(String, String), String> {
    let own = (
        request.function.as_str(),
        [&request.to_version, &request.alias, &request.from_version],
    );
    let members = request.group.iter().map(|m| {
        (
            m.function.as_str(),
            [&m.to_version, &m.alias, &m.from_version],
        )
    });
    let wanted = test.function.as_deref().unwrap_or(&request.function);
    let Some((function, [new, alias, old])) = std::iter::once(own)
        .chain(members)
        .find(|(f, _)| *f == wanted)
    else {
        return Err(format!("{wanted} is not a function this deployment moves"));
    };
    let qualifier = match invoke {
        Invoke::NewVersion => new,
        Invoke::Alias => alias,
        Invoke::OldVersion => old,
    };
    Ok((function.to_owned(), qualifier.clone()))
}

/// What the smoke tests invoked, for the hook's answer.
fn tested(request: &HookRequest, invoke: Invoke) -> String {
    if !request.group.is_empty() {
        return match invoke {
            Invoke::NewVersion => "the group's new versions",
            Invoke::Alias => "the group's aliases",
            Invoke::OldVersion => "the group's old versions",
        }
        .into();
    }
    match invoke {
        Invoke::NewVersion => format!("version {}", request.to_version),
        Invoke::Alias => format!("alias {}", request.alias),
        Invoke::OldVersion => format!("version {}", request.from_version),
    }
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

async fn smoke_tests(clients: &HookClients, request: &HookRequest, invoke: Invoke) -> Vec<Check> {
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
        let check = match target(request, test, invoke) {
            Ok((function, qualifier)) => {
                run_smoke_test(&clients.lambda, &function, &qualifier, test).await
            }
            Err(why) => Check {
                name: test.name.clone(),
                passed: false,
                detail: Some(why),
            },
        };
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

/// The hook's answer on `tested` (what the smoke tests invoked).
fn verdict(tested: &str, checks: Vec<Check>) -> HookResponse {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail.clone().unwrap_or_default()))
        .collect();
    let (status, reason) = match (checks.is_empty(), failed.is_empty()) {
        (true, _) => (
            HookStatus::Succeeded,
            "no smoke tests configured".to_owned(),
        ),
        (false, true) => (
            HookStatus::Succeeded,
            format!("{} checks passed on {tested}", checks.len()),
        ),
        (false, false) => (
            HookStatus::Failed,
            format!("checks failed on {tested}: {}", failed.join("; ")),
        ),
    };
    HookResponse {
        status,
        reason: Some(reason),
        checks,
    }
}
