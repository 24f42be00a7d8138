//! A function's configuration for asynchronous invocation (its
//! `EventInvokeConfig`), as
//! <https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-configuring.html>
//! and <https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html>
//! define it: how often a failed event is retried (0 to 2, default 2), how
//! old an event may grow before it is discarded (60 s to 6 h, default 6 h),
//! and where a record of each success and each discarded event is sent.
//! moto keeps only the first configuration ever put for a function, so
//! sluice-local keeps them itself.

use serde_json::{Value, json};
use std::time::Duration;

/// Lambda's defaults: two retries, events kept six hours.
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Sqs(String),
    Lambda(String),
}

impl Destination {
    pub fn arn(&self) -> &str {
        match self {
            Destination::Sqs(arn) | Destination::Lambda(arn) => arn,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsyncConfig {
    /// `None`: not set (Lambda's default applies, and it is not echoed).
    pub max_retries: Option<u32>,
    pub max_event_age: Option<Duration>,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
}

impl AsyncConfig {
    pub fn retries(&self) -> u32 {
        self.max_retries.unwrap_or(DEFAULT_RETRIES)
    }

    pub fn max_age(&self) -> Duration {
        self.max_event_age.unwrap_or(DEFAULT_MAX_AGE)
    }

    /// Reads the Lambda API's body (`PutFunctionEventInvokeConfig`) or, with
    /// `sam` set, a SAM function's `EventInvokeConfig` (whose destinations
    /// also carry a `Type`). Unknown fields and values out of Lambda's ranges
    /// are refused by name.
    pub fn parse(value: &Value, sam: bool) -> Result<Self, String> {
        let fields = value
            .as_object()
            .ok_or("the configuration must be an object")?;
        if let Some(unknown) = fields.keys().find(|k| {
            ![
                "MaximumRetryAttempts",
                "MaximumEventAgeInSeconds",
                "DestinationConfig",
            ]
            .contains(&k.as_str())
        }) {
            return Err(format!("{unknown} is not a field of EventInvokeConfig"));
        }
        let int = |key: &str, range: std::ops::RangeInclusive<i64>| match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if range.contains(&n) => Ok(Some(n as u64)),
                _ => Err(format!(
                    "{key} {v} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                )),
            },
        };
        let max_retries = int("MaximumRetryAttempts", 0..=2)?.map(|n| n as u32);
        let max_event_age = int("MaximumEventAgeInSeconds", 60..=21_600)?.map(Duration::from_secs);
        let (mut on_success, mut on_failure) = (None, None);
        if let Some(config) = fields.get("DestinationConfig").filter(|v| !v.is_null()) {
            let config = config
                .as_object()
                .ok_or("DestinationConfig must be an object")?;
            for (key, destination) in config {
                let slot = match key.as_str() {
                    "OnSuccess" => &mut on_success,
                    "OnFailure" => &mut on_failure,
                    other => {
                        return Err(format!("DestinationConfig.{other} is not a field"));
                    }
                };
                *slot = parse_destination(destination, sam)
                    .map_err(|e| format!("DestinationConfig.{key}: {e}"))?;
            }
        }
        Ok(AsyncConfig {
            max_retries,
            max_event_age,
            on_success,
            on_failure,
        })
    }

    /// The configuration as `GetFunctionEventInvokeConfig` answers it.
    pub fn to_api(&self, function_arn: &str, last_modified: f64) -> Value {
        let mut out = json!({ "FunctionArn": function_arn, "LastModified": last_modified });
        if let Some(n) = self.max_retries {
            out["MaximumRetryAttempts"] = json!(n);
        }
        if let Some(age) = self.max_event_age {
            out["MaximumEventAgeInSeconds"] = json!(age.as_secs());
        }
        let destination = |d: &Option<Destination>| match d {
            Some(d) => json!({ "Destination": d.arn() }),
            None => json!({}),
        };
        out["DestinationConfig"] = json!({
            "OnSuccess": destination(&self.on_success),
            "OnFailure": destination(&self.on_failure),
        });
        out
    }

    /// `UpdateFunctionEventInvokeConfig`: the fields given replace those
    /// kept, the others stay.
    pub fn merged(&self, update: &Value, sam: bool) -> Result<Self, String> {
        let new = AsyncConfig::parse(update, sam)?;
        let given = |key: &str| update.get(key).is_some();
        let given_destination = |key: &str| update.pointer(&format!("/DestinationConfig/{key}"));
        Ok(AsyncConfig {
            max_retries: if given("MaximumRetryAttempts") {
                new.max_retries
            } else {
                self.max_retries
            },
            max_event_age: if given("MaximumEventAgeInSeconds") {
                new.max_event_age
            } else {
                self.max_event_age
            },
            on_success: match given_destination("OnSuccess") {
                Some(_) => new.on_success,
                None => self.on_success.clone(),
            },
            on_failure: match given_destination("OnFailure") {
                Some(_) => new.on_failure,
                None => self.on_failure.clone(),
            },
        })
    }
}

/// One destination: an SQS queue or a Lambda function, by ARN. SNS topics,
/// event buses and S3 buckets are refused: the local stack does not play
/// them, and ignoring one would lose the records silently.
fn parse_destination(value: &Value, sam: bool) -> Result<Option<Destination>, String> {
    let fields = value.as_object().ok_or("must be an object")?;
    let allowed: &[&str] = if sam {
        &["Destination", "Type"]
    } else {
        &["Destination"]
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{unknown} is not a field"));
    }
    let arn = match fields.get("Destination") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(arn)) if arn.is_empty() => return Ok(None),
        Some(Value::String(arn)) => arn.clone(),
        Some(other) => return Err(format!("Destination {other} must be an ARN")),
    };
    let service = arn.split(':').nth(2).unwrap_or_default();
    if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
        return Err(format!("Destination {arn:?} is not an ARN"));
    }
    if let Some(kind) = fields.get("Type").and_then(Value::as_str) {
        let expected = match kind {
            "SQS" => "sqs",
            "Lambda" => "lambda",
            "SNS" => "sns",
            "EventBridge" => "events",
            "S3Bucket" => "s3",
            other => {
                return Err(format!(
                    "Type {other:?} must be SQS, SNS, Lambda, EventBridge or S3Bucket"
                ));
            }
        };
        if service != expected {
            return Err(format!("Type {kind} does not match the ARN {arn:?}"));
        }
    }
    match service {
        "sqs" => Ok(Some(Destination::Sqs(arn))),
        "lambda" => Ok(Some(Destination::Lambda(arn))),
        _ => Err(format!(
            "{arn:?}: only SQS queues and Lambda functions are played by the local stack as destinations"
        )),
    }
}

/// Why a record was sent, as Lambda names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// What the last attempt answered, for the record's `responseContext`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status_code: u16,
    pub executed_version: Option<String>,
    /// `Unhandled` (or `Handled`) when the function returned an error.
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// The invocation record Lambda sends to a destination.
pub fn invocation_record(
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request: &[u8],
    response: Option<&Response>,
) -> Value {
    // A payload that is not JSON is carried as text.
    let json_or_text = |bytes: &[u8]| {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    let mut record = json!({
        "version": "1.0",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": json_or_text(request),
    });
    if let Some(response) = response {
        let mut context = json!({ "statusCode": response.status_code });
        if let Some(version) = &response.executed_version {
            context["executedVersion"] = json!(version);
        }
        if let Some(error) = &response.function_error {
            context["functionError"] = json!(error);
        }
        record["responseContext"] = context;
        record["responsePayload"] = json_or_text(&response.payload);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: &str = "arn:aws:sqs:us-east-1:123456789012:records";
    const FUNCTION: &str = "arn:aws:lambda:us-east-1:123456789012:function:audit";

    #[test]
    fn configurations_are_read_strictly_with_lambdas_ranges() {
        let config = AsyncConfig::parse(
            &json!({
                "MaximumRetryAttempts": 0,
                "MaximumEventAgeInSeconds": 60,
                "DestinationConfig": {
                    "OnSuccess": {"Type": "SQS", "Destination": QUEUE},
                    "OnFailure": {"Type": "Lambda", "Destination": FUNCTION},
                },
            }),
            true,
        )
        .unwrap();
        assert_eq!(config.retries(), 0);
        assert_eq!(config.max_age(), Duration::from_secs(60));
        assert_eq!(config.on_success, Some(Destination::Sqs(QUEUE.into())));
        assert_eq!(
            config.on_failure,
            Some(Destination::Lambda(FUNCTION.into()))
        );

        let defaults = AsyncConfig::parse(&json!({}), false).unwrap();
        assert_eq!(
            (defaults.retries(), defaults.max_age()),
            (2, DEFAULT_MAX_AGE)
        );

        let refused = |value: Value, sam: bool, expected: &str| {
            let e = AsyncConfig::parse(&value, sam).unwrap_err();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        };
        refused(
            json!({"MaximumRetryAttempts": 3}),
            false,
            "MaximumRetryAttempts 3",
        );
        refused(
            json!({"MaximumEventAgeInSeconds": 59}),
            false,
            "from 60 to 21600",
        );
        refused(
            json!({"MaximumRetryAtempts": 1}),
            false,
            "MaximumRetryAtempts is not",
        );
        refused(
            json!({"DestinationConfig": {"OnSucess": {"Destination": QUEUE}}}),
            false,
            "DestinationConfig.OnSucess",
        );
        // `Type` is SAM's; the Lambda API does not know it.
        refused(
            json!({"DestinationConfig": {"OnSuccess": {"Type": "SQS", "Destination": QUEUE}}}),
            false,
            "Type is not a field",
        );
        refused(
            json!({"DestinationConfig": {"OnSuccess": {"Type": "Lambda", "Destination": QUEUE}}}),
            true,
            "does not match",
        );
        refused(
            json!({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:123456789012:t"}}}),
            false,
            "only SQS queues and Lambda functions",
        );
        refused(
            json!({"DestinationConfig": {"OnFailure": {"Destination": "records"}}}),
            false,
            "not an ARN",
        );
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let kept = AsyncConfig::parse(
            &json!({"MaximumRetryAttempts": 1, "DestinationConfig": {"OnFailure": {"Destination": QUEUE}}}),
            false,
        )
        .unwrap();
        let updated = kept
            .merged(&json!({"MaximumEventAgeInSeconds": 120}), false)
            .unwrap();
        assert_eq!(updated.max_retries, Some(1));
        assert_eq!(updated.max_event_age, Some(Duration::from_secs(120)));
        assert_eq!(updated.on_failure, Some(Destination::Sqs(QUEUE.into())));
        let cleared = updated
            .merged(
                &json!({"DestinationConfig": {"OnFailure": {"Destination": ""}}}),
                false,
            )
            .unwrap();
        assert_eq!(cleared.on_failure, None);
        let api = cleared.to_api("arn:f:$LATEST", 1.5);
        assert_eq!(api["MaximumRetryAttempts"], 1);
        assert_eq!(api["MaximumEventAgeInSeconds"], 120);
        assert_eq!(api["DestinationConfig"]["OnFailure"], json!({}));
    }

    #[test]
    fn records_carry_the_request_the_response_and_why() {
        let response = Response {
            status_code: 200,
            executed_version: Some("$LATEST".into()),
            function_error: Some("Unhandled".into()),
            payload: br#"{"errorMessage":"boom"}"#.to_vec(),
        };
        let record = invocation_record(
            "r-1",
            "arn:f:$LATEST",
            Condition::RetriesExhausted,
            3,
            br#"{"n":1}"#,
            Some(&response),
        );
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(record["requestPayload"], json!({"n": 1}));
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
        assert_eq!(record["responsePayload"]["errorMessage"], "boom");
        let aged = invocation_record("r-2", "arn:f", Condition::EventAgeExceeded, 1, b"x", None);
        assert_eq!(aged["requestPayload"], "x");
        assert!(aged.get("responseContext").is_none());
    }
}
