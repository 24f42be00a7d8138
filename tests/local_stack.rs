//! The local stack runs real Lambda code: weighted aliases, Lambda's errors,
//! no leaked processes, CloudWatch metrics, and every event source a template wires.

mod support;

use anyhow::{Context, Result};
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use serde_json::{Value, json};
use sluice_local::code::code_sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

async fn metric_sum(
    cw: &aws_sdk_cloudwatch::Client,
    metric: &str,
    dims: &[(&str, &str)],
) -> Result<f64> {
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let out = cw
        .get_metric_statistics()
        .namespace("AWS/Lambda")
        .metric_name(metric)
        .set_dimensions(Some(
            dims.iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                .collect(),
        ))
        .start_time(aws_smithy_types::DateTime::from_secs(now.secs() - 3600))
        .end_time(aws_smithy_types::DateTime::from_secs(now.secs() + 3600))
        .period(60)
        .statistics(Statistic::Sum)
        .send()
        .await?;
    Ok(out.datapoints().iter().filter_map(|d| d.sum()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_alias_splits_traffic_and_reports_the_version_that_ran() -> Result<()> {
    // Lambda's minutes pass in 6 s: the metrics below come within the deadline.
    let stack = start_stack(None, &[], 0.1)?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    create_function(&lambda, &role, "greeter", greeter_zip("release-a")?, &[], 5).await?;
    let v1 = lambda
        .publish_version()
        .function_name("greeter")
        .send()
        .await?;
    assert_eq!(v1.version(), Some("1"));

    let zip_b = greeter_zip("release-b")?;
    lambda
        .update_function_code()
        .function_name("greeter")
        .zip_file(Blob::new(zip_b.clone()))
        .send()
        .await?;
    wait_updated(&lambda, "greeter").await?;
    // PublishVersion's CodeSha256 precondition: a stale digest is refused, the current one publishes.
    let stale = lambda
        .publish_version()
        .function_name("greeter")
        .code_sha256(code_sha256(&greeter_zip("release-a")?))
        .send()
        .await
        .expect_err("a stale CodeSha256 must not publish");
    assert!(
        stale
            .into_service_error()
            .is_invalid_parameter_value_exception()
    );
    let v2 = lambda
        .publish_version()
        .function_name("greeter")
        .code_sha256(code_sha256(&zip_b))
        .send()
        .await?;
    assert_eq!(v2.version(), Some("2"));
    for version in ["1", "2"] {
        wait_active(&lambda, "greeter", Some(version)).await?;
    }

    let created = lambda
        .create_alias()
        .function_name("greeter")
        .name("live")
        .function_version("1")
        .send()
        .await?;

    // UpdateAlias's RevisionId precondition: every update makes a new
    // revision, GetAlias and ListAliases report it, and a stale one is refused.
    let first = created.revision_id().context("a revision")?.to_owned();
    let updated = lambda
        .update_alias()
        .function_name("greeter")
        .name("live")
        .routing_config(
            AliasRoutingConfiguration::builder()
                .additional_version_weights("2", 0.3)
                .build(),
        )
        .revision_id(&first)
        .send()
        .await?;
    let second = updated.revision_id().context("a revision")?.to_owned();
    assert_ne!(first, second);
    let got = lambda
        .get_alias()
        .function_name("greeter")
        .name("live")
        .send()
        .await?;
    assert_eq!(got.revision_id(), Some(second.as_str()));
    let listed = lambda
        .list_aliases()
        .function_name("greeter")
        .send()
        .await?;
    assert_eq!(listed.aliases()[0].revision_id(), Some(second.as_str()));
    let stale = lambda
        .update_alias()
        .function_name("greeter")
        .name("live")
        .function_version("2")
        .revision_id(&first)
        .send()
        .await
        .expect_err("a stale RevisionId must not update");
    assert!(
        stale
            .into_service_error()
            .is_precondition_failed_exception()
    );
    let unchanged = lambda
        .get_alias()
        .function_name("greeter")
        .name("live")
        .send()
        .await?;
    assert_eq!(
        (unchanged.function_version(), unchanged.revision_id()),
        (Some("1"), Some(second.as_str()))
    );

    const CALLS: usize = 1000;
    let lambda = Arc::new(lambda);
    let mut tasks = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    for i in 0..CALLS {
        let lambda = lambda.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await?;
            let out = lambda
                .invoke()
                .function_name("greeter")
                .qualifier("live")
                .payload(Blob::new(
                    json!({"name": format!("caller {i}")}).to_string(),
                ))
                .send()
                .await?;
            anyhow::ensure!(
                out.function_error().is_none(),
                "unexpected function error {:?}: {}",
                out.function_error(),
                String::from_utf8_lossy(out.payload().map(|p| p.as_ref()).unwrap_or_default())
            );
            let body: Value = serde_json::from_slice(out.payload().context("payload")?.as_ref())?;
            let answered = std::time::SystemTime::now();
            Ok((
                out.executed_version().unwrap_or_default().to_owned(),
                body,
                answered,
            ))
        });
    }
    let mut by_version: HashMap<String, usize> = HashMap::new();
    let mut last_answer = std::time::UNIX_EPOCH;
    while let Some(joined) = tasks.join_next().await {
        let (executed, body, answered) = joined??;
        last_answer = last_answer.max(answered);
        // The header names the version whose code answered.
        assert_eq!(body["version"], executed.as_str());
        let expected_release = if executed == "2" {
            "release-b"
        } else {
            "release-a"
        };
        assert_eq!(
            body["release"], expected_release,
            "version {executed} ran other code"
        );
        *by_version.entry(executed).or_default() += 1;
    }
    // Eight calls at a time: more than one warm process per version, and never more than eight.
    let processes = children_of(stack.local_pid()).len();
    assert!(
        (3..=16).contains(&processes),
        "{processes} sandboxes for 8 concurrent callers"
    );
    let new = by_version.get("2").copied().unwrap_or_default();
    let old = by_version.get("1").copied().unwrap_or_default();
    assert_eq!(new + old, CALLS, "{by_version:?}");
    // Binomial(1000, 0.3): mean 300, sd 14.49; ±4.5 sd fails a right split
    // once in 150,000 runs, and still tells 30% from 25% or 35%.
    assert!(
        (235..=365).contains(&new),
        "version 2 got {new} of {CALLS} calls"
    );

    let cw = aws_sdk_cloudwatch::Client::new(&stack.sdk_config().await);
    // As on AWS, a minute is not readable until it has closed and been
    // published a while after: the last call's is not there yet.
    let period: u64 = stack.var("SLUICE_METRIC_PERIOD_SECONDS").parse()?;
    let last_secs = last_answer.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let last_period = last_secs - last_secs % period;
    let in_last_period = cw
        .get_metric_statistics()
        .namespace("AWS/Lambda")
        .metric_name("Invocations")
        .dimensions(
            Dimension::builder()
                .name("FunctionName")
                .value("greeter")
                .build(),
        )
        .start_time(aws_smithy_types::DateTime::from_secs(last_period as i64))
        .end_time(aws_smithy_types::DateTime::from_secs(
            (last_period + period) as i64,
        ))
        .period(period as i32)
        .statistics(Statistic::Sum)
        .send()
        .await?;
    let asked_by = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    // Published a period after it closes at the earliest.
    if asked_by.as_secs() < last_period + 2 * period {
        assert_eq!(
            in_last_period.datapoints(),
            [],
            "the minute of the last call was readable before it was published"
        );
    }
    for (version, count) in [("1", old), ("2", new)] {
        let dims = [
            ("FunctionName", "greeter"),
            ("Resource", "greeter:live"),
            ("ExecutedVersion", version),
        ];
        wait_for("Invocations by ExecutedVersion", DEADLINE, || async {
            let sum = metric_sum(&cw, "Invocations", &dims).await?;
            anyhow::ensure!(
                sum == count as f64,
                "{sum} invocations of version {version} counted, {count} made"
            );
            Ok(Some(()))
        })
        .await?;
        assert_eq!(metric_sum(&cw, "Errors", &dims).await?, 0.0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_slow_and_crashing_versions_fail_like_lambda_without_leaking() -> Result<()> {
    // Lambda's minutes pass in 6 s: the metrics below come within the deadline.
    let stack = start_stack(None, &[], 0.1)?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    let zip = greeter_zip("bad")?;
    create_function(
        &lambda,
        &role,
        "failing",
        zip.clone(),
        &[("GREETER_MODE", "failing")],
        5,
    )
    .await?;
    create_function(
        &lambda,
        &role,
        "slow",
        zip.clone(),
        &[("GREETER_MODE", "slow"), ("GREETER_DELAY_MS", "30000")],
        1,
    )
    .await?;
    create_function(
        &lambda,
        &role,
        "crashing",
        zip.clone(),
        &[("GREETER_MODE", "crash")],
        5,
    )
    .await?;
    // A runtime that reports its own init failure through the Runtime API.
    let init_error = script_zip(
        "#!/bin/bash\n\
         body='{\"errorType\":\"Runtime.ConfigError\",\"errorMessage\":\"no config\"}'\n\
         exec 3<>/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}\n\
         printf 'POST /2018-06-01/runtime/init/error HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s' ${#body} \"$body\" >&3\n\
         cat <&3 >/dev/null\n\
         sleep 30\n",
    );
    create_function(&lambda, &role, "init-error", init_error, &[], 5).await?;
    create_function(&lambda, &role, "healthy", zip, &[], 5).await?;

    let invoke = |name: &'static str| {
        let lambda = lambda.clone();
        async move {
            let out = lambda.invoke().function_name(name).send().await?;
            let body: Value = serde_json::from_slice(out.payload().context("payload")?.as_ref())?;
            anyhow::Ok((
                out.status_code(),
                out.function_error().map(str::to_owned),
                body,
            ))
        }
    };

    for _ in 0..2 {
        let (status, error, body) = invoke("failing").await?;
        assert_eq!((status, error.as_deref()), (200, Some("Unhandled")));
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("failed on purpose"),
            "{body}"
        );

        let (status, error, body) = invoke("slow").await?;
        assert_eq!((status, error.as_deref()), (200, Some("Unhandled")));
        assert_eq!(body["errorType"], "Sandbox.Timedout", "{body}");
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("Task timed out after 1.00 seconds")
        );

        let (status, error, body) = invoke("crashing").await?;
        assert_eq!((status, error.as_deref()), (200, Some("Unhandled")));
        assert_eq!(body["errorType"], "Runtime.ExitError", "{body}");
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("exit status: 1"),
            "{body}"
        );

        let (status, error, body) = invoke("init-error").await?;
        assert_eq!((status, error.as_deref()), (200, Some("Unhandled")));
        assert_eq!(
            body,
            json!({"errorType": "Runtime.ConfigError", "errorMessage": "no config"})
        );
    }

    // sluice-local still serves, and only the warm, healthy-process versions keep a process.
    let (_, error, body) = invoke("healthy").await?;
    assert_eq!(error, None);
    assert_eq!(body["message"], "Hello, world!");
    let pid = stack.local_pid();
    let children = wait_for(
        "timed-out and crashed processes to be gone",
        DEADLINE,
        || async {
            let children = children_of(pid);
            Ok((children.len() == 2).then_some(children))
        },
    )
    .await
    .with_context(|| format!("children now: {:?}\n{}", children_of(pid), stack.log_tail()))?;
    assert!(
        children
            .iter()
            .all(|(_, cmd)| cmd.contains("bootstrap") && !cmd.ends_with("[Z]")),
        "{children:?}"
    );

    let cw = aws_sdk_cloudwatch::Client::new(&stack.sdk_config().await);
    for (name, errors) in [
        ("failing", 2.0),
        ("slow", 2.0),
        ("crashing", 2.0),
        ("init-error", 2.0),
        ("healthy", 0.0),
    ] {
        wait_for("Invocations and Errors per function", DEADLINE, || async {
            let dims = [("FunctionName", name)];
            let invocations = metric_sum(&cw, "Invocations", &dims).await?;
            let got = metric_sum(&cw, "Errors", &dims).await?;
            Ok(
                (invocations == if errors > 0.0 { 2.0 } else { 1.0 } && got == errors)
                    .then_some(()),
            )
        })
        .await
        .with_context(|| name)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_lambdas_errors_and_the_stack_keeps_serving() -> Result<()> {
    let stack = start_stack(None, &[], 1.0)?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    create_function(&lambda, &role, "greeter", greeter_zip("r")?, &[], 5).await?;

    let invoke_error =
        |function: &'static str, qualifier: Option<&'static str>, payload: String| {
            let lambda = lambda.clone();
            async move {
                lambda
                    .invoke()
                    .function_name(function)
                    .set_qualifier(qualifier.map(str::to_owned))
                    .payload(Blob::new(payload))
                    .send()
                    .await
                    .expect_err("a bad request must fail")
                    .into_service_error()
            }
        };
    let ok = String::from("{}");
    let err = invoke_error("nobody", None, ok.clone()).await;
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = invoke_error("greeter", Some("no-such-alias"), ok.clone()).await;
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = invoke_error("greeter", Some("7"), ok.clone()).await;
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = invoke_error("greeter", None, "{not json".into()).await;
    assert!(err.is_invalid_request_content_exception(), "{err:?}");
    let too_big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024));
    let err = invoke_error("greeter", None, too_big).await;
    assert!(err.is_request_too_large_exception(), "{err:?}");
    let qualified = "arn:aws:lambda:us-east-1:123456789012:function:greeter:1";
    let err = invoke_error(qualified, Some("2"), ok).await;
    assert!(err.is_invalid_parameter_value_exception(), "{err:?}");
    let err = lambda
        .create_function()
        .function_name("broken")
        .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new("not a zip"))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(
        err.into_service_error()
            .is_invalid_parameter_value_exception()
    );

    let dry = lambda
        .invoke()
        .function_name("greeter")
        .invocation_type(aws_sdk_lambda::types::InvocationType::DryRun)
        .send()
        .await?;
    assert_eq!(dry.status_code(), 204);
    let ok = lambda
        .invoke()
        .function_name("arn:aws:lambda:us-east-1:123456789012:function:greeter")
        .payload(Blob::new(r#"{"name":"again"}"#))
        .send()
        .await?;
    assert_eq!(ok.executed_version(), Some("$LATEST"));
    let body: Value = serde_json::from_slice(ok.payload().context("payload")?.as_ref())?;
    assert_eq!(body["message"], "Hello, again!");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_sources_wired_by_the_template_deliver_aws_shaped_events() -> Result<()> {
    let records = tempfile::tempdir()?;
    let record_dir = records.path().to_str().context("utf-8 path")?.to_owned();
    // rate(1 minute) fires every 0.3 s at this scale.
    let stack = start_stack(
        Some("tests/fixtures/event-sources.yaml"),
        &[("RecordDir", &record_dir)],
        0.005,
    )?;
    let config = stack.sdk_config().await;
    let events = |pred: fn(&Value) -> bool| {
        let dir = records.path().to_owned();
        move || {
            let dir = dir.clone();
            async move { Ok(read_json_files(&dir).into_iter().find(pred)) }
        }
    };

    let ddb = aws_sdk_dynamodb::Client::new(&config);
    ddb.put_item()
        .table_name(stack.var("SLUICE_RESOURCE_TABLE"))
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("item-1".into()),
        )
        .item("n", aws_sdk_dynamodb::types::AttributeValue::N("42".into()))
        .send()
        .await?;
    let stream_event = wait_for(
        "a DynamoDB stream event",
        DEADLINE,
        events(|e| e["Records"][0]["eventSource"] == "aws:dynamodb"),
    )
    .await
    .with_context(|| stack.log_tail())?;
    let record = &stream_event["Records"][0];
    assert_eq!(record["eventName"], "INSERT");
    assert_eq!(record["dynamodb"]["Keys"]["pk"]["S"], "item-1");
    assert_eq!(record["dynamodb"]["NewImage"]["n"]["N"], "42");
    assert_eq!(record["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
    assert!(
        record["eventSourceARN"]
            .as_str()
            .unwrap_or_default()
            .contains(":table/")
    );

    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = stack.var("SLUICE_RESOURCE_QUEUE").to_owned();
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(r#"{"hello":"queue"}"#)
        .message_attributes(
            "kind",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("test")
                .build()?,
        )
        .send()
        .await?;
    let sqs_event = wait_for(
        "an SQS event",
        DEADLINE,
        events(|e| e["Records"][0]["eventSource"] == "aws:sqs"),
    )
    .await?;
    let message = &sqs_event["Records"][0];
    assert_eq!(message["body"], r#"{"hello":"queue"}"#);
    assert_eq!(message["messageAttributes"]["kind"]["stringValue"], "test");
    assert!(
        message["eventSourceARN"]
            .as_str()
            .unwrap_or_default()
            .starts_with("arn:aws:sqs:")
    );
    assert!(message["attributes"]["ApproximateReceiveCount"].is_string());
    // Processed messages are deleted, not left to come back.
    wait_for("the queue to be empty", DEADLINE, || async {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .attributes()
                .and_then(|a| a.get(&name))
                .cloned()
                .unwrap_or_default()
        };
        let empty = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            == "0"
            && count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                == "0";
        Ok(empty.then_some(()))
    })
    .await?;

    let tick = wait_for(
        "a scheduled event",
        DEADLINE,
        events(|e| e["detail-type"] == "Scheduled Event"),
    )
    .await?;
    assert_eq!(tick["source"], "aws.events");
    assert!(
        tick["resources"][0]
            .as_str()
            .unwrap_or_default()
            .contains(":rule/")
    );

    // An object put in the bucket is an "Object Created" event, as EventBridge sends it.
    let bucket = stack.var("SLUICE_RESOURCE_UPLOADS").to_owned();
    aws_sdk_s3::Client::new(&config)
        .put_object()
        .bucket(&bucket)
        .key("builds/app v2.zip")
        .body(b"zip".to_vec().into())
        .send()
        .await?;
    let created = wait_for(
        "an Object Created event",
        DEADLINE,
        events(|e| e["detail-type"] == "Object Created"),
    )
    .await?;
    assert_eq!(created["source"], "aws.s3");
    assert_eq!(created["detail"]["bucket"]["name"], bucket.as_str());
    assert_eq!(created["detail"]["object"]["key"], "builds/app v2.zip");
    assert_eq!(created["detail"]["object"]["size"], 3);
    assert_eq!(created["resources"][0], format!("arn:aws:s3:::{bucket}"));

    let url = stack.var("SLUICE_URL_RECORDER").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{url}hooks/push?ref=main&x=a%20b"))
        .header("x-github-event", "push")
        .header("cookie", "a=1; b=2")
        .body(r#"{"ref":"refs/heads/main"}"#)
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await?;
    assert!(answer["recorded"].is_string(), "{answer}");
    let url_event = wait_for(
        "a Function URL event",
        DEADLINE,
        events(|e| e["rawPath"] == "/hooks/push"),
    )
    .await?;
    assert_eq!(url_event["version"], "2.0");
    assert_eq!(url_event["requestContext"]["http"]["method"], "POST");
    assert_eq!(url_event["requestContext"]["routeKey"], "$default");
    assert_eq!(url_event["headers"]["x-github-event"], "push");
    assert_eq!(url_event["queryStringParameters"]["x"], "a b");
    assert_eq!(url_event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(url_event["body"], r#"{"ref":"refs/heads/main"}"#);
    assert_eq!(url_event["isBase64Encoded"], false);

    // Event invocations are accepted at once and run; a failing one is retried twice, as Lambda does.
    let lambda = stack.lambda().await;
    let recorder = stack.var("SLUICE_RESOURCE_RECORDER").to_owned();
    for body in [r#"{"async":"ok"}"#, r#"{"async":"recorder-fail"}"#] {
        let accepted = lambda
            .invoke()
            .function_name(&recorder)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(Blob::new(body))
            .send()
            .await?;
        assert_eq!(accepted.status_code(), 202);
    }
    wait_for(
        "the Event invocation and the retries of the failing one",
        DEADLINE,
        || async {
            let runs = |value: &str| {
                read_json_files(records.path())
                    .iter()
                    .filter(|e| e["async"] == value)
                    .count()
            };
            anyhow::ensure!(runs("recorder-fail") <= 3, "retried more than twice");
            Ok((runs("ok") == 1 && runs("recorder-fail") == 3).then_some(()))
        },
    )
    .await?;
    // Then it goes to the function's dead-letter queue, with Lambda's attributes.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dead = wait_for(
        "the failed event in the dead-letter queue",
        DEADLINE,
        || async {
            let out = sqs
                .receive_message()
                .queue_url(stack.var("SLUICE_RESOURCE_RECORDER_DEAD_LETTERS"))
                .message_attribute_names("All")
                .wait_time_seconds(1)
                .send()
                .await?;
            Ok(out.messages.unwrap_or_default().into_iter().next())
        },
    )
    .await?;
    assert_eq!(dead.body(), Some(r#"{"async":"recorder-fail"}"#));
    let attributes = dead.message_attributes().context("attributes")?;
    for name in ["RequestID", "ErrorCode", "ErrorMessage"] {
        assert!(attributes.contains_key(name), "{name} in {attributes:?}");
    }

    // A function's own asynchronous configuration (its template's
    // EventInvokeConfig): no retry; a success is recorded in its on-success
    // queue, a failure sent to the Recorder as Lambda's invocation record.
    let outcomes = stack.var("SLUICE_RESOURCE_OUTCOMES").to_owned();
    let seen = std::sync::Mutex::new(Vec::new());
    let configured = stack.var("SLUICE_RESOURCE_CONFIGURED_RECORDER").to_owned();
    for body in [
        r#"{"configured":"ok"}"#,
        r#"{"configured":"recorder-fail"}"#,
    ] {
        lambda
            .invoke()
            .function_name(&configured)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(Blob::new(body))
            .send()
            .await?;
    }
    let success = wait_for("the success's record in Outcomes", DEADLINE, || {
        received(&sqs, &outcomes, &seen, |r| {
            r["requestPayload"]["configured"] == "ok"
        })
    })
    .await?;
    assert_eq!(success["requestContext"]["condition"], "Success");
    assert_eq!(success["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(
        success["requestContext"]["functionArn"],
        format!("arn:aws:lambda:us-east-1:123456789012:function:{configured}:$LATEST")
    );
    assert_eq!(success["responseContext"]["statusCode"], 200);
    assert_eq!(success["responsePayload"]["statusCode"], 200);
    let failure = wait_for(
        "the failure's record at the Recorder",
        DEADLINE,
        events(|e| {
            e["requestContext"]["condition"] == "RetriesExhausted"
                && e["requestPayload"]["configured"] == "recorder-fail"
        }),
    )
    .await?;
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(failure["responseContext"]["functionError"], "Unhandled");
    let runs = read_json_files(records.path())
        .iter()
        .filter(|e| e["configured"] == "recorder-fail")
        .count();
    assert_eq!(runs, 1, "MaximumRetryAttempts 0: run once, never retried");
    // Its cron schedule fires (every five minutes, scaled).
    let cron = wait_for("a cron-scheduled event's record", DEADLINE, || {
        received(&sqs, &outcomes, &seen, |r| {
            r["requestPayload"]["from"] == "cron"
        })
    })
    .await?;
    assert_eq!(cron["requestContext"]["condition"], "Success");

    // The same configuration through the Lambda API, read strictly; an
    // event older than its maximum age is not tried again.
    let signed = stack.var("SLUICE_RESOURCE_SIGNED_RECORDER").to_owned();
    let missing = lambda
        .get_function_event_invoke_config()
        .function_name(&signed)
        .send()
        .await
        .expect_err("no configuration yet");
    assert!(
        format!("{missing:?}").contains("ResourceNotFoundException"),
        "{missing:?}"
    );
    let outcomes_arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        outcomes.rsplit('/').next().context("queue name")?
    );
    let typo = http
        .put(format!(
            "{}/2019-09-25/functions/{signed}/event-invoke-config",
            stack.var("AWS_ENDPOINT_URL_LAMBDA")
        ))
        .body(r#"{"MaximumRetryAtempts": 1}"#)
        .send()
        .await?;
    assert_eq!(typo.status(), 400);
    assert!(
        typo.text()
            .await?
            .contains("MaximumRetryAtempts is not a field")
    );
    lambda
        .put_function_event_invoke_config()
        .function_name(&signed)
        .maximum_retry_attempts(2)
        .maximum_event_age_in_seconds(60)
        .destination_config(
            aws_sdk_lambda::types::DestinationConfig::builder()
                .on_failure(
                    aws_sdk_lambda::types::OnFailure::builder()
                        .destination(&outcomes_arn)
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    let updated = lambda
        .update_function_event_invoke_config()
        .function_name(&signed)
        .maximum_retry_attempts(1)
        .send()
        .await?;
    assert_eq!(updated.maximum_retry_attempts(), Some(1));
    assert_eq!(updated.maximum_event_age_in_seconds(), Some(60));
    assert_eq!(
        updated
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|f| f.destination()),
        Some(outcomes_arn.as_str())
    );
    let listed = lambda
        .list_function_event_invoke_configs()
        .function_name(&signed)
        .send()
        .await?;
    assert_eq!(listed.function_event_invoke_configs().len(), 1);
    lambda
        .invoke()
        .function_name(&signed)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .payload(Blob::new(r#"{"aged":"recorder-fail"}"#))
        .send()
        .await?;
    // Its retry is due a minute later (scaled), when the event is a minute old.
    let aged = wait_for("the aged event's record in Outcomes", DEADLINE, || {
        received(&sqs, &outcomes, &seen, |r| {
            r["requestPayload"]["aged"] == "recorder-fail"
        })
    })
    .await?;
    assert_eq!(aged["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(aged["requestContext"]["approximateInvokeCount"], 1);
    lambda
        .delete_function_event_invoke_config()
        .function_name(&signed)
        .send()
        .await?;
    lambda
        .get_function_event_invoke_config()
        .function_name(&signed)
        .send()
        .await
        .expect_err("deleted");

    // An AWS_IAM URL refuses an unsigned request and runs nothing.
    let signed_url = stack.var("SLUICE_URL_SIGNED_RECORDER").to_owned();
    let before = read_json_files(records.path()).len();
    let refused = http.post(&signed_url).body("{}").send().await?;
    assert_eq!(refused.status(), 403);
    assert!(read_json_files(records.path()).len() >= before);
    assert!(
        !read_json_files(records.path())
            .iter()
            .any(|e| e["body"] == "{}"),
        "an unsigned request reached the function"
    );
    Ok(())
}

fn epoch_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The events the recorders wrote into `dir`, each with when it was
/// delivered (its file's time, epoch ms).
fn recorded_at(dir: &std::path::Path) -> Vec<(Value, u64)> {
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    files
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
        .filter_map(|entry| {
            let event: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
            let written = entry.metadata().ok()?.modified().ok()?;
            Some((event, epoch_ms(written)))
        })
        .collect()
}

/// Receives what `queue` holds into `seen` (a message received is hidden
/// from the next receive) and finds the first JSON body `pred` matches.
async fn received(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    seen: &std::sync::Mutex<Vec<Value>>,
    pred: impl Fn(&Value) -> bool,
) -> Result<Option<Value>> {
    let out = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await?;
    let mut seen = seen.lock().expect("seen lock");
    for message in out.messages.unwrap_or_default() {
        seen.push(serde_json::from_str(message.body().unwrap_or_default())?);
    }
    Ok(seen.iter().find(|r| pred(r)).cloned())
}

/// An asynchronous event Lambda cannot run yet for lack of concurrency (429)
/// is retried until it is too old, without counting against
/// `MaximumRetryAttempts` (invocation-async-error-handling.html): the
/// ConfiguredRecorder, which retries no failure, still runs an event its
/// first attempts found throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asynchronous_events_that_are_throttled_are_retried_until_they_run() -> Result<()> {
    let records = tempfile::tempdir()?;
    let record_dir = records.path().to_str().context("utf-8 path")?.to_owned();
    let stack = start_stack_tuned(
        Some("tests/fixtures/event-sources.yaml"),
        &[("RecordDir", &record_dir)],
        0.005,
        |opts| opts.max_sandboxes_per_version = Some(1),
    )?;
    let config = stack.sdk_config().await;
    let lambda = stack.lambda().await;
    let configured = stack.var("SLUICE_RESOURCE_CONFIGURED_RECORDER").to_owned();
    // Its one execution environment, held by a synchronous call.
    let held = {
        let (lambda, function) = (lambda.clone(), configured.clone());
        tokio::spawn(async move {
            lambda
                .invoke()
                .function_name(function)
                .payload(Blob::new(r#"{"hold":"recorder-hold"}"#))
                .send()
                .await
        })
    };
    wait_for("the held call to run", DEADLINE, || async {
        Ok(read_json_files(records.path())
            .into_iter()
            .find(|e| e["hold"] == "recorder-hold"))
    })
    .await?;
    lambda
        .invoke()
        .function_name(&configured)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .payload(Blob::new(r#"{"throttled":"ok"}"#))
        .send()
        .await?;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    wait_for("a throttled attempt", DEADLINE, || async {
        let throttles =
            metric_sum(&cloudwatch, "Throttles", &[("FunctionName", &configured)]).await?;
        Ok((throttles >= 1.0).then_some(()))
    })
    .await
    .with_context(|| stack.log_tail())?;
    std::fs::write(records.path().join("release"), b"")?;
    held.await??;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let outcomes = stack.var("SLUICE_RESOURCE_OUTCOMES").to_owned();
    let seen = std::sync::Mutex::new(Vec::new());
    let success = wait_for("the throttled event's success", DEADLINE, || {
        received(&sqs, &outcomes, &seen, |r| {
            r["requestPayload"]["throttled"] == "ok"
        })
    })
    .await
    .with_context(|| stack.log_tail())?;
    assert_eq!(success["requestContext"]["condition"], "Success");
    assert!(
        success["requestContext"]["approximateInvokeCount"]
            .as_u64()
            .is_some_and(|n| n > 1),
        "{success}"
    );
    let discarded = read_json_files(records.path()).into_iter().any(|e| {
        e["requestContext"]["condition"] == "RetriesExhausted"
            && e["requestPayload"]["throttled"] == "ok"
    });
    assert!(
        !discarded,
        "a throttled event was counted as a failed retry"
    );
    Ok(())
}

/// tests/fixtures/event-sources.yaml, its recorders writing into `records`.
fn event_sources_stack(records: &std::path::Path) -> Result<TestStack> {
    let record_dir = records.to_str().context("utf-8 path")?;
    start_stack(
        Some("tests/fixtures/event-sources.yaml"),
        &[("RecordDir", record_dir)],
        1.0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pollers_retry_failed_batches_and_delete_only_what_succeeded() -> Result<()> {
    let records = tempfile::tempdir()?;
    let stack = event_sources_stack(records.path())?;
    let config = stack.sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let written_ms = epoch_ms(std::time::SystemTime::now());
    ddb.put_item()
        .table_name(stack.var("SLUICE_RESOURCE_TABLE"))
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("recorder-fail".into()),
        )
        .send()
        .await?;
    let sqs = aws_sdk_sqs::Client::new(&config);
    sqs.send_message()
        .queue_url(stack.var("SLUICE_RESOURCE_QUEUE"))
        .message_body("recorder-fail")
        .send()
        .await?;

    // The stream batch that failed is delivered again, the same record each time.
    wait_for(
        "the failed stream batch to be retried",
        DEADLINE,
        || async {
            let ids: Vec<Value> = read_json_files(records.path())
                .into_iter()
                .filter(|e| e["Records"][0]["eventSource"] == "aws:dynamodb")
                .map(|e| e["Records"][0]["eventID"].clone())
                .collect();
            anyhow::ensure!(
                ids.windows(2).all(|w| w[0] == w[1]),
                "different records delivered: {ids:?}"
            );
            Ok((ids.len() >= 2).then_some(()))
        },
    )
    .await
    .with_context(|| stack.log_tail())?;
    // The stream's batching window (2 s) held the record before its first delivery.
    let first_delivery = recorded_at(records.path())
        .into_iter()
        .filter(|(e, _)| e["Records"][0]["eventSource"] == "aws:dynamodb")
        .map(|(_, ms)| ms)
        .min()
        .context("a stream delivery")?;
    assert!(
        first_delivery >= written_ms + 2_000,
        "the stream record went {} ms after it was written, inside the window",
        first_delivery.saturating_sub(written_ms)
    );
    // The message whose batch failed was not deleted: it comes back, counted.
    wait_for(
        "the failed message to be received again",
        DEADLINE,
        || async {
            Ok(read_json_files(records.path()).into_iter().find(|e| {
                e["Records"][0]["eventSource"] == "aws:sqs"
                    && e["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
            }))
        },
    )
    .await
    .with_context(|| stack.log_tail())?;

    // Orders are gathered for the mapping's batching window (5 s): a batch
    // is delivered no sooner than the window after its first message was
    // received (which batch of the two quiet pollers takes the later orders
    // is not fixed, so that is not asserted). Bodies the filter does not
    // admit are deleted, never delivered.
    const WINDOW_MS: u64 = 5_000;
    let orders = stack.var("SLUICE_RESOURCE_ORDERS").to_owned();
    let send = |bodies: Vec<String>| {
        let (sqs, orders) = (&sqs, &orders);
        async move {
            for body in bodies {
                sqs.send_message()
                    .queue_url(orders)
                    .message_body(body)
                    .send()
                    .await?;
            }
            anyhow::Ok(())
        }
    };
    let order = |n: u32| json!({"kind": "order", "n": n}).to_string();
    send(vec![
        json!({"kind": "refund", "n": 0}).to_string(),
        "plain text".to_owned(),
        order(1),
        order(2),
        order(3),
    ])
    .await?;
    let queue_counts = || async {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&orders)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| -> u64 {
            attrs
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        anyhow::Ok((
            count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    };
    wait_for("the window's first receive", DEADLINE, || async {
        let (_, in_flight) = queue_counts().await?;
        Ok((in_flight > 0).then_some(()))
    })
    .await
    .with_context(|| stack.log_tail())?;
    send(vec![order(4), order(5)]).await?;
    let queue_name = orders.rsplit('/').next().unwrap_or("?").to_owned();
    // Each batch of Orders, with when it was delivered.
    let batches = || -> Vec<(Value, u64)> {
        recorded_at(records.path())
            .into_iter()
            .filter(|(event, _)| {
                event["Records"][0]["eventSourceARN"]
                    .as_str()
                    .is_some_and(|arn| arn.ends_with(&queue_name))
            })
            .collect()
    };
    wait_for(
        "every order delivered, and the queue empty",
        DEADLINE,
        || async {
            let (visible, in_flight) = queue_counts().await?;
            let delivered: usize = batches()
                .iter()
                .map(|(e, _)| e["Records"].as_array().map_or(0, Vec::len))
                .sum();
            Ok((delivered >= 5 && visible == 0 && in_flight == 0).then_some(()))
        },
    )
    .await
    .with_context(|| stack.log_tail())?;
    // Standard queues deliver at least once (moto's receive, like SQS's,
    // may hand one message to two pollers): an order may come twice, as the
    // same message.
    let mut delivered = std::collections::BTreeMap::new();
    for (batch, delivered_ms) in batches() {
        let records = batch["Records"].as_array().context("records")?;
        let first_received = records
            .iter()
            .filter_map(|r| {
                r["attributes"]["ApproximateFirstReceiveTimestamp"]
                    .as_str()?
                    .parse::<u64>()
                    .ok()
            })
            .min()
            .context("receive times")?;
        assert!(
            delivered_ms >= first_received + WINDOW_MS,
            "a batch of {} went {} ms after its first receive, inside the window",
            records.len(),
            delivered_ms.saturating_sub(first_received)
        );
        for record in records {
            let body: Value = serde_json::from_str(record["body"].as_str().unwrap_or_default())?;
            assert_eq!(body["kind"], "order", "{body} passed the filter");
            let id = record["messageId"].clone();
            let first = delivered
                .entry(body["n"].as_u64().context("n")?)
                .or_insert(id.clone());
            assert_eq!(*first, id, "order {} came as two messages", body["n"]);
        }
    }
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "each order, the others never"
    );
    Ok(())
}

/// Lambda's function states (functions-states.html): a new function is
/// `Pending`, an update leaves `LastUpdateStatus: InProgress`, a published
/// version starts `Pending`; meanwhile Lambda refuses what it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn functions_go_through_lambdas_states_and_refuse_what_lambda_refuses() -> Result<()> {
    use aws_sdk_lambda::types::{FunctionCode, LastUpdateStatus, Runtime, State};
    let stack = start_stack(None, &[], 1.0)?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    let conflict = |e: aws_sdk_lambda::Error, what: &str| {
        let text = format!("{e:?}");
        assert!(
            text.contains("ResourceConflictException"),
            "{what}: expected ResourceConflictException, got {text}"
        );
    };
    let created = lambda
        .create_function()
        .function_name("greeter")
        .runtime(Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(&role)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(greeter_zip("r1")?))
                .build(),
        )
        .send()
        .await?;
    assert_eq!(created.state(), Some(&State::Pending));
    let read = lambda
        .get_function()
        .function_name("greeter")
        .send()
        .await?;
    let config = read.configuration().context("configuration")?;
    assert_eq!(config.state(), Some(&State::Pending));
    assert_eq!(
        config.state_reason_code().map(|c| c.as_str()),
        Some("Creating")
    );
    let pending_publish = lambda
        .publish_version()
        .function_name("greeter")
        .send()
        .await
        .expect_err("a Pending function cannot be published");
    conflict(pending_publish.into(), "PublishVersion while Pending");
    let pending_invoke = lambda
        .invoke()
        .function_name("greeter")
        .send()
        .await
        .expect_err("a Pending function is not invoked");
    conflict(pending_invoke.into(), "Invoke while Pending");
    wait_active(&lambda, "greeter", None).await?;

    // An update: publishing or updating again is refused until it finishes;
    // invocations go on, running the code from before the update.
    let updated = lambda
        .update_function_code()
        .function_name("greeter")
        .zip_file(Blob::new(greeter_zip("r2")?))
        .send()
        .await?;
    assert_eq!(
        updated.last_update_status(),
        Some(&LastUpdateStatus::InProgress)
    );
    let during = lambda
        .publish_version()
        .function_name("greeter")
        .code_sha256(updated.code_sha256().context("sha")?)
        .send()
        .await
        .expect_err("PublishVersion during an update is refused");
    conflict(during.into(), "PublishVersion during an update");
    let during = lambda
        .update_function_configuration()
        .function_name("greeter")
        .description("again")
        .send()
        .await
        .expect_err("a second update is refused");
    conflict(
        during.into(),
        "UpdateFunctionConfiguration during an update",
    );
    let release_answering = || async {
        let answered = lambda
            .invoke()
            .function_name("greeter")
            .payload(Blob::new(r#"{"name":"Ada"}"#))
            .send()
            .await?;
        anyhow::ensure!(answered.function_error().is_none(), "{answered:?}");
        let answer: Value =
            serde_json::from_slice(answered.payload().context("payload")?.as_ref())?;
        Ok::<_, anyhow::Error>(answer["release"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        release_answering().await?,
        "r1",
        "the code before the update runs"
    );
    let config = lambda
        .get_function_configuration()
        .function_name("greeter")
        .send()
        .await?;
    assert_eq!(
        config.last_update_status(),
        Some(&LastUpdateStatus::InProgress)
    );
    wait_updated(&lambda, "greeter").await?;
    assert_eq!(
        release_answering().await?,
        "r2",
        "the update's code runs once it is done"
    );

    // Two updates sent at once: Lambda takes one and refuses the other.
    let update = |description: &'static str| {
        lambda
            .update_function_configuration()
            .function_name("greeter")
            .description(description)
            .send()
    };
    let (first, second) = tokio::join!(update("first"), update("second"));
    match (first, second) {
        (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => {
            conflict(refused.into(), "an update sent beside another")
        }
        (first, second) => panic!(
            "expected one update taken, not {}",
            [first.is_ok(), second.is_ok()]
                .iter()
                .filter(|ok| **ok)
                .count()
        ),
    }
    wait_updated(&lambda, "greeter").await?;

    // The published version is Pending before it can be invoked.
    let published = lambda
        .publish_version()
        .function_name("greeter")
        .send()
        .await?;
    let version = published.version().context("version")?.to_owned();
    assert_eq!(published.state(), Some(&State::Pending));
    let early = lambda
        .invoke()
        .function_name("greeter")
        .qualifier(&version)
        .send()
        .await
        .expect_err("a Pending version is not invoked");
    conflict(early.into(), "Invoke of a Pending version");
    wait_active(&lambda, "greeter", Some(&version)).await?;
    let answered = lambda
        .invoke()
        .function_name("greeter")
        .qualifier(&version)
        .send()
        .await?;
    assert_eq!(answered.executed_version(), Some(version.as_str()));
    Ok(())
}

/// Lambda's control-plane quota (gettingstarted-limits.html): 15 requests a
/// second for the account, all callers together; GetFunction has its own
/// 100 and invocations are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_plane_requests_beyond_the_quota_are_throttled() -> Result<()> {
    let stack = start_stack(None, &[], 1.0)?;
    let role = function_role(&stack).await?;
    create_function(
        &stack.lambda().await,
        &role,
        "greeter",
        greeter_zip("r1")?,
        &[],
        5,
    )
    .await?;
    // Two callers, neither retrying, share one quota.
    let no_retries = (stack.lambda().await.config().to_builder())
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        .build();
    let callers = [
        aws_sdk_lambda::Client::from_conf(no_retries.clone()),
        aws_sdk_lambda::Client::from_conf(no_retries),
    ];
    let quota_url = format!("{}/_sluice/quota", stack.var("AWS_ENDPOINT_URL_LAMBDA"));
    let report = || async {
        let answer: Value = reqwest::get(&quota_url)
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok::<_, anyhow::Error>(answer["requests"].clone())
    };
    let before = report().await?;

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..40 {
        let caller = callers[i % 2].clone();
        burst.spawn(async move {
            caller
                .get_function_configuration()
                .function_name("greeter")
                .send()
                .await
        });
    }
    let burst = burst.join_all().await;
    let throttled: Vec<_> = burst.iter().filter_map(|r| r.as_ref().err()).collect();
    let allowed = burst.len() - throttled.len();
    assert!(
        allowed >= 15 && throttled.len() >= 5,
        "a second's worth (15) of 40 requests at once get through: {allowed} did"
    );
    for e in &throttled {
        let se = e.as_service_error().context("a service error")?;
        assert!(se.is_too_many_requests_exception(), "{se:?}");
        let text = format!("{se:?}");
        assert!(text.contains("CallerRateLimitExceeded"), "{text}");
    }
    // GetFunction and Invoke are not held to it.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let caller = callers[0].clone();
        reads.spawn(async move { caller.get_function().function_name("greeter").send().await });
    }
    let reads = reads.join_all().await;
    assert!(
        reads.iter().all(Result::is_ok),
        "40 GetFunction within its 100/s"
    );
    for _ in 0..20 {
        callers[1].invoke().function_name("greeter").send().await?;
    }
    let after = report().await?;
    let counted = |name: &str, field: &str| {
        after[name][field].as_u64().unwrap_or(0) - before[name][field].as_u64().unwrap_or(0)
    };
    assert_eq!(
        counted("control_plane", "throttled"),
        throttled.len() as u64
    );
    assert_eq!(counted("get_function", "allowed"), 40);
    assert_eq!(counted("get_function", "throttled"), 0);
    Ok(())
}

/// A stream mapping with Lambda's error handling: records the filter does not
/// match are never delivered, a failed batch is split until the bad record is
/// alone, and that record alone is discarded into the on-failure destination
/// after its retries (services-dynamodb-errors.html).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_batches_are_filtered_bisected_and_discarded_as_lambda_does() -> Result<()> {
    let records = tempfile::tempdir()?;
    let stack = event_sources_stack(records.path())?;
    let config = stack.sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    // One write, so the stream holds the five records together.
    let keys = ["keep-1", "keep-2", "keep-recorder-fail", "keep-4", "drop-5"];
    let puts = keys
        .iter()
        .map(|k| {
            let put = aws_sdk_dynamodb::types::PutRequest::builder()
                .item(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(k.to_string()),
                )
                .build()?;
            Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
                .put_request(put)
                .build())
        })
        .collect::<Result<Vec<_>>>()?;
    ddb.batch_write_item()
        .request_items(stack.var("SLUICE_RESOURCE_LEDGER"), puts)
        .send()
        .await?;

    let sqs = aws_sdk_sqs::Client::new(&config);
    let discarded = wait_for(
        "a record in the on-failure destination",
        DEADLINE,
        || async {
            let out = sqs
                .receive_message()
                .queue_url(stack.var("SLUICE_RESOURCE_DISCARDED"))
                .wait_time_seconds(1)
                .send()
                .await?;
            Ok(out
                .messages()
                .first()
                .and_then(|m| serde_json::from_str::<Value>(m.body()?).ok()))
        },
    )
    .await
    .with_context(|| stack.log_tail())?;
    let info = &discarded["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 1, "only the bad record: {discarded}");
    assert_eq!(
        discarded["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(info["startSequenceNumber"], info["endSequenceNumber"]);

    // What the function saw: every kept key, the good ones in a batch that
    // succeeded (the last half comes after the bad record's discard), and
    // never the filtered one.
    let batches = || -> Vec<Vec<String>> {
        read_json_files(records.path())
            .into_iter()
            .filter(|e| {
                e["Records"][0]["eventSourceARN"]
                    .as_str()
                    .is_some_and(|a| a.contains("Ledger"))
            })
            .map(|e| {
                e["Records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        r.pointer("/dynamodb/Keys/pk/S")?
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .collect()
    };
    let clean = |batches: &[Vec<String>], good: &str| {
        batches
            .iter()
            .any(|b| b.iter().any(|k| k == good) && b.iter().all(|k| !k.contains("fail")))
    };
    let delivered = wait_for(
        "every good record in a batch without the bad one",
        DEADLINE,
        || async {
            let seen = batches();
            Ok(["keep-1", "keep-2", "keep-4"]
                .iter()
                .all(|good| clean(&seen, good))
                .then_some(seen))
        },
    )
    .await
    .with_context(|| format!("{:?}\n{}", batches(), stack.log_tail()))?;
    assert!(
        delivered.iter().flatten().all(|k| k != "drop-5"),
        "the filter keeps drop-5 out: {delivered:?}"
    );
    let alone = delivered
        .iter()
        .filter(|b| b.as_slice() == ["keep-recorder-fail"])
        .count();
    assert_eq!(
        alone, 2,
        "the bad record alone, tried and retried once: {delivered:?}"
    );
    Ok(())
}

/// A function's calls carry its execution role's credentials, and sluice-local
/// answers what the role does not allow as AWS does: the service's own
/// AccessDenied, naming the principal, the action and the resource
/// (lambda-intro-execution-role.html, reference_policies_evaluation-logic.html).
/// The clients here are built as a function's SDK builds them: the role's
/// credentials from its environment, and sluice-local as every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_functions_calls_get_exactly_what_its_role_allows() -> Result<()> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, AttributeValue, KeySchemaElement};
    use sluice_local::iam::{ACCESS_KEY_ID, Caller, SECRET_ACCESS_KEY};
    let stack = start_stack(None, &[], 1.0)?;
    let admin = stack.sdk_config().await;
    let (region, account) = ("us-east-1", "123456789012");

    let ddb = aws_sdk_dynamodb::Client::new(&admin);
    for table in ["granted", "other"] {
        ddb.create_table()
            .table_name(table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type("HASH".into())
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type("S".into())
                    .build()?,
            )
            .billing_mode("PAY_PER_REQUEST".into())
            .send()
            .await?;
    }
    let s3_admin = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&admin)
            .force_path_style(true)
            .build(),
    );
    s3_admin.create_bucket().bucket("art").send().await?;
    for key in ["builds/a.zip", "builds/secret.zip", "private/b"] {
        s3_admin
            .put_object()
            .bucket("art")
            .key(key)
            .body(key.as_bytes().to_vec().into())
            .send()
            .await?;
    }
    let sqs_admin = aws_sdk_sqs::Client::new(&admin);
    let timers = sqs_admin
        .create_queue()
        .queue_name("timers")
        .send()
        .await?
        .queue_url()
        .context("url")?
        .to_owned();
    let others = sqs_admin
        .create_queue()
        .queue_name("others")
        .send()
        .await?
        .queue_url()
        .context("url")?
        .to_owned();
    let secrets_admin = aws_sdk_secretsmanager::Client::new(&admin);
    secrets_admin
        .create_secret()
        .name("webhook")
        .secret_string("s3cr3t")
        .send()
        .await?;
    let other_secret = secrets_admin
        .create_secret()
        .name("other")
        .secret_string("x")
        .send()
        .await?;
    let other_secret_arn = other_secret.arn().context("arn")?.to_owned();

    let iam = aws_sdk_iam::Client::new(&admin);
    let role = iam
        .create_role()
        .role_name("probe-role")
        .assume_role_policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
            .to_string(),
        )
        .send()
        .await?;
    let role_arn = role.role().context("role")?.arn().to_owned();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
         "Resource": format!("arn:aws:dynamodb:{region}:{account}:table/granted")},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::art/builds/*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::art/builds/secret*"},
        {"Effect": "Allow", "Action": "sqs:SendMessage*", "Resource": format!("arn:aws:sqs:{region}:{account}:timers")},
        {"Effect": "Allow", "Action": "cloudwatch:DescribeAlarms", "Resource": format!("arn:aws:cloudwatch:{region}:{account}:alarm:*")},
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": format!("arn:aws:secretsmanager:{region}:{account}:secret:webhook-??????")},
        {"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}
    ]});
    iam.put_role_policy()
        .role_name("probe-role")
        .policy_name("probe")
        .policy_document(policy.to_string())
        .send()
        .await?;

    let as_function = |role_arn: String| {
        let token = Caller {
            function: "probe".into(),
            role_arn,
        }
        .session_token();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(stack.var("AWS_ENDPOINT_URL_LAMBDA"))
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_lambda::config::Credentials::new(
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
                Some(token),
                None,
                "execution-role",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
    };
    let function = as_function(role_arn.clone()).await;
    let principal = format!("arn:aws:sts::{account}:assumed-role/probe-role/probe");
    let implicit = |action: &str, resource: &str| {
        format!(
            "User: {principal} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
        )
    };
    // The error's code and message, as the SDK parsed them.
    fn refusal<
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
        R: std::fmt::Debug,
    >(
        result: Result<
            R,
            aws_sdk_dynamodb::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
        >,
    ) -> (String, String) {
        let e = result.expect_err("refused");
        let se = e
            .as_service_error()
            .unwrap_or_else(|| panic!("a service error: {e:?}"));
        (
            se.code().unwrap_or_default().to_owned(),
            se.message().unwrap_or_default().to_owned(),
        )
    }

    // DynamoDB: the granted table only.
    let ddb = aws_sdk_dynamodb::Client::new(&function);
    let item = |table: &str| {
        ddb.put_item()
            .table_name(table)
            .item("pk", AttributeValue::S("k".into()))
            .send()
    };
    item("granted").await?;
    let got = ddb
        .get_item()
        .table_name("granted")
        .key("pk", AttributeValue::S("k".into()))
        .send()
        .await?;
    assert!(got.item().is_some(), "the allowed write reached moto");
    assert_eq!(
        refusal(item("other").await),
        (
            "AccessDeniedException".into(),
            implicit(
                "dynamodb:PutItem",
                &format!("arn:aws:dynamodb:{region}:{account}:table/other")
            )
        )
    );
    assert_eq!(
        refusal(
            ddb.delete_item()
                .table_name("granted")
                .key("pk", AttributeValue::S("k".into()))
                .send()
                .await
        )
        .1,
        implicit(
            "dynamodb:DeleteItem",
            &format!("arn:aws:dynamodb:{region}:{account}:table/granted")
        )
    );

    // S3: objects under builds/, but an explicit deny wins.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&function)
            .force_path_style(true)
            .build(),
    );
    let body = s3
        .get_object()
        .bucket("art")
        .key("builds/a.zip")
        .send()
        .await?
        .body
        .collect()
        .await?;
    assert_eq!(body.into_bytes().as_ref(), b"builds/a.zip");
    assert_eq!(
        refusal(s3.get_object().bucket("art").key("private/b").send().await),
        (
            "AccessDenied".into(),
            implicit("s3:GetObject", "arn:aws:s3:::art/private/b")
        )
    );
    assert_eq!(
        refusal(
            s3.get_object()
                .bucket("art")
                .key("builds/secret.zip")
                .send()
                .await
        )
        .1,
        format!(
            "User: {principal} is not authorized to perform: s3:GetObject on resource: arn:aws:s3:::art/builds/secret.zip with an explicit deny in an identity-based policy"
        )
    );

    // SQS: one queue.
    let sqs = aws_sdk_sqs::Client::new(&function);
    sqs.send_message()
        .queue_url(&timers)
        .message_body("tick")
        .send()
        .await?;
    let (code, message) = refusal(
        sqs.send_message()
            .queue_url(&others)
            .message_body("tick")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        implicit(
            "sqs:SendMessage",
            &format!("arn:aws:sqs:{region}:{account}:others")
        )
    );

    // CloudWatch: alarms, not metrics.
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&function);
    cloudwatch
        .describe_alarms()
        .alarm_names("errors")
        .send()
        .await?;
    let (code, message) = refusal(
        cloudwatch
            .get_metric_statistics()
            .namespace("AWS/Lambda")
            .metric_name("Errors")
            .start_time(aws_smithy_types::DateTime::from_secs(0))
            .end_time(aws_smithy_types::DateTime::from_secs(60))
            .period(60)
            .statistics(Statistic::Sum)
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), message),
        (
            "AccessDenied",
            implicit("cloudwatch:GetMetricStatistics", "*")
        )
    );

    // Secrets Manager: a secret named by name is judged by its full ARN.
    let secrets = aws_sdk_secretsmanager::Client::new(&function);
    let value = secrets
        .get_secret_value()
        .secret_id("webhook")
        .send()
        .await?;
    assert_eq!(value.secret_string(), Some("s3cr3t"));
    assert_eq!(
        refusal(secrets.get_secret_value().secret_id("other").send().await).1,
        implicit("secretsmanager:GetSecretValue", &other_secret_arn)
    );

    // Lambda: what the role names, on the unqualified or qualified ARN.
    let lambda = aws_sdk_lambda::Client::new(&function);
    lambda.list_functions().send().await?;
    assert_eq!(
        refusal(
            lambda
                .get_alias()
                .function_name("greeter")
                .name("live")
                .send()
                .await
        ),
        (
            "AccessDeniedException".into(),
            implicit(
                "lambda:GetAlias",
                &format!("arn:aws:lambda:{region}:{account}:function:greeter")
            )
        )
    );
    assert_eq!(
        refusal(
            lambda
                .invoke()
                .function_name("greeter")
                .qualifier("live")
                .send()
                .await
        )
        .1,
        implicit(
            "lambda:InvokeFunction",
            &format!("arn:aws:lambda:{region}:{account}:function:greeter:live")
        )
    );

    // A change to the role applies within IAM's propagation delay.
    iam.put_role_policy()
        .role_name("probe-role")
        .policy_name("more")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem",
                "Resource": format!("arn:aws:dynamodb:{region}:{account}:table/other")}]})
            .to_string(),
        )
        .send()
        .await?;
    wait_for("the new policy to apply", DEADLINE, || async {
        Ok(item("other").await.is_ok().then_some(()))
    })
    .await?;

    // A role that does not exist allows nothing, and says why.
    let ghost = as_function(format!("arn:aws:iam::{account}:role/ghost")).await;
    let (code, message) = refusal(
        aws_sdk_dynamodb::Client::new(&ghost)
            .put_item()
            .table_name("granted")
            .item("pk", AttributeValue::S("k".into()))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("ghost cannot be read"), "{message}");
    Ok(())
}

/// DynamoDB isolates a transaction from every other request, and checks and
/// applies a conditional write as one
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation>).
/// Writers that each take one item from version n to n + 1 by a conditional
/// transaction, as Sluice saves a deployment with its timeline, are refused
/// whenever a rival got there first, and a refused transaction never undoes
/// a rival's success: every increment that succeeded is in the item, every
/// timeline line with it, and each line's record on the table's stream, read
/// through an iterator taken before the first write, as pollers read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_transactions_refused_never_undo_another_writers_success() -> Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
        ScalarAttributeType, StreamSpecification, StreamViewType, TransactWriteItem, Update,
    };
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    const WRITERS: u64 = 8;
    const EACH: u64 = 10;
    let stack = start_stack(None, &[], 1.0)?;
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk_config().await);
    let table = "isolation";
    ddb.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::KeysOnly)
                .build()?,
        )
        .send()
        .await?;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: u64| AttributeValue::N(v.to_string());
    // A table of some size, as the state table is: moto copies it whole.
    for i in 0..200 {
        ddb.put_item()
            .table_name(table)
            .item("pk", s(&format!("filler-{i}")))
            .item("data", s(&"x".repeat(1000)))
            .send()
            .await?;
    }
    ddb.put_item()
        .table_name(table)
        .item("pk", s("counter"))
        .item("n", n(0))
        .send()
        .await?;

    let streams = aws_sdk_dynamodbstreams::Client::new(&stack.sdk_config().await);
    let described = ddb.describe_table().table_name(table).send().await?;
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .context("the table's stream")?
        .to_owned();
    let shard = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await?
        .stream_description()
        .and_then(|d| d.shards().first().and_then(|s| s.shard_id()))
        .context("the stream's shard")?
        .to_owned();
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream_arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await?
        .shard_iterator
        .context("an iterator")?;

    let mut writers = tokio::task::JoinSet::<Result<u64>>::new();
    for writer in 0..WRITERS {
        let ddb = ddb.clone();
        writers.spawn(async move {
            let (mut done, mut refused) = (0, 0);
            while done < EACH {
                let seen = read_counter(&ddb, table).await?;
                let bump = Update::builder()
                    .table_name(table)
                    .key("pk", s("counter"))
                    .update_expression("SET n = :next")
                    .condition_expression("n = :seen")
                    .expression_attribute_values(":next", n(seen + 1))
                    .expression_attribute_values(":seen", n(seen))
                    .build()?;
                let line = Put::builder()
                    .table_name(table)
                    .item("pk", s(&format!("line-{writer}-{done}")))
                    .build()?;
                let written = ddb
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().update(bump).build())
                    .transact_items(TransactWriteItem::builder().put(line).build())
                    .send()
                    .await;
                match written {
                    Ok(_) => done += 1,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|se| se.is_transaction_canceled_exception()) =>
                    {
                        refused += 1
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(refused)
        });
    }
    let mut refused = 0;
    while let Some(joined) = writers.join_next().await {
        refused += joined??;
    }
    assert!(refused > 0, "the writers never met: nothing was tested");

    assert_eq!(
        read_counter(&ddb, table).await?,
        WRITERS * EACH,
        "{refused} refused transactions"
    );
    let mut lines = 0;
    let mut pages = ddb.scan().table_name(table).into_paginator().send();
    while let Some(page) = pages.next().await {
        lines += page?
            .items()
            .iter()
            .filter(|i| matches!(i.get("pk"), Some(AttributeValue::S(k)) if k.starts_with("line-")))
            .count() as u64;
    }
    assert_eq!(lines, WRITERS * EACH);

    let mut lines_on_stream = 0;
    loop {
        let page = streams
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await?;
        if page.records().is_empty() {
            break;
        }
        lines_on_stream += page
            .records()
            .iter()
            .filter_map(|r| r.dynamodb()?.keys()?.get("pk"))
            .filter(|k| matches!(k, aws_sdk_dynamodbstreams::types::AttributeValue::S(k) if k.starts_with("line-")))
            .count() as u64;
        iterator = page.next_shard_iterator.context("the next iterator")?;
    }
    assert_eq!(lines_on_stream, WRITERS * EACH);
    Ok(())
}

/// The `n` of the isolation test's counter item, read consistently.
async fn read_counter(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<u64> {
    let item = ddb
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("counter".into()),
        )
        .consistent_read(true)
        .send()
        .await?;
    match item.item().and_then(|i| i.get("n")) {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(v)) => Ok(v.parse()?),
        other => anyhow::bail!("counter without n: {other:?}"),
    }
}
