//! The source function on the local stack: real GitHub-format webhooks through
//! its Function URL, CodeCommit events invoked directly, and the executions
//! they start in the table.

mod support;

use anyhow::{Context, Result};
use aws_sdk_lambda::primitives::Blob;
use sluice::commits::sign;
use sluice::domain::pipeline::PipelineDefinition;
use sluice::ports::Executions as _;
use sluice::store::Store;
use std::time::Duration;
use support::*;

const PUSH: &[u8] = include_bytes!("../events/github-push.json");

struct World {
    stack: TestStack,
    store: Store,
    secret: String,
    url: String,
    http: reqwest::Client,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl World {
    async fn new() -> Result<World> {
        // The source function alone: nothing else is needed to start executions.
        let stack = start_stack_without(
            Some("template.yaml"),
            &[],
            1.0,
            &[
                "ShifterFunction",
                "PreTrafficFunction",
                "PostTrafficFunction",
            ],
        )?;
        let config = stack.sdk_config().await;
        let store = template_store(&stack).await;
        let secret = webhook_secret(&stack).await?;
        for definition in [
            include_str!("../pipelines/greeter.yaml").to_owned(),
            // A CodeCommit repository's pipeline, by repository name.
            include_str!("../pipelines/greeter.yaml")
                .replace("name: greeter", "name: greeter-codecommit")
                .replace("repository: acme/greeter", "repository: greeter"),
        ] {
            store
                .put_definition(&PipelineDefinition::parse(&definition)?, chrono::Utc::now())
                .await?;
        }
        Ok(World {
            url: stack.var("SLUICE_URL_SOURCE_FUNCTION").to_owned(),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            stack,
            store,
            secret,
            http: reqwest::Client::new(),
        })
    }

    /// Posts a webhook delivery as GitHub does; returns the status and the JSON answer.
    async fn deliver(
        &self,
        event: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> Result<(u16, serde_json::Value)> {
        self.deliver_as("application/json", event, body, signature)
            .await
    }

    async fn deliver_as(
        &self,
        content_type: &str,
        event: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", content_type)
            .header("x-github-event", event)
            .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
            .header("user-agent", "GitHub-Hookshot/sluice-test")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).with_context(|| format!("answer {text:?}"))?;
        Ok((status, json))
    }

    async fn push(&self, body: &[u8]) -> Result<(u16, serde_json::Value)> {
        self.deliver("push", body, Some(sign(body, self.secret.as_bytes())))
            .await
    }

    /// Every item the table holds, by key: what a refused request must not change.
    async fn items(&self) -> Result<Vec<String>> {
        let out = self
            .dynamodb
            .scan()
            .table_name(self.stack.var("SLUICE_RESOURCE_STATE_TABLE"))
            .send()
            .await?;
        let mut keys: Vec<String> = out
            .items()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["pk"].as_s().unwrap_or(&String::new()),
                    i["sk"].as_s().unwrap_or(&String::new())
                )
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn executions(&self) -> Result<Vec<String>> {
        Ok(self
            .items()
            .await?
            .into_iter()
            .filter(|k| k.starts_with("EXEC#"))
            .collect())
    }
}

fn push_with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_slice(PUSH).unwrap();
    edit(&mut body);
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_starts_one_execution_however_often_it_is_delivered() -> Result<()> {
    let w = World::new().await?;
    let (status, answer) = w.push(PUSH).await?;
    assert_eq!(status, 200, "{answer}");
    let started = answer["executions"].as_array().context("executions")?;
    assert_eq!(started.len(), 1, "{answer}");
    assert_eq!(started[0]["pipeline"], "greeter");
    assert_eq!(started[0]["new"], true);
    let id = started[0]["execution"].as_str().context("id")?.to_owned();

    // GitHub redelivers; the same push four more times starts nothing new.
    for _ in 0..4 {
        let (status, answer) = w.push(PUSH).await?;
        assert_eq!(status, 200);
        assert_eq!(answer["executions"][0]["execution"], id.as_str());
        assert_eq!(answer["executions"][0]["new"], false);
    }
    assert_eq!(w.executions().await?, vec![format!("EXEC#{id}/STATE")]);

    let stored = w.store.load_execution(&id).await?.execution;
    assert_eq!(stored.pipeline, "greeter");
    assert_eq!(stored.push.sha, "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4");
    assert_eq!(stored.stage_name(), "build");
    let timeline = w.store.execution_events(&id).await?;
    assert!(
        timeline[0].message.contains("a push to main at 9a1f3c2"),
        "{timeline:?}"
    );
    Ok(())
}

/// GitHub's default content type: the event in a `payload` form field,
/// signed over the form body as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_encoded_push_is_read_from_its_payload_and_signed_over_the_raw_body() -> Result<()> {
    let w = World::new().await?;
    let before = w.items().await?;
    let form = |json: &[u8]| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(json).expect("UTF-8"))
            .finish()
            .into_bytes()
    };
    let body = form(PUSH);
    let secret = w.secret.as_bytes();
    const FORM: &str = "application/x-www-form-urlencoded";
    // Signed over the JSON inside rather than the body sent: refused.
    let (status, _) = w
        .deliver_as(FORM, "push", &body, Some(sign(PUSH, secret)))
        .await?;
    assert_eq!(status, 401);
    // No payload field, or a content type GitHub does not send.
    let empty = b"other=1".to_vec();
    let (status, answer) = w
        .deliver_as(FORM, "push", &empty, Some(sign(&empty, secret)))
        .await?;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("payload field")
    );
    let (status, answer) = w
        .deliver_as("text/plain", "push", PUSH, Some(sign(PUSH, secret)))
        .await?;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("\"text/plain\"")
    );
    assert_eq!(w.items().await?, before, "nothing was written");

    let (status, answer) = w
        .deliver_as(
            &format!("{FORM}; charset=utf-8"),
            "push",
            &body,
            Some(sign(&body, secret)),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["executions"][0]["pipeline"], "greeter");
    assert_eq!(answer["executions"][0]["new"], true);
    // The same push as JSON is the same push: nothing new.
    let (status, answer) = w.push(PUSH).await?;
    assert_eq!(
        (status, answer["executions"][0]["new"].clone()),
        (200, false.into())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_are_refused_and_write_nothing() -> Result<()> {
    let w = World::new().await?;
    let before = w.items().await?;

    let (status, answer) = w.deliver("push", PUSH, None).await?;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("missing")
    );
    let (status, _) = w
        .deliver("push", PUSH, Some(sign(PUSH, b"not the secret")))
        .await?;
    assert_eq!(status, 401);
    let tampered = push_with(|b| b["ref"] = "refs/heads/release/evil".into());
    let (status, answer) = w
        .deliver("push", &tampered, Some(sign(PUSH, w.secret.as_bytes())))
        .await?;
    assert_eq!(status, 401, "a body changed after signing: {answer}");
    let (status, _) = w.deliver("push", PUSH, Some("sha256=zz".into())).await?;
    assert_eq!(status, 401);

    let (status, answer) = w.push(b"{\"ref\": ").await?;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed push event")
    );

    // Over 1 MB of event: refused once read; over 3 MB sent: before the signature.
    let big = vec![b' '; 1024 * 1024 + 1];
    let (status, _) = w.push(&big).await?;
    assert_eq!(status, 413);
    let huge = vec![b' '; 3 * 1024 * 1024 + 1];
    let (status, _) = w.deliver("push", &huge, None).await?;
    assert_eq!(status, 413);

    let ping = br#"{"zen": "Design for failure.", "hook_id": 1}"#;
    let (status, answer) = w
        .deliver("ping", ping, Some(sign(ping, w.secret.as_bytes())))
        .await?;
    assert_eq!((status, answer["pong"].clone()), (200, true.into()));
    let issue = br#"{"action": "opened"}"#;
    let (status, _) = w
        .deliver("issues", issue, Some(sign(issue, w.secret.as_bytes())))
        .await?;
    assert_eq!(status, 202);

    assert_eq!(w.items().await?, before, "nothing was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_decide_which_pushes_start_executions() -> Result<()> {
    let w = World::new().await?;
    // A branch no pipeline selects.
    let feature = push_with(|b| b["ref"] = "refs/heads/feature/french".into());
    let (status, answer) = w.push(&feature).await?;
    assert_eq!(
        (status, answer["executions"].clone()),
        (200, serde_json::json!([]))
    );
    // A push that only changes docs.
    let docs = push_with(|b| {
        b["after"] = "1111111111111111111111111111111111111111".into();
        for c in b["commits"].as_array_mut().unwrap() {
            c["added"] = serde_json::json!(["docs/guide.txt"]);
            c["modified"] = serde_json::json!(["README.md"]);
        }
    });
    let (_, answer) = w.push(&docs).await?;
    assert_eq!(answer["executions"], serde_json::json!([]));
    // A deleted branch.
    let deleted = push_with(|b| {
        b["deleted"] = true.into();
        b["after"] = "0000000000000000000000000000000000000000".into();
    });
    let (_, answer) = w.push(&deleted).await?;
    assert_eq!(answer["executions"], serde_json::json!([]));
    // A release branch does, forced or not.
    let release = push_with(|b| {
        b["ref"] = "refs/heads/release/2.0".into();
        b["forced"] = true.into();
    });
    let (_, answer) = w.push(&release).await?;
    assert_eq!(
        answer["executions"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(w.executions().await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecommit_triggers_and_state_changes_start_executions() -> Result<()> {
    let w = World::new().await?;
    let lambda = w.stack.lambda().await;
    let function = w.stack.var("SLUICE_RESOURCE_SOURCE_FUNCTION").to_owned();
    let invoke = |payload: &'static [u8]| {
        let (lambda, function) = (lambda.clone(), function.clone());
        async move {
            let out = lambda
                .invoke()
                .function_name(function)
                .payload(Blob::new(payload))
                .send()
                .await?;
            anyhow::ensure!(out.function_error().is_none(), "{out:?}");
            let answer: serde_json::Value =
                serde_json::from_slice(out.payload().context("payload")?.as_ref())?;
            Ok::<_, anyhow::Error>(answer)
        }
    };
    // main and a tag (no pipeline takes tags) and a deleted branch: one execution.
    let answer = invoke(include_bytes!("../events/codecommit-trigger.json")).await?;
    let started = answer["executions"].as_array().context("executions")?;
    assert_eq!(started.len(), 1, "{answer}");
    assert_eq!(started[0]["pipeline"], "greeter-codecommit");
    assert_eq!(started[0]["new"], true);
    // The same commit through EventBridge: already started.
    let answer = invoke(include_bytes!("../events/codecommit-state-change.json")).await?;
    assert_eq!(
        answer["executions"][0]["execution"],
        started[0]["execution"]
    );
    assert_eq!(answer["executions"][0]["new"], false);
    assert_eq!(w.executions().await?.len(), 1);

    // Something else entirely is an error, not a silent success.
    let out = lambda
        .invoke()
        .function_name(&function)
        .payload(Blob::new(&b"{\"hello\": 1}"[..]))
        .send()
        .await?;
    assert_eq!(out.function_error(), Some("Unhandled"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_picked_up_and_the_previous_one_still_verifies() -> Result<()> {
    let w = World::new().await?;
    assert_eq!(
        w.push(PUSH).await?.0,
        200,
        "the function has read the secret"
    );
    let secrets = aws_sdk_secretsmanager::Client::new(&w.stack.sdk_config().await);
    let rotated = "rotated-webhook-secret-0123456789";
    secrets
        .put_secret_value()
        .secret_id(w.stack.var("SLUICE_RESOURCE_WEBHOOK_SECRET"))
        .secret_string(rotated)
        .send()
        .await?;
    // The new secret verifies once the function re-reads it (at most once a second).
    let body = push_with(|b| b["after"] = "2222222222222222222222222222222222222222".into());
    wait_for(
        "the rotated secret to verify",
        Duration::from_secs(10),
        || async {
            let (status, _) = w
                .deliver("push", &body, Some(sign(&body, rotated.as_bytes())))
                .await?;
            Ok((status == 200).then_some(()))
        },
    )
    .await?;
    // GitHub may still sign with the old one until its settings are updated.
    let (status, _) = w.push(PUSH).await?;
    assert_eq!(status, 200);
    let (status, _) = w
        .deliver("push", PUSH, Some(sign(PUSH, b"never the secret")))
        .await?;
    assert_eq!(status, 401);
    Ok(())
}
