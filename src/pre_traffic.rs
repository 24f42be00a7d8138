//! The PreTraffic hook Sluice ships: runs the deployment's smoke tests against
//! the new version itself (qualifier = version number), before any traffic
//! reaches it at this step.

use crate::domain::hooks::{HookRequest, HookResponse, HookStatus};
use crate::domain::smoke::{Observed, evaluate};
use aws_sdk_lambda::primitives::Blob;
use std::time::Instant;

pub async fn run(lambda: &aws_sdk_lambda::Client, request: &HookRequest) -> HookResponse {
    if request.smoke_tests.is_empty() {
        return HookResponse {
            status: HookStatus::Succeeded,
            reason: Some("no smoke tests configured".into()),
            checks: vec![],
        };
    }
    let mut checks = Vec::new();
    for test in &request.smoke_tests {
        let started = Instant::now();
        let invoked = lambda
            .invoke()
            .function_name(&request.function)
            .qualifier(&request.to_version)
            .payload(Blob::new(
                serde_json::to_vec(&test.event).expect("JSON values serialise"),
            ))
            .send()
            .await;
        let check = match invoked {
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
            Err(e) => crate::domain::hooks::Check {
                name: test.name.clone(),
                passed: false,
                detail: Some(format!(
                    "could not invoke {}:{}: {e:?}",
                    request.function, request.to_version
                )),
            },
        };
        tracing::info!(deployment_id = %request.deployment_id, check = %check.name, passed = check.passed, detail = ?check.detail, "smoke test");
        checks.push(check);
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail.clone().unwrap_or_default()))
        .collect();
    let status = if failed.is_empty() {
        HookStatus::Succeeded
    } else {
        HookStatus::Failed
    };
    let reason = if failed.is_empty() {
        format!(
            "{} smoke tests passed on version {}",
            checks.len(),
            request.to_version
        )
    } else {
        format!(
            "smoke tests failed on version {}: {}",
            request.to_version,
            failed.join("; ")
        )
    };
    HookResponse {
        status,
        reason: Some(reason),
        checks,
    }
}
