//! The codepipeline-action function on the local stack, with the shifter
//! running the deployments it starts. moto has no CodePipeline job APIs, so
//! the function's CodePipeline endpoint is a recorder of exactly those calls.

mod support;

use anyhow::{Context, Result};
use aws_sdk_lambda::primitives::Blob;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sluice::ports::Deployments;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const JOB: &str = include_str!("../events/codepipeline-job.json");
const ARTIFACT_STORE: &str = "codepipeline-artifact-store";

/// Every CodePipeline request: (operation, JSON body).
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, Value)>>>);

impl Recorded {
    fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
}

/// Serves CodePipeline's JSON protocol on a loopback port, answering `{}`.
async fn recording_endpoint() -> Result<(String, Recorded)> {
    let recorded = Recorded::default();
    let sink = recorded.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.0.lock().unwrap().push((target, body));
                ([("content-type", "application/x-amz-json-1.1")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, recorded))
}

struct World {
    stack: TestStack,
    lambda: aws_sdk_lambda::Client,
    function: String,
    recorded: Recorded,
}

impl World {
    async fn new() -> Result<World> {
        let stack = start_stack_without(
            Some("template.yaml"),
            // The greeter and its worker (a release group's member).
            &[("ManagedFunctions", "greeter*")],
            1.0,
            &[
                "SourceFunction",
                "OrchestratorFunction",
                "PostTrafficFunction",
            ],
        )?;
        let config = stack.sdk_config().await;
        let lambda = stack.lambda().await;
        let (endpoint, recorded) = recording_endpoint().await?;
        // The function's CodePipeline calls go to the recorder, the rest to the stack.
        let function = stack
            .var("SLUICE_RESOURCE_CODE_PIPELINE_ACTION_FUNCTION")
            .to_owned();
        let current = lambda
            .get_function_configuration()
            .function_name(&function)
            .send()
            .await?;
        let mut variables = current
            .environment()
            .and_then(|e| e.variables())
            .cloned()
            .unwrap_or_default();
        variables.insert("AWS_ENDPOINT_URL_CODEPIPELINE".into(), endpoint);
        lambda
            .update_function_configuration()
            .function_name(&function)
            .environment(
                aws_sdk_lambda::types::Environment::builder()
                    .set_variables(Some(variables))
                    .build(),
            )
            .send()
            .await?;
        wait_updated(&lambda, &function).await?;

        let role = function_role(&stack).await?;
        create_function(&lambda, &role, "greeter", greeter_zip("r1")?, &[], 5).await?;
        let v1 = lambda
            .publish_version()
            .function_name("greeter")
            .send()
            .await?;
        lambda
            .create_alias()
            .function_name("greeter")
            .name("live")
            .function_version(v1.version().context("v1")?)
            .send()
            .await?;
        // CodePipeline's artifact store, holding the build of release r2.
        let s3 = aws_sdk_s3::Client::new(&config);
        s3.create_bucket().bucket(ARTIFACT_STORE).send().await?;
        s3.put_object()
            .bucket(ARTIFACT_STORE)
            .key("greeter-pipeline/BuildArtif/r2.zip")
            .body(greeter_zip("r2")?.into())
            .send()
            .await?;
        Ok(World {
            stack,
            lambda,
            function,
            recorded,
        })
    }

    /// A job as CodePipeline sends it, with these UserParameters and
    /// continuation token; `inputs`: input artifacts (name, key in the
    /// artifact store) after the build of r2, or in its place if named
    /// `BuildArtifact`.
    fn job(
        &self,
        id: &str,
        user_parameters: &Value,
        token: Option<&str>,
        inputs: &[(&str, &str)],
    ) -> Value {
        let mut job: Value = serde_json::from_str(JOB).unwrap();
        job["CodePipeline.job"]["id"] = id.into();
        let data = &mut job["CodePipeline.job"]["data"];
        data["actionConfiguration"]["configuration"]["UserParameters"] =
            user_parameters.to_string().into();
        data["inputArtifacts"][0]["location"]["s3Location"] = json!({
            "bucketName": ARTIFACT_STORE,
            "objectKey": "greeter-pipeline/BuildArtif/r2.zip",
        });
        let build = data["inputArtifacts"][0].clone();
        for (name, key) in inputs {
            let mut input = build.clone();
            input["name"] = (*name).into();
            input["location"]["s3Location"]["objectKey"] = (*key).into();
            let artifacts = data["inputArtifacts"].as_array_mut().unwrap();
            match artifacts.iter_mut().find(|a| a["name"] == *name) {
                Some(same) => *same = input,
                None => artifacts.push(input),
            }
        }
        if let Some(token) = token {
            data["continuationToken"] = token.into();
        }
        job
    }

    async fn invoke(&self, job: &Value) -> Result<()> {
        let out = self
            .lambda
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(serde_json::to_vec(job)?))
            .send()
            .await?;
        anyhow::ensure!(
            out.function_error().is_none(),
            "{}",
            String::from_utf8_lossy(out.payload().map(|p| p.as_ref()).unwrap_or_default())
        );
        Ok(())
    }

    fn requests_for(&self, job_id: &str) -> Vec<(String, Value)> {
        self.recorded
            .all()
            .into_iter()
            .filter(|(_, body)| body["jobId"] == job_id)
            .collect()
    }

    /// Plays CodePipeline: invokes again with the token until a final answer.
    async fn run_job(&self, id: &str, user_parameters: Value) -> Result<(String, Value)> {
        self.run_job_with(id, user_parameters, &[]).await
    }

    /// `run_job` with more input artifacts (see `job`).
    async fn run_job_with(
        &self,
        id: &str,
        user_parameters: Value,
        inputs: &[(&str, &str)],
    ) -> Result<(String, Value)> {
        self.invoke(&self.job(id, &user_parameters, None, inputs))
            .await?;
        self.continue_job(id, &user_parameters, inputs).await
    }

    /// Plays CodePipeline for a job answered once already: invokes again
    /// with the token until a final answer.
    async fn continue_job(
        &self,
        id: &str,
        user_parameters: &Value,
        inputs: &[(&str, &str)],
    ) -> Result<(String, Value)> {
        wait_for(
            "the job's final answer",
            Duration::from_secs(60),
            || async {
                let (operation, body) = self
                    .requests_for(id)
                    .last()
                    .cloned()
                    .context("no request")?;
                match body["continuationToken"].as_str() {
                    Some(token) => {
                        self.invoke(&self.job(id, user_parameters, Some(token), inputs))
                            .await?;
                        Ok(None)
                    }
                    None => Ok(Some((operation, body))),
                }
            },
        )
        .await
    }

    /// Whether deployment `id` was written.
    async fn created(&self, id: &str) -> Result<bool> {
        match template_store(&self.stack).await.load(id).await {
            Ok(_) => Ok(true),
            Err(sluice::store::StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// What `greeter:live` says it is.
    async fn live_release(&self) -> Result<String> {
        self.live_release_of("greeter").await
    }

    /// The release `function:live` says it is, and whether the alias is whole.
    async fn live_release_of(&self, function: &str) -> Result<String> {
        let alias = self
            .lambda
            .get_alias()
            .function_name(function)
            .name("live")
            .send()
            .await?;
        anyhow::ensure!(
            alias
                .routing_config()
                .is_none_or(|r| r.additional_version_weights().is_none_or(|w| w.is_empty())),
            "{function}:live is split: {alias:?}"
        );
        let out = self
            .lambda
            .invoke()
            .function_name(function)
            .qualifier("live")
            .send()
            .await?;
        let answer: Value = serde_json::from_slice(out.payload().context("payload")?.as_ref())?;
        Ok(answer["release"].as_str().unwrap_or_default().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_codepipeline_job_runs_a_gated_deployment_and_reports_its_result() -> Result<()> {
    let w = World::new().await?;
    let hook = w
        .stack
        .var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION")
        .to_owned();
    let params = json!({
        "function": "greeter", "alias": "live", "config": "canary:50:1s",
        "pre_traffic_hook": hook,
        "smoke_tests": [{"name": "greets", "event": {"name": "Ada"}, "expect": {"fields": {"/message": "Hello, Ada!"}}}]
    });
    let (operation, body) = w.run_job("job-1", params).await?;
    let requests = w.requests_for("job-1");
    assert_eq!(
        requests[0].0, "CodePipeline_20150709.PutJobSuccessResult",
        "the first answer keeps the job open"
    );
    assert_eq!(requests[0].1["continuationToken"], "codepipeline-job-1");
    assert_eq!(
        operation, "CodePipeline_20150709.PutJobSuccessResult",
        "{body}"
    );
    assert_eq!(
        body["outputVariables"]["DeploymentId"],
        "codepipeline-job-1"
    );
    assert_eq!(body["outputVariables"]["Version"], "2");
    assert_eq!(body["currentRevision"]["revision"], "2");
    assert_eq!(w.live_release().await?, "r2");

    // A job whose checks meet a passing failure (every GetAlias
    // throttled) is kept open with why, started at CodePipeline's next call.
    let lambda_endpoint = w.stack.var("AWS_ENDPOINT_URL_LAMBDA").to_owned();
    let set_throttle = |requests: u32| {
        let url =
            format!("{lambda_endpoint}/_sluice/throttle?requests={requests}&operation=GetAlias");
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(())
        }
    };
    set_throttle(1000).await?;
    let params = json!({"function": "greeter", "alias": "live", "config": "AllAtOnce"});
    w.invoke(&w.job("job-13", &params, None, &[])).await?;
    let answers = w.requests_for("job-13");
    let (operation, body) = answers.last().context("an answer")?;
    assert_eq!(operation, "CodePipeline_20150709.PutJobSuccessResult");
    assert_eq!(body["continuationToken"], "codepipeline-job-13");
    let summary = body["executionDetails"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains("not started yet") && summary.contains("TooManyRequests"),
        "{summary}"
    );
    assert!(!w.created("codepipeline-job-13").await?, "not started");
    set_throttle(0).await?;
    let (operation, body) = w.continue_job("job-13", &params, &[]).await?;
    assert_eq!(
        operation, "CodePipeline_20150709.PutJobSuccessResult",
        "{body}"
    );
    assert_eq!(
        body["outputVariables"]["DeploymentId"],
        "codepipeline-job-13"
    );

    // Never logged: the job's artifact credentials.
    let log = std::fs::read_to_string(w.stack.dir.path().join("state/sluice-local.log"))?;
    assert!(log.contains("job answered"), "the function's log is there");
    assert!(!log.contains("wJalrXUtnFEMI"), "a secret reached the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_gates_and_bad_parameters_fail_the_job_with_the_reason() -> Result<()> {
    let w = World::new().await?;
    let hook = w
        .stack
        .var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION")
        .to_owned();
    let params = json!({
        "function": "greeter", "alias": "live", "config": "canary:50:1s",
        "pre_traffic_hook": hook,
        "smoke_tests": [{"name": "says bonjour", "event": {"name": "Ada"}, "expect": {"fields": {"/message": "Bonjour, Ada!"}}}]
    });
    let (operation, body) = w.run_job("job-2", params).await?;
    assert_eq!(
        operation, "CodePipeline_20150709.PutJobFailureResult",
        "{body}"
    );
    assert_eq!(body["failureDetails"]["type"], "JobFailed");
    let message = failure_message(&body);
    assert!(
        message.contains("PreTraffic gate failed") && message.contains("says bonjour"),
        "{message}"
    );
    assert_eq!(
        w.live_release().await?,
        "r1",
        "rolled back before any traffic"
    );

    // Parameters that do not parse fail at once, before anything is deployed.
    let (operation, body) = w
        .run_job(
            "job-3",
            json!({"function": "greeter", "alias": "live", "config": "fast"}),
        )
        .await?;
    assert_eq!(operation, "CodePipeline_20150709.PutJobFailureResult");
    assert_eq!(w.requests_for("job-3").len(), 1);
    assert!(failure_message(&body).starts_with("UserParameters:"));
    // So do names Lambda would refuse, and a misspelled gate, each named.
    for (job, params, named) in [
        (
            "job-4",
            json!({"function": "greeter/../x", "alias": "live", "config": "AllAtOnce"}),
            "function: \"greeter/../x\"",
        ),
        (
            "job-5",
            json!({"function": "greeter", "alias": "live", "config": "AllAtOnce", "pre_traffic_hok": "h"}),
            "pre_traffic_hok",
        ),
        // A release group's members: strict, each source one of two, an
        // input artifact the action has, no alias twice.
        (
            "job-6",
            json!({"function": "greeter", "alias": "live", "config": "AllAtOnce", "group": [{"function": "worker", "alias": "live", "verison": "2"}]}),
            "unknown field `verison`",
        ),
        (
            "job-7",
            json!({"function": "greeter", "alias": "live", "config": "AllAtOnce", "group": [{"function": "worker", "alias": "live", "version": "2", "input_artifact": "x"}]}),
            "group[0]: give exactly one of version or input_artifact",
        ),
        (
            "job-8",
            json!({"function": "greeter", "alias": "live", "config": "AllAtOnce", "group": [{"function": "worker", "alias": "live", "input_artifact": "WorkerZip"}]}),
            "group[0].input_artifact: \"WorkerZip\" is not an input artifact",
        ),
        (
            "job-9",
            json!({"function": "greeter", "alias": "live", "config": "AllAtOnce", "group": [{"function": "greeter", "alias": "live", "version": "2"}]}),
            "group[0]: greeter:live is in the group twice",
        ),
    ] {
        let (operation, body) = w.run_job(job, params).await?;
        assert_eq!(operation, "CodePipeline_20150709.PutJobFailureResult");
        let message = failure_message(&body);
        assert!(
            message.starts_with("UserParameters:") && message.contains(named),
            "{message}"
        );
    }
    assert_eq!(w.live_release().await?, "r1", "nothing was deployed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_codepipeline_job_releases_a_group_from_two_input_artifacts() -> Result<()> {
    let w = World::new().await?;
    let role = function_role(&w.stack).await?;
    create_function(
        &w.lambda,
        &role,
        "greeter-worker",
        greeter_zip("w1")?,
        &[],
        5,
    )
    .await?;
    let v1 = w
        .lambda
        .publish_version()
        .function_name("greeter-worker")
        .send()
        .await?;
    w.lambda
        .create_alias()
        .function_name("greeter-worker")
        .name("live")
        .function_version(v1.version().context("v1")?)
        .send()
        .await?;
    let s3 = aws_sdk_s3::Client::new(&w.stack.sdk_config().await);
    for (key, release) in [
        ("greeter-pipeline/WorkerArtif/w2.zip", "w2"),
        ("greeter-pipeline/BuildArtif/r3.zip", "r3"),
        ("greeter-pipeline/WorkerArtif/w3.zip", "w3"),
    ] {
        s3.put_object()
            .bucket(ARTIFACT_STORE)
            .key(key)
            .body(greeter_zip(release)?.into())
            .send()
            .await?;
    }
    let hook = w
        .stack
        .var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION")
        .to_owned();
    // The greeter from the build artifact, its worker from the action's
    // second input artifact; a smoke test on each member's new version.
    let params = |worker_release: &str| {
        json!({
            "function": "greeter", "alias": "live", "config": "canary:50:1s",
            "pre_traffic_hook": hook,
            "group": [{"function": "greeter-worker", "alias": "live", "input_artifact": "WorkerArtifact"}],
            "smoke_tests": [
                {"name": "greeter greets", "event": {"name": "Ada"}, "expect": {"fields": {"/message": "Hello, Ada!"}}},
                {"name": "worker is new", "function": "greeter-worker", "event": {"name": "Ada"}, "expect": {"fields": {"/release": worker_release}}}
            ]
        })
    };
    // Checked against AWS when the job comes, as the API checks a request:
    // every member's problem named, no deployment written.
    let (operation, body) = w
        .run_job(
            "job-12",
            json!({"function": "greeter", "alias": "staging", "config": "AllAtOnce",
                   "group": [{"function": "greeter-worker", "alias": "live", "version": "9"}]}),
        )
        .await?;
    assert_eq!(operation, "CodePipeline_20150709.PutJobFailureResult");
    let message = failure_message(&body);
    assert!(
        message.contains("alias greeter:staging does not exist")
            && message.contains("version 9 of greeter-worker does not exist"),
        "{message}"
    );
    assert!(
        !w.created("codepipeline-job-12").await?,
        "no deployment written"
    );

    let (operation, body) = w
        .run_job_with(
            "job-10",
            params("w2"),
            &[("WorkerArtifact", "greeter-pipeline/WorkerArtif/w2.zip")],
        )
        .await?;
    assert_eq!(
        operation, "CodePipeline_20150709.PutJobSuccessResult",
        "{body}"
    );
    assert_eq!(
        (
            w.live_release().await?,
            w.live_release_of("greeter-worker").await?
        ),
        ("r2".to_owned(), "w2".to_owned()),
        "both members promoted, each alias whole"
    );

    // The worker's smoke test fails at the first gate: the whole group
    // rolls back, and the job fails with the member and the check named.
    let (operation, body) = w
        .run_job_with(
            "job-11",
            params("w2"),
            &[
                ("BuildArtifact", "greeter-pipeline/BuildArtif/r3.zip"),
                ("WorkerArtifact", "greeter-pipeline/WorkerArtif/w3.zip"),
            ],
        )
        .await?;
    assert_eq!(
        operation, "CodePipeline_20150709.PutJobFailureResult",
        "{body}"
    );
    let message = failure_message(&body);
    assert!(
        message.contains("PreTraffic gate failed") && message.contains("worker is new"),
        "{message}"
    );
    assert_eq!(
        (
            w.live_release().await?,
            w.live_release_of("greeter-worker").await?
        ),
        ("r2".to_owned(), "w2".to_owned()),
        "both members on their old versions, whole"
    );
    Ok(())
}

/// A failed job's message.
fn failure_message(body: &Value) -> &str {
    body["failureDetails"]["message"]
        .as_str()
        .unwrap_or_default()
}
