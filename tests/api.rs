//! The `api` function on the local stack, through its AWS_IAM Function URL:
//! SigV4-signed requests as tooling sends them, every route, and the answers
//! to malformed requests, unknown ids and transitions the state refuses.

mod support;

use anyhow::{Context, Result};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};
use sluice::commits::sign as sign_webhook;
use std::time::{Duration, SystemTime};
use support::*;

struct Api {
    stack: TestStack,
    url: String,
    http: reqwest::Client,
}

impl Api {
    /// Sends a request signed as the AWS SDK signs Lambda requests; returns the
    /// status and the JSON answer.
    async fn send(&self, method: &str, path: &str, body: &str) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let identity = aws_credential_types::Credentials::new(
            self.stack.var("AWS_ACCESS_KEY_ID"),
            self.stack.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.stack.var("AWS_REGION"))
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let headers = [("content-type", "application/json")];
        let signable = SignableRequest::new(
            method,
            &url,
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut request = self
            .http
            .request(method.parse()?, &url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let answer = request.send().await?;
        let status = answer.status().as_u16();
        let text = answer.text().await?;
        let value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        Ok((status, value))
    }

    async fn ok(&self, method: &str, path: &str, body: &str) -> Result<Value> {
        let (status, value) = self.send(method, path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        Ok(value)
    }

    /// A request that must be refused with `status` and an error naming the problem.
    async fn refused(
        &self,
        method: &str,
        path: &str,
        body: &str,
        status: u16,
        expected: &str,
    ) -> Result<()> {
        let (got, value) = self.send(method, path, body).await?;
        let error = value["error"].as_str().unwrap_or_default();
        assert!(
            got == status && error.contains(expected),
            "{method} {path} {body}: expected {status} with {expected:?}, got {got} {value}"
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_runs_every_operation_and_refuses_what_does_not_apply() -> Result<()> {
    let stack = start_stack_without(
        Some("template.yaml"),
        &[],
        0.1,
        &["CodePipelineActionFunction", "PostTrafficFunction"],
    )?;
    greeter_live_on_1(&stack, 2).await?;
    let api = Api {
        url: stack.var("SLUICE_URL_API_FUNCTION").to_owned(),
        stack,
        http: reqwest::Client::new(),
    };

    // Behind AWS_IAM: an unsigned request never reaches the function.
    let unsigned = api.http.get(format!("{}status", api.url)).send().await?;
    assert_eq!(unsigned.status(), 403);

    // Routes and methods.
    api.refused("GET", "/nope", "", 404, "no route GET /nope")
        .await?;
    api.refused("DELETE", "/status", "", 405, "use GET").await?;
    api.refused("POST", "/deployments/x/explode", "", 404, "no route")
        .await?;

    // Pipelines: validated with every problem, named as the URL says, diffed.
    api.refused(
        "PUT",
        "/pipelines/x",
        "name: x\nsource: {repository: r}\nstages: []\nexecution_mode: often\n",
        400,
        "not a valid pipeline: execution_mode:",
    )
    .await?;
    let gated = "name: gated\nsource: {repository: acme/greeter}\nstages:\n  - name: approve\n    actions: [{name: ok, kind: approval}]\n";
    api.refused(
        "PUT",
        "/pipelines/other",
        gated,
        400,
        "named \"gated\", not \"other\"",
    )
    .await?;
    let dry = api
        .ok("PUT", "/pipelines/gated?dry_run=true", gated)
        .await?;
    assert_eq!(
        (&dry["changed"], &dry["applied"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(
        api.ok("GET", "/pipelines", "").await?["pipelines"],
        json!([])
    );
    assert_eq!(
        api.ok("PUT", "/pipelines/gated", gated).await?["applied"],
        true
    );
    assert_eq!(
        api.ok("PUT", "/pipelines/gated", gated).await?["changed"],
        false
    );
    assert_eq!(
        api.ok("GET", "/pipelines/gated", "").await?["pipeline"]["stages"][0]["name"],
        "approve"
    );
    api.refused("GET", "/pipelines/nope", "", 404, "no pipeline nope")
        .await?;

    // Deployments: the body is checked field by field before anything is written.
    api.refused("POST", "/deployments", "{", 400, "invalid request body")
        .await?;
    api.refused(
        "POST",
        "/deployments",
        r#"{"function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "fast"}"#,
        400,
        "config",
    )
    .await?;
    api.refused(
        "POST",
        "/deployments",
        r#"{"function": "", "alias": "live", "source": {"version": "latest"}, "config": "AllAtOnce"}"#,
        400,
        "function must not be empty; source.version: \"latest\" is not a published version number",
    )
    .await?;
    // A misspelled gate is refused and named, never read as no gate; so is a
    // misspelled field at any depth, and a name AWS would refuse.
    for (body, named) in [
        (
            r#"{"function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "AllAtOnce", "pre_traffic_hok": "sluice-pre-traffic"}"#,
            "unknown field `pre_traffic_hok`",
        ),
        (
            r#"{"function": "greeter", "alias": "live", "source": {"artifact": {"bucket": "b", "key": "k", "versoin": "3"}}, "config": "AllAtOnce"}"#,
            "source.artifact.versoin: unknown field `versoin`",
        ),
        (
            r#"{"function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "AllAtOnce", "smoke_tests": [{"name": "n", "event": {}, "expct": {}}]}"#,
            "smoke_tests[0].expct: unknown field `expct`",
        ),
        (
            r#"{"function": "greeter/../../x", "alias": "../cli", "source": {"version": "2"}, "config": "AllAtOnce", "pre_traffic_hook": "a b"}"#,
            "function: \"greeter/../../x\" is not a function name: 1 to 64 letters",
        ),
    ] {
        api.refused("POST", "/deployments", body, 400, named)
            .await?;
    }
    api.refused(
        "POST",
        "/deployments",
        r#"{"function": "greeter", "alias": "../cli", "source": {"version": "2"}, "config": "AllAtOnce", "pre_traffic_hook": "a b"}"#,
        400,
        "alias: \"../cli\" is not an alias name",
    )
    .await?;
    // What the request names is checked against AWS as it is made, through
    // the api function's own role: nothing is written for what cannot start.
    let request = |function: &str, alias: &str, source: &str, hook: &str| {
        format!(
            r#"{{"function": "{function}", "alias": "{alias}", "source": {source}, "config": "AllAtOnce"{hook}}}"#
        )
    };
    let bucket = api.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET").to_owned();
    let s3 = aws_sdk_s3::Client::new(&api.stack.sdk_config().await);
    s3.put_object()
        .bucket(&bucket)
        .key("builds/real.zip")
        .body(greeter_zip("r2")?.into())
        .send()
        .await?;
    for (body, named) in [
        (
            request("greeter", "staging", r#"{"version": "2"}"#, ""),
            "alias greeter:staging does not exist".to_owned(),
        ),
        (
            request("greeter", "live", r#"{"version": "9"}"#, ""),
            "version 9 of greeter does not exist".to_owned(),
        ),
        (
            request(
                "greeter",
                "live",
                &format!(r#"{{"artifact": {{"bucket": "{bucket}", "key": "builds/none.zip"}}}}"#),
                "",
            ),
            format!("artifact s3://{bucket}/builds/none.zip does not exist"),
        ),
        (
            request(
                "greeter",
                "live",
                &format!(
                    r#"{{"artifact": {{"bucket": "{bucket}", "key": "builds/real.zip", "object_version": "not-a-version-it-gave"}}}}"#
                ),
                "",
            ),
            format!(
                "version not-a-version-it-gave of artifact s3://{bucket}/builds/real.zip does not exist"
            ),
        ),
        // Outside ManagedFunctions: out of Sluice's reach, on AWS as here.
        (
            request("billing", "live", r#"{"version": "2"}"#, ""),
            "function billing cannot be read: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/sluice-ApiFunctionRole/sluice-ApiFunction is not authorized to perform: lambda:GetFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:billing".to_owned(),
        ),
        (
            request(
                "greeter",
                "live",
                r#"{"version": "2"}"#,
                r#", "pre_traffic_hook": "someone-elses-hook""#,
            ),
            "hook someone-elses-hook cannot be read: AccessDeniedException".to_owned(),
        ),
    ] {
        api.refused("POST", "/deployments", &body, 400, &named)
            .await?;
    }
    // An alias split by hand, with no deployment holding it, cannot start one.
    let lambda = api.stack.lambda().await;
    let split = |weights: Option<f64>| {
        lambda
            .update_alias()
            .function_name("greeter")
            .name("live")
            .routing_config(
                aws_sdk_lambda::types::AliasRoutingConfiguration::builder()
                    .set_additional_version_weights(weights.map(|w| [("2".to_owned(), w)].into()))
                    .build(),
            )
            .send()
    };
    split(Some(0.5)).await?;
    api.refused(
        "POST",
        "/deployments",
        &request("greeter", "live", r#"{"version": "2"}"#, ""),
        400,
        "alias greeter:live is split between versions",
    )
    .await?;
    split(None).await?;
    assert_eq!(
        api.ok("GET", "/status", "").await?["deployments"],
        json!([])
    );
    let (status, started) = api
        .send(
            "POST",
            "/deployments",
            r#"{"function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "canary:10:1h"}"#,
        )
        .await?;
    assert_eq!(status, 201, "{started}");
    let id = started["deployment"].as_str().context("id")?.to_owned();
    wait_for("the canary to bake", Duration::from_secs(60), || async {
        let shown = api.ok("GET", &format!("/deployments/{id}"), "").await?;
        Ok((shown["deployment"]["phase"]["phase"] == "baking").then_some(shown))
    })
    .await?;
    // A busy alias: refused at once if asked, else queued, and said so.
    let busy = r#"{"function": "greeter", "alias": "live", "source": {"version": "2"}, "config": "AllAtOnce", "pre_traffic_hook": "sluice-pre-traffic", "on_busy": "refuse"}"#;
    api.refused(
        "POST",
        "/deployments",
        busy,
        409,
        &format!("greeter:live is busy with deployment {id}"),
    )
    .await?;
    let (status, queued) = api
        .send("POST", "/deployments", &busy.replace("refuse", "queue"))
        .await?;
    assert_eq!(
        (status, &queued["queued_behind"]),
        (201, &json!(id)),
        "{queued}"
    );
    let queued = queued["deployment"].as_str().context("id")?.to_owned();
    api.ok(
        "POST",
        &format!("/deployments/{queued}/abort"),
        r#"{"reason": "not now"}"#,
    )
    .await?;
    let status = api.ok("GET", "/status", "").await?;
    assert_eq!(status["deployments"][0]["weight"], 10.0);
    let path = |verb: &str| format!("/deployments/{id}/{verb}");
    assert_eq!(
        api.ok("POST", &path("pause"), "").await?["deployment"]["paused"],
        true
    );
    api.refused("POST", &path("pause"), "", 409, "(paused)")
        .await?;
    api.refused("GET", &path("pause"), "", 405, "use POST")
        .await?;
    assert_eq!(
        api.ok("POST", &path("resume"), "").await?["deployment"]["paused"],
        false
    );
    // Sizes are bounded, with the bound named: never a 500 from the table.
    let reason = |chars: usize| format!(r#"{{"reason": "{}"}}"#, "x".repeat(chars));
    api.refused(
        "POST",
        &path("abort"),
        &reason(1_001),
        400,
        "reason is 1001 characters long: the most is 1000",
    )
    .await?;
    api.refused(
        "POST",
        &path("abort"),
        &reason(1 << 20),
        413,
        "the request body is 1048590 bytes: the most is 262144",
    )
    .await?;
    let big_suite = format!(
        r#"{{"function": "greeter", "alias": "live", "source": {{"version": "2"}}, "config": "AllAtOnce", "smoke_tests": [{{"name": "big", "event": {{"blob": "{}"}}}}]}}"#,
        "x".repeat(70_000)
    );
    api.refused(
        "POST",
        "/deployments",
        &big_suite,
        400,
        "the most is 65536 (keep a long smoke-test suite in S3: smoke_tests_from)",
    )
    .await?;
    let big_definition = format!(
        "name: big\nsource: {{repository: acme/greeter}}\n# {}\nstages: []\n",
        "x".repeat(110_000)
    );
    api.refused(
        "PUT",
        "/pipelines/big",
        &big_definition,
        400,
        "the definition is 110059 bytes: the most is 102400",
    )
    .await?;
    api.refused(
        "POST",
        &path("abort"),
        r#"{"why": "typo"}"#,
        400,
        "unknown field `why`",
    )
    .await?;
    let aborted = api
        .ok("POST", &path("abort"), r#"{"reason": "wrong build"}"#)
        .await?;
    assert_eq!(aborted["deployment"]["phase"]["phase"], "rolled_back");
    api.refused(
        "POST",
        &path("promote"),
        "",
        409,
        "cannot promote deployment",
    )
    .await?;
    let shown = api.ok("GET", &format!("/deployments/{id}"), "").await?;
    assert!(
        shown["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("wrong build")))),
        "{shown}"
    );
    let retried = api.ok("POST", &path("retry"), "").await?;
    let again = retried["deployment"]["retried_as"]
        .as_str()
        .context("retried as")?
        .to_owned();
    api.refused(
        "POST",
        &path("retry"),
        "",
        409,
        &format!("it was already retried as {again}"),
    )
    .await?;
    api.refused("GET", "/deployments/nope", "", 404, "no deployment nope")
        .await?;
    api.refused(
        "POST",
        "/deployments/nope/abort",
        "",
        404,
        "no deployment nope",
    )
    .await?;

    // Executions: a push waits for approval; approve it through the API.
    let secret = webhook_secret(&api.stack).await?;
    let body = std::fs::read(workspace_root().join("events/github-push.json"))?;
    let answer: Value = api
        .http
        .post(api.stack.var("SLUICE_URL_SOURCE_FUNCTION"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            sign_webhook(&body, secret.as_bytes()),
        )
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    let execution = answer["executions"][0]["execution"]
        .as_str()
        .context("execution")?
        .to_owned();
    let path = |verb: &str| format!("/executions/{execution}/{verb}");
    wait_for("the approval to wait", Duration::from_secs(60), || async {
        let shown = api
            .ok("GET", &format!("/executions/{execution}"), "")
            .await?;
        Ok((shown["execution"]["actions"][0]["state"]["state"] == "running").then_some(()))
    })
    .await?;
    api.refused("POST", &path("stop"), r#"{"mode": "later"}"#, 400, "mode")
        .await?;
    api.refused("POST", &path("retry-stage"), "", 409, "cannot retry-stage")
        .await?;
    let comment = format!(r#"{{"comment": "{}"}}"#, "é".repeat(1_001));
    api.refused(
        "POST",
        &path("approve"),
        &comment,
        400,
        "comment is 1001 characters long",
    )
    .await?;
    let approved = api
        .ok("POST", &path("approve"), r#"{"comment": "ship it"}"#)
        .await?;
    assert_eq!(approved["execution"]["status"], "succeeded");
    api.refused(
        "POST",
        &path("reject"),
        "",
        409,
        "is not waiting for an approval",
    )
    .await?;
    api.refused(
        "POST",
        &path("stop"),
        r#"{"mode": "abandon"}"#,
        409,
        "cannot stop",
    )
    .await?;
    api.refused("GET", "/executions/nope", "", 404, "no execution nope")
        .await?;
    let shown = api
        .ok("GET", &format!("/executions/{execution}"), "")
        .await?;
    assert!(shown.to_string().contains("ship it"), "{shown}");

    api.ok("POST", &format!("/deployments/{again}/abort"), "")
        .await?;
    Ok(())
}

/// The requests a recording hook was sent, oldest first.
fn recorded_requests(dir: &std::path::Path) -> Result<Vec<Value>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let modified = std::fs::metadata(&path)?.modified()?;
            found.push((modified, serde_json::from_slice(&std::fs::read(&path)?)?));
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(found.into_iter().map(|(_, v)| v).collect())
}

/// Waits until the wall clock passes `at` (a deadline the test must outlast).
async fn outlast(at: chrono::DateTime<chrono::Utc>) {
    if let Ok(left) = (at - chrono::Utc::now()).to_std() {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asynchronous_and_codedeploy_style_hooks_report_by_their_single_use_token() -> Result<()> {
    let stack = start_stack_without(
        Some("template.yaml"),
        &[("ManagedFunctions", "greeter*")],
        0.1,
        &["CodePipelineActionFunction", "PostTrafficFunction"],
    )?;
    greeter_live_on_1(&stack, 3).await?;
    // The hook records what it is sent and answers nothing: an event's answer is dropped.
    let recorded = tempfile::tempdir()?;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    let zip = sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]);
    let dir = recorded.path().to_str().context("path")?;
    create_function(
        &lambda,
        &role,
        "greeter-suite",
        zip,
        &[("RECORDER_DIR", dir)],
        5,
    )
    .await?;
    let api = Api {
        url: stack.var("SLUICE_URL_API_FUNCTION").to_owned(),
        stack,
        http: reqwest::Client::new(),
    };
    let deploy = |version: &str, timeout: u64| {
        json!({
            "function": "greeter", "alias": "live", "source": {"version": version},
            "config": "AllAtOnce", "pre_traffic_hook": "greeter-suite",
            "hook_invocation": "async", "hook_timeout_seconds": timeout
        })
        .to_string()
    };
    let recorded_path = recorded.path().to_owned();
    let request_number = |n: usize| {
        let dir = recorded_path.clone();
        async move {
            wait_for("the hook's request", Duration::from_secs(30), || async {
                Ok(recorded_requests(&dir)?.into_iter().nth(n))
            })
            .await
        }
    };
    let show = |id: String| {
        let api = &api;
        async move { api.ok("GET", &format!("/deployments/{id}"), "").await }
    };
    // Waits for deployment `id` to have rolled back; its reason.
    let rollback_reason = |id: String| async move {
        let ended = wait_for("the rollback", Duration::from_secs(30), || async {
            let shown = show(id.clone()).await?;
            Ok((shown["deployment"]["phase"]["phase"] == "rolled_back").then_some(shown))
        })
        .await?;
        anyhow::Ok(
            ended["deployment"]["phase"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };

    // 1: reports after three (scaled) minutes, past its first deadline, kept
    // alive by heartbeats.
    let started = api.ok("POST", "/deployments", &deploy("2", 6)).await?;
    let id = started["deployment"].as_str().context("id")?.to_owned();
    let request = request_number(0).await?;
    assert_eq!(
        (
            request["deploymentId"].as_str(),
            request["gate"].as_str(),
            request["toVersion"].as_str()
        ),
        (Some(id.as_str()), Some("PreTraffic"), Some("2")),
        "{request}"
    );
    // Everything a hook needs, the versions' ARNs included.
    for (field, version) in [("fromVersionArn", "1"), ("toVersionArn", "2")] {
        let arn = request[field].as_str().unwrap_or_default();
        assert!(
            arn.starts_with("arn:aws:lambda:")
                && arn.ends_with(&format!(":function:greeter:{version}")),
            "{field}: {request}"
        );
    }
    let token = request["callbackToken"]
        .as_str()
        .context("a callback token")?
        .to_owned();
    let first_deadline: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(request["deadline"].clone())?;
    let report = |token: &str, status: &str| {
        json!({"token": token, "status": status, "reason": format!("suite says {status}")})
            .to_string()
    };
    // What no gate waits for, or is not the contract's shape, changes nothing.
    let forged = format!("{id}.{}", "0".repeat(64));
    for wrong in [forged.as_str(), "not-a-token", ""] {
        api.refused(
            "POST",
            "/hook-reports",
            &report(wrong, "Succeeded"),
            404,
            "no waiting hook",
        )
        .await?;
    }
    api.refused(
        "POST",
        "/hook-reports",
        &json!({"token": token, "status": "Succeeded", "reaosn": "typo"}).to_string(),
        400,
        "unknown field `reaosn`",
    )
    .await?;
    // A suite of three minutes at the stack's scale (0.1): 18 s, three
    // times its 6 s timeout, kept alive by a heartbeat every 2 s.
    let beat = json!({"token": token}).to_string();
    let reports_at = first_deadline - chrono::Duration::seconds(6) + chrono::Duration::seconds(18);
    while chrono::Utc::now() < reports_at {
        api.ok("POST", "/hook-heartbeats", &beat).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let shown = show(id.clone()).await?;
    assert_eq!(
        shown["deployment"]["phase"]["phase"], "pre_traffic",
        "{shown}"
    );
    api.ok("POST", "/hook-reports", &report(&token, "Succeeded"))
        .await?;
    let promoted = wait_for("the promotion", Duration::from_secs(30), || async {
        let shown = show(id.clone()).await?;
        Ok((shown["deployment"]["phase"]["phase"] == "promoted").then_some(shown))
    })
    .await?;
    let timeline = promoted["timeline"].to_string();
    assert!(
        timeline.contains("PreTraffic at step 1: suite says Succeeded"),
        "{timeline}"
    );
    // Used: a second report finds no gate.
    api.refused(
        "POST",
        "/hook-reports",
        &report(&token, "Failed"),
        404,
        "no waiting hook",
    )
    .await?;
    assert_eq!(
        recorded_requests(recorded.path())?.len(),
        1,
        "the hook ran once"
    );

    // 2: given the whole hour at once, a heartbeat cannot extend it and says
    // so; a failure's long account is cut, not refused, and fails the gate.
    let started = api.ok("POST", "/deployments", &deploy("3", 3600)).await?;
    let id = started["deployment"].as_str().context("id")?.to_owned();
    let request = request_number(1).await?;
    let token = request["callbackToken"]
        .as_str()
        .context("a callback token")?
        .to_owned();
    api.refused(
        "POST",
        "/hook-heartbeats",
        &json!({"token": token}).to_string(),
        409,
        "has had the 3600 s a hook may take in all",
    )
    .await?;
    let long = json!({"token": token, "status": "Failed", "reason": "x".repeat(1500)});
    api.ok("POST", "/hook-reports", &long.to_string()).await?;
    let reason = rollback_reason(id.clone()).await?;
    assert!(
        reason.starts_with("PreTraffic gate failed before 100%: xxx") && reason.ends_with("x…"),
        "{reason}"
    );

    // 3: silent, its gate fails at its own deadline; a late report changes nothing.
    let started = api.ok("POST", "/deployments", &deploy("3", 2)).await?;
    let id = started["deployment"].as_str().context("id")?.to_owned();
    let request = request_number(2).await?;
    let token = request["callbackToken"]
        .as_str()
        .context("a callback token")?
        .to_owned();
    let reason = rollback_reason(id.clone()).await?;
    assert!(
        reason.contains("greeter-suite neither reported nor heartbeat by its deadline"),
        "{reason}"
    );
    outlast(serde_json::from_value(request["deadline"].clone())?).await;
    api.refused(
        "POST",
        "/hook-reports",
        &report(&token, "Succeeded"),
        404,
        "no waiting hook",
    )
    .await?;
    assert_eq!(
        show(id).await?["deployment"]["phase"]["phase"],
        "rolled_back"
    );

    // 4: CodeDeploy's hook event and report, as CodeDeploy's API takes it, at
    // the public hook-reports URL: the token authorises, once.
    let reports_url = api.stack.var("SLUICE_URL_HOOK_REPORTS_FUNCTION").to_owned();
    let put_status = |deployment: &str, token: &str, status: &str| {
        let body = json!({
            "deploymentId": deployment, "lifecycleEventHookExecutionId": token, "status": status
        });
        let request = api
            .http
            .post(&reports_url)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", sluice::hook_reports::TARGET)
            .body(body.to_string());
        async move {
            let answer = request.send().await?;
            let status = answer.status().as_u16();
            let value: Value = answer.json().await?;
            anyhow::Ok((status, value))
        }
    };
    let codedeploy_style = |version: &str, hook: &str| {
        json!({
            "function": "greeter", "alias": "live", "source": {"version": version},
            "config": "AllAtOnce", "pre_traffic_hook": hook, "hook_invocation": "codedeploy"
        })
        .to_string()
    };
    let started = api
        .ok(
            "POST",
            "/deployments",
            &codedeploy_style("3", "greeter-suite"),
        )
        .await?;
    let id = started["deployment"].as_str().context("id")?.to_owned();
    let event = request_number(3).await?;
    assert_eq!(event["DeploymentId"].as_str(), Some(id.as_str()), "{event}");
    let token = event["LifecycleEventHookExecutionId"]
        .as_str()
        .context("CodeDeploy's hook event")?
        .to_owned();
    for (deployment, token, status, kind) in [
        (
            "d-OTHER",
            token.as_str(),
            "Succeeded",
            "InvalidLifecycleEventHookExecutionIdException",
        ),
        (
            id.as_str(),
            forged.as_str(),
            "Succeeded",
            "InvalidLifecycleEventHookExecutionIdException",
        ),
        (
            id.as_str(),
            token.as_str(),
            "InProgress",
            "InvalidLifecycleEventHookExecutionStatusException",
        ),
    ] {
        let (got, value) = put_status(deployment, token, status).await?;
        assert_eq!(
            (got, value["__type"].as_str()),
            (400, Some(kind)),
            "{value}"
        );
    }
    let (got, value) = put_status(&id, &token, "Succeeded").await?;
    assert_eq!(got, 200, "{value}");
    assert_eq!(
        value["lifecycleEventHookExecutionId"].as_str(),
        Some(token.as_str())
    );
    let (got, value) = put_status(&id, &token, "Failed").await?;
    assert_eq!(
        (got, value["__type"].as_str()),
        (400, Some("InvalidLifecycleEventHookExecutionIdException")),
        "a replay: {value}"
    );
    let wait_ended = |id: String| {
        let show = &show;
        async move {
            wait_for("the deployment's end", Duration::from_secs(30), || async {
                let shown = show(id.clone()).await?;
                let phase = shown["deployment"]["phase"]["phase"]
                    .as_str()
                    .unwrap_or_default();
                Ok(matches!(phase, "promoted" | "rolled_back").then_some(shown))
            })
            .await
        }
    };
    let ended = wait_ended(id).await?;
    assert_eq!(ended["deployment"]["phase"]["phase"], "promoted", "{ended}");

    // 4: an unchanged CodeDeploy hook, reporting with the AWS SDK, gates both ways.
    let hook_zip = sluice_local::code::bootstrap_zip(&binary("codedeploy-hook")?, &[]);
    for (name, status) in [
        ("greeter-cd-pass", "Succeeded"),
        ("greeter-cd-fail", "Failed"),
    ] {
        let env = [
            ("HOOK_STATUS", status),
            ("AWS_ENDPOINT_URL_CODEDEPLOY", reports_url.as_str()),
        ];
        create_function(&lambda, &role, name, hook_zip.clone(), &env, 10).await?;
    }
    let passing = api
        .ok(
            "POST",
            "/deployments",
            &codedeploy_style("1", "greeter-cd-pass"),
        )
        .await?;
    let ended = wait_ended(passing["deployment"].as_str().context("id")?.to_owned()).await?;
    assert_eq!(ended["deployment"]["phase"]["phase"], "promoted", "{ended}");
    let failing = api
        .ok(
            "POST",
            "/deployments",
            &codedeploy_style("2", "greeter-cd-fail"),
        )
        .await?;
    let ended = wait_ended(failing["deployment"].as_str().context("id")?.to_owned()).await?;
    let reason = ended["deployment"]["phase"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.starts_with(
            "PreTraffic gate failed before 100%: reported Failed with PutLifecycleEventHookExecutionStatus"
        ),
        "{ended}"
    );
    Ok(())
}
