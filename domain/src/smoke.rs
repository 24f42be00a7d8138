//! Smoke tests: an event to send and what the answer must look like. The
//! PreTraffic hook runs them against the new version before each shift.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One check a hook ran (a smoke test, an analysis), for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeTest {
    pub name: String,
    /// The release-group member it invokes, by function name (by default
    /// the deployment's own function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The invocation payload (default `{}`).
    #[serde(default = "empty_object")]
    pub event: Value,
    #[serde(default)]
    pub expect: Expectations,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Whether a function error is the expected answer (default: it fails the test).
    #[serde(default)]
    pub function_error: bool,
    /// The invoke's HTTP status (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// JSON pointers into the answer (`/message`) and the values they must hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u64>,
}

/// An object in S3, written `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl std::str::FromStr for S3Uri {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{text:?} must be written s3://bucket/key"))?;
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(S3Uri {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(format!("{text:?} must be written s3://bucket/key")),
        }
    }
}

impl TryFrom<String> for S3Uri {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<S3Uri> for String {
    fn from(uri: S3Uri) -> String {
        uri.to_string()
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Reads a smoke-test file: a YAML or JSON list of tests.
pub fn parse_smoke_test_file(text: &[u8]) -> Result<Vec<SmokeTest>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the file is not UTF-8 text".to_owned())?;
    serde_yaml_ng::from_str(text).map_err(|e| format!("not a list of smoke tests: {e}"))
}

/// What an invocation of the new version gave back.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: i32,
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
    pub latency: Duration,
}

/// Judges one smoke test's answer; the check's detail says every way it missed.
pub fn evaluate(test: &SmokeTest, seen: &Observed) -> Check {
    let expect = &test.expect;
    let mut misses = Vec::new();
    let want_status = expect.status.unwrap_or(200);
    if seen.status != want_status {
        misses.push(format!("status {} (expected {want_status})", seen.status));
    }
    match (&seen.function_error, expect.function_error) {
        (Some(kind), false) => {
            let message = serde_json::from_slice::<Value>(&seen.payload)
                .ok()
                .and_then(|v| v["errorMessage"].as_str().map(str::to_owned))
                .unwrap_or_default();
            misses.push(format!("function error {kind}: {message}"));
        }
        (None, true) => misses.push("no function error (one was expected)".into()),
        _ => {}
    }
    if !expect.fields.is_empty() {
        match serde_json::from_slice::<Value>(&seen.payload) {
            Ok(answer) => {
                for (pointer, want) in &expect.fields {
                    match answer.pointer(pointer) {
                        Some(got) if got == want => {}
                        Some(got) => misses.push(format!("{pointer} is {got} (expected {want})")),
                        None => misses.push(format!("{pointer} is missing (expected {want})")),
                    }
                }
            }
            Err(e) => misses.push(format!("the answer is not JSON: {e}")),
        }
    }
    if let Some(max) = expect.max_latency_ms
        && seen.latency > Duration::from_millis(max)
    {
        misses.push(format!(
            "took {} ms (at most {max} ms)",
            seen.latency.as_millis()
        ));
    }
    Check {
        name: test.name.clone(),
        passed: misses.is_empty(),
        detail: Some(if misses.is_empty() {
            format!("passed in {} ms", seen.latency.as_millis())
        } else {
            misses.join("; ")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(payload: Value, error: Option<&str>, ms: u64) -> Observed {
        Observed {
            status: 200,
            function_error: error.map(str::to_owned),
            payload: serde_json::to_vec(&payload).unwrap(),
            latency: Duration::from_millis(ms),
        }
    }

    fn test(expect: Value) -> SmokeTest {
        serde_json::from_value(
            json!({"name": "greets", "event": {"name": "Ada"}, "expect": expect}),
        )
        .unwrap()
    }

    #[test]
    fn a_matching_answer_passes() {
        let t = test(json!({"fields": {"/message": "Hello, Ada!"}, "max_latency_ms": 500}));
        let check = evaluate(&t, &seen(json!({"message": "Hello, Ada!"}), None, 12));
        assert!(check.passed, "{check:?}");
    }

    #[test]
    fn every_miss_is_named() {
        let t = test(
            json!({"fields": {"/message": "Hello, Ada!", "/version": "2"}, "max_latency_ms": 10}),
        );
        let check = evaluate(
            &t,
            &seen(
                json!({"errorMessage": "boom", "errorType": "E"}),
                Some("Unhandled"),
                50,
            ),
        );
        assert!(!check.passed);
        let detail = check.detail.unwrap();
        for part in [
            "function error Unhandled: boom",
            "/message is missing",
            "/version is missing",
            "took 50 ms",
        ] {
            assert!(detail.contains(part), "{detail}");
        }
        let expects_error = test(json!({"function_error": true}));
        assert!(evaluate(&expects_error, &seen(json!({}), Some("Unhandled"), 1)).passed);
        assert!(!evaluate(&expects_error, &seen(json!({}), None, 1)).passed);
    }

    #[test]
    fn unknown_expectations_are_refused() {
        let bad =
            serde_json::from_value::<SmokeTest>(json!({"name": "x", "expect": {"stauts": 200}}));
        assert!(bad.unwrap_err().to_string().contains("stauts"));
    }

    #[test]
    fn s3_uris_and_smoke_test_files_are_checked() {
        let uri: S3Uri = "s3://bucket/smoke/a.yaml".parse().unwrap();
        assert_eq!(
            (uri.bucket.as_str(), uri.key.as_str()),
            ("bucket", "smoke/a.yaml")
        );
        assert_eq!(uri.to_string(), "s3://bucket/smoke/a.yaml");
        for bad in [
            "bucket/key",
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "https://x/y",
        ] {
            assert!(
                bad.parse::<S3Uri>()
                    .unwrap_err()
                    .contains("s3://bucket/key"),
                "{bad}"
            );
        }
        let tests = parse_smoke_test_file(b"- name: a\n- {name: b, event: {x: 1}}").unwrap();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[1].event, json!({"x": 1}));
        assert!(
            parse_smoke_test_file(b"name: a")
                .unwrap_err()
                .starts_with("not a list")
        );
        assert!(parse_smoke_test_file(b"- {name: a, expect: {colour: red}}").is_err());
        assert_eq!(
            parse_smoke_test_file(&[0xff, 0xfe]).unwrap_err(),
            "the file is not UTF-8 text"
        );
    }
}
