//! `Custom::SluiceRollout` driven as CloudFormation drives it: Create, Update
//! and Delete requests invoked asynchronously on the template's provider,
//! each with a presigned PUT URL on the local S3 as its `ResponseURL`; the
//! answers are read back from S3.

mod support;

use anyhow::{Context, Result};
use aws_sdk_s3::presigning::PresigningConfig;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/greeter-app/7c1c3a40";

struct Cfn {
    stack: TestStack,
    lambda: aws_sdk_lambda::Client,
    s3: aws_sdk_s3::Client,
    bucket: String,
    provider: String,
}

impl Cfn {
    /// Sends a request as CloudFormation does (an `Event` invocation) and
    /// returns the answer PUT to its response URL.
    async fn request(&self, request_id: &str, request: Value) -> Result<Value> {
        self.send(request_id, request).await?;
        self.answer(request_id).await
    }

    async fn send(&self, request_id: &str, mut request: Value) -> Result<()> {
        let key = format!("answers/{request_id}");
        // A request delivered again is answered again, at the same URL.
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await?;
        let url = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(PresigningConfig::expires_in(Duration::from_secs(7200))?)
            .await?
            .uri()
            .to_owned();
        request["RequestId"] = request_id.into();
        request["ResponseURL"] = url.into();
        request["StackId"] = STACK_ID.into();
        request["ResourceType"] = "Custom::SluiceRollout".into();
        request["ServiceToken"] =
            "arn:aws:lambda:us-east-1:123456789012:function:RolloutResource".into();
        if request["LogicalResourceId"].is_null() {
            request["LogicalResourceId"] = "GreeterRollout".into();
        }
        self.lambda
            .invoke()
            .function_name(&self.provider)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(request.to_string()))
            .send()
            .await?;
        Ok(())
    }

    /// The answer to `request_id`, once PUT.
    async fn answer(&self, request_id: &str) -> Result<Value> {
        let key = format!("answers/{request_id}");
        wait_for(
            "CloudFormation's answer",
            Duration::from_secs(90),
            || async {
                match self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                {
                    Ok(object) => {
                        let body = object.body.collect().await?.into_bytes();
                        Ok(Some(serde_json::from_slice(&body)?))
                    }
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            },
        )
        .await
    }

    /// `greeter:live`: the version it serves, and whether it is split.
    async fn alias(&self) -> Result<Option<(String, bool)>> {
        self.live_of("greeter").await
    }

    /// `function:live`: the version it serves, and whether it is split.
    async fn live_of(&self, function: &str) -> Result<Option<(String, bool)>> {
        match self
            .lambda
            .get_alias()
            .function_name(function)
            .name("live")
            .send()
            .await
        {
            Ok(a) => Ok(Some((
                a.function_version().unwrap_or_default().to_owned(),
                a.routing_config()
                    .and_then(|r| r.additional_version_weights())
                    .is_some_and(|w| !w.is_empty()),
            ))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The deployments in the table.
    async fn deployments(&self) -> Result<Vec<String>> {
        let out = aws_sdk_dynamodb::Client::new(&self.stack.sdk_config().await)
            .scan()
            .table_name(self.stack.var("SLUICE_RESOURCE_STATE_TABLE"))
            .send()
            .await?;
        let mut ids: Vec<String> = out
            .items()
            .iter()
            .filter(|i| i["sk"].as_s().is_ok_and(|sk| sk == "STATE"))
            .filter_map(|i| {
                i["pk"]
                    .as_s()
                    .ok()?
                    .strip_prefix("DEPLOY#")
                    .map(str::to_owned)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn properties(version: &str, extra: Value) -> Value {
    let mut p = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:RolloutResource",
        "ServiceTimeout": "600",
        "FunctionName": "greeter", "Alias": "live", "Version": version,
        "Type": "canary:50:1s",
        "Hooks": {"PreTraffic": "greeter-pre-ok"}
    });
    for (k, v) in extra.as_object().expect("an object") {
        p[k] = v.clone();
    }
    p
}

fn status_and_reason(answer: &Value) -> (&str, &str) {
    (
        answer["Status"].as_str().unwrap_or_default(),
        answer["Reason"].as_str().unwrap_or_default(),
    )
}

/// Sluice's stack with its rollout provider, hooks that pass
/// (`greeter-pre-ok`) and fail (`greeter-pre-fail`), each recording what
/// it was sent in the directory returned, and a bucket for the answers.
async fn cfn_stack() -> Result<(Cfn, tempfile::TempDir)> {
    let stack = start_stack_without(
        Some("template.yaml"),
        &[("ManagedFunctions", "greeter*")],
        0.1,
        &[
            "SourceFunction",
            "CodePipelineActionFunction",
            "ApiFunction",
            "HookReportsFunction",
        ],
    )?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    let recorder = binary("recorder")?;
    let hooks = tempfile::tempdir()?;
    for (name, status) in [
        ("greeter-pre-ok", "Succeeded"),
        ("greeter-pre-fail", "Failed"),
    ] {
        let dir = hooks.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let reply =
            format!(r#"{{"status":"{status}","reason":"{name} says {status}","checks":[]}}"#);
        let env = [
            ("RECORDER_DIR", dir.to_str().context("path")?),
            ("RECORDER_REPLY", reply.as_str()),
        ];
        create_function(
            &lambda,
            &role,
            name,
            sluice_local::code::bootstrap_zip(&recorder, &[]),
            &env,
            5,
        )
        .await?;
    }
    let config = stack.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = "cloudformation-answers".to_owned();
    s3.create_bucket().bucket(&bucket).send().await?;
    let cfn = Cfn {
        provider: stack
            .var("SLUICE_RESOURCE_ROLLOUT_RESOURCE_FUNCTION")
            .to_owned(),
        stack,
        lambda,
        s3,
        bucket,
    };
    Ok((cfn, hooks))
}

fn update(new: &Value, old: &Value) -> Value {
    json!({"RequestType": "Update", "PhysicalResourceId": "greeter:live",
           "ResourceProperties": new, "OldResourceProperties": old})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apps_stack_rolls_out_through_the_custom_resource() -> Result<()> {
    let (cfn, _hooks) = cfn_stack().await?;
    greeter_with_versions(&cfn.stack, 4).await?;

    // Bad properties: FAILED, naming the property; nothing made.
    let typo = properties("1", json!({"Hooks": {"PreTrafic": "greeter-pre-ok"}}));
    let answer = cfn
        .request(
            "create-typo",
            json!({"RequestType": "Create", "ResourceProperties": typo}),
        )
        .await?;
    assert_eq!(status_and_reason(&answer).0, "FAILED", "{answer}");
    assert!(
        status_and_reason(&answer)
            .1
            .contains("unknown field `PreTrafic`"),
        "{answer}"
    );
    let too_long = properties("1", json!({"Type": "Canary10Percent15Minutes"}));
    let answer = cfn
        .request(
            "create-long",
            json!({"RequestType": "Create", "ResourceProperties": too_long}),
        )
        .await?;
    assert!(
        status_and_reason(&answer)
            .1
            .contains("CloudFormation waits 600 s"),
        "{answer}"
    );
    assert_eq!(cfn.alias().await?, None, "nothing made");
    // CloudFormation deletes what a failed create named: nothing to do.
    let answer = cfn
        .request(
            "delete-failed-create",
            json!({"RequestType": "Delete", "PhysicalResourceId": answer["PhysicalResourceId"], "ResourceProperties": too_long}),
        )
        .await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");

    // Create: the alias is made on the version, no rollout.
    let v1 = properties("1", json!({}));
    let answer = cfn
        .request(
            "create",
            json!({"RequestType": "Create", "ResourceProperties": v1}),
        )
        .await?;
    assert_eq!(
        (
            status_and_reason(&answer).0,
            answer["PhysicalResourceId"].as_str()
        ),
        ("SUCCESS", Some("greeter:live")),
        "{answer}"
    );
    assert_eq!(cfn.alias().await?, Some(("1".to_owned(), false)));
    assert_eq!(cfn.deployments().await?, Vec::<String>::new());

    // Update to version 2: a gated rollout, answered once promoted.
    let v2 = properties("2", json!({}));
    let answer = cfn.request("update-2", update(&v2, &v1)).await?;
    assert_eq!(status_and_reason(&answer), ("SUCCESS", ""), "{answer}");
    assert_eq!(answer["Data"]["Version"], "2");
    assert_eq!(cfn.alias().await?, Some(("2".to_owned(), false)));
    let rolled_out = cfn.deployments().await?;
    assert_eq!(rolled_out.len(), 1, "{rolled_out:?}");
    assert!(rolled_out[0].starts_with("cfn-"));

    // Update to version 3 through a failing gate: FAILED with the rollback's reason.
    let v3 = properties("3", json!({"Hooks": {"PreTraffic": "greeter-pre-fail"}}));
    let answer = cfn.request("update-3", update(&v3, &v2)).await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(
        reason.contains("PreTraffic gate failed")
            && reason.contains("greeter-pre-fail says Failed"),
        "{reason}"
    );
    assert_eq!(cfn.alias().await?, Some(("2".to_owned(), false)));
    let after_failure = cfn.deployments().await?;
    assert_eq!(after_failure.len(), 2);

    // CloudFormation rolls the stack back, sending the old properties: the
    // alias already serves version 2 whole, so nothing starts.
    let answer = cfn.request("rollback-to-2", update(&v2, &v3)).await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(cfn.alias().await?, Some(("2".to_owned(), false)));
    assert_eq!(
        cfn.deployments().await?,
        after_failure,
        "no rollout started"
    );

    // The failed request delivered again: the same rollout's answer, nothing new.
    let answer = cfn.request("update-3", update(&v3, &v2)).await?;
    assert_eq!(status_and_reason(&answer).0, "FAILED", "{answer}");
    assert_eq!(cfn.deployments().await?, after_failure);

    // A version ARN, as `!Ref Function.Version` gives it.
    let arn = format!(
        "arn:aws:lambda:{}:123456789012:function:greeter:4",
        cfn.stack.var("AWS_REGION")
    );
    let v4 = properties(&arn, json!({}));
    let answer = cfn.request("update-4", update(&v4, &v2)).await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(cfn.alias().await?, Some(("4".to_owned(), false)));

    // A long rollout under way: another resource on the same alias is
    // refused (never two rollouts on one alias)...
    let slow = properties(
        "3",
        json!({"Type": "canary:50:5m", "ServiceTimeout": "3600"}),
    );
    cfn.send("update-slow", update(&slow, &v4)).await?;
    wait_for("the first shift", Duration::from_secs(60), || async {
        Ok((cfn.alias().await? == Some(("4".to_owned(), true))).then_some(()))
    })
    .await?;
    let mut other = update(&slow, &v4);
    other["LogicalResourceId"] = "AnotherRollout".into();
    let answer = cfn.request("update-other", other).await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(reason.contains("busy with deployment cfn-"), "{reason}");

    // CloudFormation stops waiting for it and rolls the stack back, sending
    // the version it started from: it is aborted, and the rollback answered
    // once the alias is whole on that version again.
    let answer = cfn.request("rollback-slow", update(&v4, &slow)).await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(cfn.alias().await?, Some(("4".to_owned(), false)));
    let answer = cfn.answer("update-slow").await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(
        reason.contains("CloudFormation stopped waiting for it"),
        "{reason}"
    );

    // Deleting the resource aborts its rollout under way: rolled back, then
    // answered; the alias stays, whole on what it served before.
    cfn.send("update-slow-again", update(&slow, &v4)).await?;
    wait_for("the first shift", Duration::from_secs(60), || async {
        Ok((cfn.alias().await? == Some(("4".to_owned(), true))).then_some(()))
    })
    .await?;
    let answer = cfn
        .request(
            "delete",
            json!({"RequestType": "Delete", "PhysicalResourceId": "greeter:live", "ResourceProperties": slow}),
        )
        .await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(cfn.alias().await?, Some(("4".to_owned(), false)));
    let answer = cfn.answer("update-slow-again").await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(
        reason.contains("aborted: the stack") && reason.contains("deleted GreeterRollout"),
        "{reason}"
    );
    Ok(())
}

/// The greeter and its worker as one resource: `Group` names the worker.
fn group_properties(greeter: &str, worker: &str, extra: Value) -> Value {
    let mut p = properties(
        greeter,
        json!({"Group": [{"FunctionName": "greeter-worker", "Alias": "live", "Version": worker}]}),
    );
    for (k, v) in extra.as_object().expect("an object") {
        p[k] = v.clone();
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apps_release_group_rolls_out_through_the_custom_resource() -> Result<()> {
    let (cfn, hooks) = cfn_stack().await?;
    greeter_with_versions(&cfn.stack, 4).await?;
    with_versions(&cfn.stack, "greeter-worker", 3).await?;
    let both = || async {
        Ok::<_, anyhow::Error>((
            cfn.live_of("greeter").await?,
            cfn.live_of("greeter-worker").await?,
        ))
    };
    let whole = |v: &str| Some((v.to_owned(), false));

    // The greeter alone first: its alias made on version 1.
    let alone = properties("1", json!({}));
    let answer = cfn
        .request(
            "create",
            json!({"RequestType": "Create", "ResourceProperties": alone}),
        )
        .await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");

    // The worker joins, and both ask for a version they do not have:
    // refused, both named at once (the worker's alias to create, the
    // greeter's rollout checked before it), and nothing written: the
    // worker's alias not made, the greeter not moved.
    let bad = group_properties("9", "9", json!({}));
    let answer = cfn.request("update-bad", update(&bad, &alone)).await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(
        reason.contains("version 9 of greeter-worker does not exist")
            && reason.contains("version 9 of greeter does not exist"),
        "{reason}"
    );
    assert_eq!(both().await?, (whole("1"), None));
    assert_eq!(cfn.deployments().await?, Vec::<String>::new());

    // It joins on version 1: its alias is made on it, the greeter rolled out.
    let joined = group_properties("2", "1", json!({}));
    let answer = cfn.request("update-join", update(&joined, &alone)).await?;
    assert_eq!(status_and_reason(&answer), ("SUCCESS", ""), "{answer}");
    assert_eq!(both().await?, (whole("2"), whole("1")));
    assert_eq!(cfn.deployments().await?.len(), 1);

    // Both move: one gated rollout of the group, promoted as a whole, its
    // PreTraffic gate told of the worker.
    let worker_arn = format!(
        "arn:aws:lambda:{}:123456789012:function:greeter-worker:2",
        cfn.stack.var("AWS_REGION")
    );
    let together = group_properties("3", &worker_arn, json!({}));
    let answer = cfn
        .request("update-together", update(&together, &joined))
        .await?;
    assert_eq!(status_and_reason(&answer), ("SUCCESS", ""), "{answer}");
    assert_eq!(answer["Data"]["Version"], "3");
    assert_eq!(both().await?, (whole("3"), whole("2")));
    assert_eq!(cfn.deployments().await?.len(), 2);
    let told: Vec<Value> = read_json_files(&hooks.path().join("greeter-pre-ok"))
        .into_iter()
        .filter(|request| request["toVersion"] == "3")
        .collect();
    assert!(!told.is_empty(), "the group's PreTraffic gate ran");
    for request in &told {
        assert_eq!(
            (
                &request["group"][0]["function"],
                &request["group"][0]["fromVersion"],
                &request["group"][0]["toVersion"]
            ),
            (&json!("greeter-worker"), &json!("1"), &json!("2")),
            "{request}"
        );
    }

    // A failing gate: the group rolled back whole, the update FAILED.
    let failing = group_properties(
        "4",
        "3",
        json!({"Hooks": {"PreTraffic": "greeter-pre-fail"}}),
    );
    let answer = cfn
        .request("update-failing", update(&failing, &together))
        .await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(reason.contains("PreTraffic gate failed"), "{reason}");
    assert_eq!(both().await?, (whole("3"), whole("2")));
    // CloudFormation's rollback: every member serves its old version, nothing starts.
    let after_failure = cfn.deployments().await?;
    let answer = cfn
        .request("rollback-failing", update(&together, &failing))
        .await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(
        cfn.deployments().await?,
        after_failure,
        "no rollout started"
    );

    // A long group rollout under way, and CloudFormation rolling the stack
    // back to the versions it started from: aborted, every member whole on
    // its old version, then both requests answered.
    let slow = group_properties(
        "4",
        "3",
        json!({"Type": "canary:50:5m", "ServiceTimeout": "3600"}),
    );
    cfn.send("update-slow", update(&slow, &together)).await?;
    wait_for(
        "the group's first shift",
        Duration::from_secs(60),
        || async {
            let split = |a: &Option<(String, bool)>| a.as_ref().is_some_and(|(_, split)| *split);
            let (greeter, worker) = both().await?;
            Ok((split(&greeter) && split(&worker)).then_some(()))
        },
    )
    .await?;
    let answer = cfn
        .request("rollback-slow", update(&together, &slow))
        .await?;
    assert_eq!(status_and_reason(&answer).0, "SUCCESS", "{answer}");
    assert_eq!(both().await?, (whole("3"), whole("2")));
    let answer = cfn.answer("update-slow").await?;
    let (status, reason) = status_and_reason(&answer);
    assert_eq!(status, "FAILED", "{answer}");
    assert!(
        reason.contains("CloudFormation stopped waiting for it")
            && reason.contains("greeter:live on 3, greeter-worker:live on 2"),
        "{reason}"
    );
    Ok(())
}
