//! The hook contract: what a PreTraffic or PostTraffic hook function is sent,
//! and what it answers. Any Lambda that speaks it can gate a shift.

use crate::deployment::Gate;
pub use crate::smoke::Check;
use crate::smoke::{S3Uri, SmokeTest};
use serde::{Deserialize, Serialize};

/// Sent to a hook function (synchronously, with a deadline) before or after
/// each shift. Read strictly by Sluice's own hooks: an event written by hand
/// with a misspelled `smokeTests` must not pass with no smoke test run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookRequest {
    pub deployment_id: String,
    pub function: String,
    pub alias: String,
    pub from_version: String,
    pub to_version: String,
    /// The versions' qualified ARNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version_arn: Option<String>,
    /// 1-based, as shown to people.
    pub step: usize,
    pub steps: usize,
    /// Percent of traffic on the new version: about to be (PreTraffic) or now (PostTraffic).
    pub weight: f64,
    /// A gradual rollback is stepping the new version's weight down: the
    /// PostTraffic gate judges the old version (`from_version`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stepping_back: bool,
    pub gate: Gate,
    /// A release group's other members, moved in lockstep with `function`
    /// (each at `weight`): a hook judges the whole group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<HookMember>,
    /// When the gate fails unless the hook has answered (or, asynchronous,
    /// reported or heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// For an asynchronous hook: the single-use token it reports with
    /// (`POST /hook-reports`) or heartbeats with (`POST /hook-heartbeats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_token: Option<String>,
    /// The deployment's smoke tests (what a PreTraffic hook runs against `to_version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smoke_tests: Vec<SmokeTest>,
    /// More smoke tests, in a YAML or JSON file in S3; a file that cannot be read fails the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_tests_from: Option<S3Uri>,
}

/// One more member of a release group, as a hook is told of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookMember {
    pub function: String,
    pub alias: String,
    pub from_version: String,
    pub to_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version_arn: Option<String>,
}

/// What CodeDeploy sends a Lambda lifecycle hook, and what Sluice sends a
/// hook of `hook_invocation: codedeploy`: the hook reports with both ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CodeDeployHookEvent {
    pub deployment_id: String,
    /// Sluice's callback token.
    pub lifecycle_event_hook_execution_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookStatus {
    Succeeded,
    Failed,
}

/// A hook's answer. Anything else (an error, a timeout, another shape, a
/// field it does not have) fails the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookResponse {
    pub status: HookStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

impl HookResponse {
    /// One line for the timeline: the reason, or the failed checks.
    pub fn summary(&self) -> String {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        match (&self.reason, failed.is_empty()) {
            (Some(r), _) => r.clone(),
            (None, false) => format!("failed checks: {}", failed.join(", ")),
            (None, true) => format!("{} checks passed", self.checks.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_documented_samples_are_the_contract() {
        let request: HookRequest = serde_json::from_str(&sample("hook-request.json")).unwrap();
        assert_eq!(
            (request.gate, request.step, request.weight),
            (Gate::PreTraffic, 1, 10.0)
        );
        assert_eq!(request.smoke_tests.len(), 2);
        let response: HookResponse = serde_json::from_str(&sample("hook-response.json")).unwrap();
        assert_eq!(response.status, HookStatus::Failed);
        assert!(response.summary().starts_with("checks failed"));
        let minimal: HookResponse = serde_json::from_str(r#"{"status":"Succeeded"}"#).unwrap();
        assert_eq!(minimal.summary(), "0 checks passed");
        assert!(request.deadline.is_some());
        let codedeploy: CodeDeployHookEvent =
            serde_json::from_str(&sample("codedeploy-hook-event.json")).unwrap();
        assert!(
            codedeploy
                .lifecycle_event_hook_execution_id
                .starts_with(&format!("{}.", codedeploy.deployment_id))
        );
    }

    #[test]
    fn an_event_with_a_field_the_contract_lacks_is_refused() {
        let mut request: serde_json::Value =
            serde_json::from_str(&sample("hook-request.json")).unwrap();
        let tests = request["smokeTests"].take();
        request.as_object_mut().unwrap().remove("smokeTests");
        request["smokeTest"] = tests;
        let err = serde_json::from_value::<HookRequest>(request).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `smokeTest`"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_with_a_field_the_contract_lacks_fails_the_gate() {
        for answer in [
            r#"{"status":"Succeeded","reaosn":"typo"}"#,
            r#"{"status":"Succeeded","checks":[{"name":"n","passed":true,"detial":"typo"}]}"#,
        ] {
            let err = serde_json::from_str::<HookResponse>(answer).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{answer}: {err}");
        }
    }
}
