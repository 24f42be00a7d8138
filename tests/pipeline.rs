//! A pipeline end to end on the local stack, on the real binaries wired by
//! template.yaml: a signed push to the source function, the artifact landing in
//! the bucket, a beta deployment with a test beside it, an approval, a canary
//! to live. A failing test stops the next push before production.

mod support;

use anyhow::{Context, Result, bail};
use sluice::commits::sign;
use sluice::domain::execution::{ActionRef, Execution, Input, Status, StopMode};
use sluice::domain::pipeline::PipelineDefinition;
use sluice::orchestrator::Orchestrator;
use sluice::ports::Executions as _;
use sluice::store::Store;
use std::time::Duration;
use support::*;

/// The pipeline's parts, as literals so that `concat!` can put pipelines together.
macro_rules! head_and_build {
    () => {
        r#"
name: greeter
source:
  repository: acme/greeter
  branches: { include: [main] }
stages:
  - name: build
    actions:
      - { name: artifact, kind: artifact, config: { key: "builds/{repo}/{sha}/greeter.zip", timeout: 2m } }
"#
    };
}
macro_rules! live_canary {
    () => {
        r#"  - name: live
    actions:
      - name: deploy-live
        kind: deploy
        config:
          function: greeter
          alias: live
          artifact: artifact
          config: "canary:50:1s"
          pre_traffic_hook: PRE_TRAFFIC
          smoke_tests:
            - { name: greets, event: { name: Ada }, expect: { fields: { /message: "Hello, Ada!" } } }
"#
    };
}

const PIPELINE: &str = concat!(
    head_and_build!(),
    r#"  - name: beta
    actions:
      - name: deploy-beta
        kind: deploy
        config: { function: greeter, alias: beta, artifact: artifact, config: AllAtOnce }
      - name: test-beta
        kind: invoke
        config: { function: greeter-acceptance-tests, payload: { suite: smoke } }
  - name: approve
    actions:
      - { name: release-manager, kind: approval, config: { timeout: 10m } }
"#,
    live_canary!()
);

struct World {
    stack: TestStack,
    store: Store,
    orchestrator: Orchestrator,
    lambda: aws_sdk_lambda::Client,
    s3: aws_sdk_s3::Client,
    secret: String,
    tests_dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Result<World> {
        World::with_parameters(&[]).await
    }

    /// A world whose stack has these template parameters too.
    async fn with_parameters(parameters: &[(&str, &str)]) -> Result<World> {
        // Every function of the template, with its schedules played ten times faster.
        // The orchestrator may invoke only what ManagedFunctions names: the
        // test function shares the greeter's prefix.
        let mut all = vec![("ManagedFunctions", "greeter*")];
        all.extend_from_slice(parameters);
        let stack = start_stack(Some("template.yaml"), &all, 0.1)?;
        let config = stack.sdk_config().await;
        let lambda = stack.lambda().await;
        let role = function_role(&stack).await?;
        // The app: version 1 behind `beta` and `live`.
        create_function(&lambda, &role, "greeter", greeter_zip("r1")?, &[], 5).await?;
        let v1 = lambda
            .publish_version()
            .function_name("greeter")
            .send()
            .await?;
        for alias in ["beta", "live"] {
            lambda
                .create_alias()
                .function_name("greeter")
                .name(alias)
                .function_version(v1.version().context("v1")?)
                .send()
                .await?;
        }
        // The acceptance tests: a recorder, which fails events holding "recorder-fail".
        let tests_dir = tempfile::tempdir()?;
        create_function(
            &lambda,
            &role,
            "greeter-acceptance-tests",
            sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]),
            &[("RECORDER_DIR", &tests_dir.path().display().to_string())],
            5,
        )
        .await?;

        let store = template_store(&stack).await;
        let definition = PIPELINE.replace(
            "PRE_TRAFFIC",
            stack.var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION"),
        );
        store
            .put_definition(&PipelineDefinition::parse(&definition)?, chrono::Utc::now())
            .await?;
        let secret = webhook_secret(&stack).await?;
        // What an operator's tool uses to approve (the API and CLI call the same).
        let engine = sluice::engine::Engine::new(
            store.clone(),
            sluice::aws::AwsCloud {
                lambda: lambda.clone(),
                cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
                sqs: aws_sdk_sqs::Client::new(&config),
                timer_queue_url: stack.var("SLUICE_RESOURCE_TIMER_QUEUE").to_owned(),
                budget: template_budget(&stack).await,
                reserved: Default::default(),
            },
            sluice::clock::SystemClock,
            Duration::from_secs(30),
        );
        // Invoke actions go to sluice-local, as the engine's calls do.
        let actions = sluice::aws::AwsActions::new(
            engine.cloud(),
            &config,
            stack.var("SLUICE_RESOURCE_PIPELINE_TIMER_QUEUE").to_owned(),
        );
        let orchestrator = Orchestrator::new(
            engine,
            actions,
            stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET").to_owned(),
        );
        Ok(World {
            s3: aws_sdk_s3::Client::new(&config),
            stack,
            store,
            orchestrator,
            lambda,
            secret,
            tests_dir,
        })
    }

    /// Pushes `sha` to main as GitHub would; returns the greeter pipeline's execution.
    async fn push(&self, sha: &str) -> Result<String> {
        self.push_to(sha, "greeter").await
    }

    /// Pushes `sha` to main; returns the execution of `pipeline` it started.
    async fn push_to(&self, sha: &str, pipeline: &str) -> Result<String> {
        let mut body: serde_json::Value =
            serde_json::from_slice(include_bytes!("../events/github-push.json"))?;
        body["after"] = sha.into();
        let body = serde_json::to_vec(&body)?;
        let answer: serde_json::Value = reqwest::Client::new()
            .post(self.stack.var("SLUICE_URL_SOURCE_FUNCTION"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-hub-signature-256", sign(&body, self.secret.as_bytes()))
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        answer["executions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["pipeline"] == pipeline)
            .and_then(|e| e["execution"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no execution of {pipeline} in {answer}"))
    }

    /// What CI would upload: the build of `sha`.
    async fn upload_build(&self, sha: &str, release: &str) -> Result<()> {
        self.s3
            .put_object()
            .bucket(self.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET"))
            .key(format!("builds/acme/greeter/{sha}/greeter.zip"))
            .body(greeter_zip(release)?.into())
            .send()
            .await?;
        Ok(())
    }

    async fn wait_until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Execution) -> bool,
    ) -> Result<Execution> {
        let waited = wait_for(what, Duration::from_secs(90), || async {
            let e = self.store.load_execution(id).await?.execution;
            Ok(done(&e).then_some(e))
        })
        .await;
        if waited.is_err() {
            let last = self.store.load_execution(id).await;
            let shown = last.map(|s| format!("{:#?}", s.execution));
            return waited
                .with_context(|| format!("execution {id}: {shown:?}\n{}", self.stack.log_tail()));
        }
        waited
    }

    async fn alias(&self, alias: &str) -> Result<(String, bool)> {
        let a = self
            .lambda
            .get_alias()
            .function_name("greeter")
            .name(alias)
            .send()
            .await?;
        let split = a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .is_some_and(|w| !w.is_empty());
        Ok((a.function_version().unwrap_or_default().to_owned(), split))
    }

    async fn release_of(&self, alias: &str) -> Result<String> {
        let out = self
            .lambda
            .invoke()
            .function_name("greeter")
            .qualifier(alias)
            .send()
            .await?;
        let answer: serde_json::Value =
            serde_json::from_slice(out.payload().context("payload")?.as_ref())?;
        Ok(answer["release"].as_str().unwrap_or_default().to_owned())
    }
}

const SHA_GOOD: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const SHA_BAD: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_goes_through_build_beta_approval_and_a_canary_to_live() -> Result<()> {
    let w = World::new().await?;
    let id = w.push(SHA_GOOD).await?;
    // The build lands after the push: the bucket's event wakes the artifact action.
    let e = w
        .wait_until(&id, "the artifact action to wait", |e| {
            e.status == Status::InProgress
        })
        .await?;
    assert_eq!(e.stage_name(), "build");
    w.upload_build(SHA_GOOD, "r2").await?;

    let e = w
        .wait_until(&id, "the approval stage", |e| e.stage_name() == "approve")
        .await?;
    assert_eq!(w.release_of("beta").await?, "r2", "beta runs the build");
    assert_eq!(w.release_of("live").await?, "r1", "live waits for approval");
    let tests = read_json_files(w.tests_dir.path());
    assert_eq!(tests.len(), 1, "the test action ran once: {tests:?}");
    assert_eq!(tests[0]["commit"]["sha"], SHA_GOOD);
    assert_eq!(tests[0]["payload"]["suite"], "smoke");
    assert_eq!(
        tests[0]["outputs"]["artifact"]["key"],
        format!("builds/acme/greeter/{SHA_GOOD}/greeter.zip")
    );

    let at = ActionRef {
        stage: e.stage,
        action: 0,
        attempt: 1,
    };
    w.orchestrator
        .steer(
            &id,
            Input::Approval {
                at,
                approved: true,
                by: "ada".into(),
                comment: "ship it".into(),
            },
        )
        .await?;
    let e = w
        .wait_until(&id, "the execution to succeed", |e| e.status.is_final())
        .await?;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    assert_eq!(w.release_of("live").await?, "r2");
    assert!(!w.alias("live").await?.1, "routing cleared");
    let deployed = &e.outputs["deploy-live"]["deployment"];
    let timeline = w.store.events(deployed).await?;
    assert!(
        timeline
            .iter()
            .any(|ev| ev.message.contains("PreTraffic at step 1")),
        "the canary was gated: {timeline:?}"
    );
    let lines: Vec<String> = w
        .store
        .execution_events(&id)
        .await?
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("approved by ada: ship it")),
        "{lines:?}"
    );
    Ok(())
}

/// The orchestrator as the sweep runs it `ahead` of now.
fn orchestrator_at(
    w: &World,
    ahead: chrono::Duration,
) -> Orchestrator<Store, sluice::aws::AwsCloud, Later> {
    let o = &w.orchestrator;
    Orchestrator::new(
        sluice::engine::Engine::new(
            o.engine().store().clone(),
            o.engine().cloud().clone(),
            Later(ahead),
            o.engine().hook_timeout(),
        ),
        o.actions().clone(),
        o.artifact_bucket().to_owned(),
    )
}

#[derive(Clone, Copy)]
struct Later(chrono::Duration);

impl sluice::clock::Clock for Later {
    fn now(&self) -> sluice::domain::deployment::Time {
        chrono::Utc::now() + self.0
    }
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The stream delivers a new execution at least once, and the sweep lists
/// what its index says is due: a test suite under way (minutes, on AWS) is
/// started again only once the worker running it must have died.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invoke_action_under_way_is_started_again_only_after_its_worker_must_have_died()
-> Result<()> {
    let w = World::new().await?;
    let role = function_role(&w.stack).await?;
    let suite_dir = tempfile::tempdir()?;
    create_function(
        &w.lambda,
        &role,
        "greeter-long-tests",
        sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]),
        &[("RECORDER_DIR", &suite_dir.path().display().to_string())],
        120,
    )
    .await?;
    let definition = r#"
name: suite
source:
  repository: acme/greeter
  branches: { include: [main] }
stages:
  - name: test
    actions:
      - name: long-suite
        kind: invoke
        config: { function: greeter-long-tests, payload: { suite: recorder-hold } }
"#;
    w.store
        .put_definition(&PipelineDefinition::parse(definition)?, chrono::Utc::now())
        .await?;
    let id = w.push_to(SHA_GOOD, "suite").await?;
    let runs = |n: usize| {
        let dir = suite_dir.path().to_owned();
        move || {
            let dir = dir.clone();
            async move { Ok((read_json_files(&dir).len() == n).then_some(())) }
        }
    };
    wait_for("the suite to start", Duration::from_secs(60), runs(1)).await?;

    // The stream's record of the new execution, delivered again.
    let again = w.orchestrator.arrived(&id).await?;
    assert_eq!(again.stage_name(), "test");
    // A sweep that listed it before its action started.
    assert_eq!(w.orchestrator.resume_if_due(&id).await?, None);
    // A sweep two minutes on: a worker that died elsewhere would be repaired
    // by now, but this one may still be running the suite.
    orchestrator_at(&w, chrono::Duration::minutes(2))
        .reconcile()
        .await?;
    assert_eq!(
        read_json_files(suite_dir.path()).len(),
        1,
        "the suite ran again"
    );

    // Past the longest a worker lives, the sweep starts the suite again.
    let past = chrono::Duration::seconds(sluice::store::pipelines::INVOKE_ACTION_GRACE_SECS + 60);
    let later = orchestrator_at(&w, past);
    let sweep = tokio::spawn(async move { later.reconcile().await });
    wait_for(
        "the sweep to start the suite again",
        Duration::from_secs(60),
        runs(2),
    )
    .await?;
    std::fs::write(suite_dir.path().join("release"), b"")?;
    let e = w
        .wait_until(&id, "the execution to succeed", |e| e.status.is_final())
        .await?;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    tokio::time::timeout(Duration::from_secs(60), sweep)
        .await
        .context("the sweep did not end")???;
    assert_eq!(read_json_files(suite_dir.path()).len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_test_action_stops_the_pipeline_before_production() -> Result<()> {
    let w = World::new().await?;
    let definition = PIPELINE
        .replace("suite: smoke", "suite: recorder-fail")
        .replace(
            "PRE_TRAFFIC",
            w.stack.var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION"),
        );
    w.store
        .put_definition(&PipelineDefinition::parse(&definition)?, chrono::Utc::now())
        .await?;
    // The build is there before the push: the artifact action finds it at once.
    w.upload_build(SHA_BAD, "r3").await?;
    let id = w.push(SHA_BAD).await?;
    let e = w
        .wait_until(&id, "the execution to fail", |e| {
            matches!(e.status, Status::Failed { .. })
        })
        .await?;
    let Status::Failed { reason } = &e.status else {
        unreachable!()
    };
    assert!(
        reason.contains("test-beta failed in stage beta") && reason.contains("recorder-fail"),
        "{reason}"
    );
    assert_eq!(w.release_of("live").await?, "r1", "production never saw it");
    assert_eq!(w.alias("live").await?, ("1".to_owned(), false));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_codepipeline_action_runs_an_existing_aws_codepipeline_on_the_commit() -> Result<()> {
    use aws_sdk_codepipeline::types::{
        ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, ArtifactStore,
        ArtifactStoreType, PipelineDeclaration, StageDeclaration,
    };
    let w = World::new().await?;
    let config = w.stack.sdk_config().await;
    let role = aws_sdk_iam::Client::new(&config)
        .create_role()
        .role_name("legacy-pipeline")
        .assume_role_policy_document(
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole"}]}"#,
        )
        .send()
        .await?
        .role
        .context("role")?
        .arn;
    let action = |name: &str, category: ActionCategory, provider: &str| {
        ActionDeclaration::builder()
            .name(name)
            .action_type_id(
                ActionTypeId::builder()
                    .category(category)
                    .owner(ActionOwner::Aws)
                    .provider(provider)
                    .version("1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let codepipeline = aws_sdk_codepipeline::Client::new(&config);
    codepipeline
        .create_pipeline()
        .pipeline(
            PipelineDeclaration::builder()
                .name("legacy-integration")
                .role_arn(role)
                .artifact_store(
                    ArtifactStore::builder()
                        .r#type(ArtifactStoreType::S3)
                        .location(w.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET"))
                        .build()?,
                )
                .stages(
                    StageDeclaration::builder()
                        .name("Source")
                        .actions(action(
                            "Source",
                            ActionCategory::Source,
                            "CodeStarSourceConnection",
                        ))
                        .build()?,
                )
                .stages(
                    StageDeclaration::builder()
                        .name("Integration")
                        .actions(action("Suite", ActionCategory::Test, "CodeBuild"))
                        .build()?,
                )
                // Long enough (five stages, 3 s each at this scale) for a stop
                // to land while it runs, on a busy machine too.
                .stages(
                    StageDeclaration::builder()
                        .name("Load")
                        .actions(action("Soak", ActionCategory::Test, "CodeBuild"))
                        .build()?,
                )
                .stages(
                    StageDeclaration::builder()
                        .name("Security")
                        .actions(action("Scan", ActionCategory::Test, "CodeBuild"))
                        .build()?,
                )
                .stages(
                    StageDeclaration::builder()
                        .name("Report")
                        .actions(action("Publish", ActionCategory::Test, "CodeBuild"))
                        .build()?,
                )
                .build()?,
        )
        .send()
        .await?;
    w.store
        .put_definition(&PipelineDefinition::parse(
            r#"
name: integration
source: { repository: acme/greeter, branches: { include: [main] } }
stages:
  - name: integration
    actions:
      - { name: legacy, kind: codepipeline, config: { pipeline: legacy-integration, source_action: Source } }
"#,
        )?, chrono::Utc::now())
        .await?;
    let id = w.push_to(SHA_GOOD, "integration").await?;
    let e = w
        .wait_until(&id, "the execution to end", |e| e.status.is_final())
        .await?;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    let started = &e.outputs["legacy"]["pipeline_execution_id"];
    let run = legacy_run(&codepipeline, started).await?;
    assert_eq!(run.pipeline_name(), Some("legacy-integration"));

    // Stopping an execution stops the CodePipeline execution its running
    // action started: abandoned at once, or once its actions in progress finish.
    for (sha, mode) in [
        (
            "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4",
            StopMode::Abandon,
        ),
        ("e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5", StopMode::Finish),
    ] {
        let id = w.push_to(sha, "integration").await?;
        let e = w
            .wait_until(&id, "the CodePipeline execution to be recorded", |e| {
                e.actions.first().is_some_and(|a| a.run.is_some())
            })
            .await?;
        let started = e.actions[0].run.clone().context("run")?;
        let reason = format!("stopped with {mode:?}");
        w.orchestrator
            .steer(
                &id,
                Input::Stop {
                    mode,
                    reason: reason.clone(),
                },
            )
            .await?;
        // Saved by the steer; the orchestrator function, woken, stops it.
        let run = wait_for(
            "the CodePipeline execution to be told to stop",
            Duration::from_secs(30),
            || {
                let (codepipeline, started) = (&codepipeline, &started);
                async move {
                    let run = legacy_run(codepipeline, started).await?;
                    let now = run.status().map(|s| s.as_str());
                    Ok(matches!(now, Some("Stopping" | "Stopped")).then_some(run))
                }
            },
        )
        .await?;
        assert!(
            run.status_summary()
                .is_some_and(|s| s.contains(&format!("execution {id} stopped it"))),
            "{mode:?}"
        );
        let e = w
            .wait_until(&id, "the stopped execution to end", |e| e.status.is_final())
            .await?;
        assert!(matches!(e.status, Status::Stopped { .. }), "{e:?}");
        wait_for(
            "the CodePipeline execution to stop",
            Duration::from_secs(30),
            || {
                let (codepipeline, started) = (&codepipeline, &started);
                async move {
                    let run = legacy_run(codepipeline, started).await?;
                    Ok((run.status().map(|s| s.as_str()) == Some("Stopped")).then_some(()))
                }
            },
        )
        .await?;
    }

    // Without the permission, the action fails at the call with AWS's reason,
    // as it would on AWS, instead of retrying a refusal for ever.
    let orchestrator_role = "sluice-OrchestratorFunctionRole";
    let pipeline_arn = "arn:aws:codepipeline:us-east-1:123456789012:legacy-integration";
    let iam = aws_sdk_iam::Client::new(&config);
    // One inline policy, replaced at each step: it denies one action at a time.
    let deny = |action: &str| {
        let document = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
            "Action": action, "Resource": pipeline_arn}]});
        iam.put_role_policy()
            .role_name(orchestrator_role)
            .policy_name("NoLegacyPipelines")
            .policy_document(document.to_string())
            .send()
    };
    deny("codepipeline:StartPipelineExecution").await?;
    // IAM's change reaches the role's next calls within its propagation delay.
    let as_orchestrator = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(w.stack.var("AWS_ENDPOINT_URL_LAMBDA"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            sluice_local::iam::ACCESS_KEY_ID,
            sluice_local::iam::SECRET_ACCESS_KEY,
            Some(
                sluice_local::iam::Caller {
                    function: "probe".into(),
                    role_arn: format!("arn:aws:iam::123456789012:role/{orchestrator_role}"),
                }
                .session_token(),
            ),
            None,
            "probe",
        ))
        .load()
        .await;
    let probe = aws_sdk_codepipeline::Client::new(&as_orchestrator);
    wait_for("the deny to apply", Duration::from_secs(30), || async {
        let denied = probe
            .start_pipeline_execution()
            .name("legacy-integration")
            .send()
            .await
            .err()
            .and_then(|e| e.into_service_error().meta().code().map(str::to_owned));
        Ok((denied.as_deref() == Some("AccessDeniedException")).then_some(()))
    })
    .await?;
    let id = w.push_to(SHA_BAD, "integration").await?;
    let e = w
        .wait_until(&id, "the execution to fail", |e| {
            matches!(e.status, Status::Failed { .. })
        })
        .await?;
    let Status::Failed { reason } = &e.status else {
        bail!("expected a failed execution: {e:?}");
    };
    assert!(
        reason.contains(&format!(
            "CodePipeline legacy-integration could not be started: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/{orchestrator_role}/sluice-OrchestratorFunction is not authorized to perform: codepipeline:StartPipelineExecution on resource: {pipeline_arn} with an explicit deny"
        )),
        "{reason}"
    );

    // Started, but its execution cannot be read: the action fails with why.
    deny("codepipeline:GetPipelineExecution").await?;
    wait_for("the new deny to apply", Duration::from_secs(30), || async {
        let denied = probe
            .get_pipeline_execution()
            .pipeline_name("legacy-integration")
            .pipeline_execution_id("any")
            .send()
            .await
            .err()
            .and_then(|e| e.into_service_error().meta().code().map(str::to_owned));
        Ok((denied.as_deref() == Some("AccessDeniedException")).then_some(()))
    })
    .await?;
    let id = w
        .push_to("c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", "integration")
        .await?;
    let e = w
        .wait_until(&id, "the execution to fail", |e| {
            matches!(e.status, Status::Failed { .. })
        })
        .await?;
    let Status::Failed { reason } = &e.status else {
        bail!("expected a failed execution: {e:?}");
    };
    assert!(
        reason.contains("could not be read: AccessDeniedException")
            && reason.contains("codepipeline:GetPipelineExecution on resource: arn:aws:codepipeline:us-east-1:123456789012:legacy-integration"),
        "{reason}"
    );
    Ok(())
}

/// An execution of the CodePipeline `legacy-integration`, as CodePipeline reports it.
async fn legacy_run(
    codepipeline: &aws_sdk_codepipeline::Client,
    execution_id: &str,
) -> Result<aws_sdk_codepipeline::types::PipelineExecution> {
    codepipeline
        .get_pipeline_execution()
        .pipeline_name("legacy-integration")
        .pipeline_execution_id(execution_id)
        .send()
        .await?
        .pipeline_execution
        .context("no execution in the answer")
}

/// Two pushes in a row to a pipeline whose executions wait at an approval.
async fn two_pushes(w: &World, mode: &str) -> Result<(String, String)> {
    w.store
        .put_definition(
            &PipelineDefinition::parse(&format!(
                r#"
name: gated
source: {{ repository: acme/greeter, branches: {{ include: [main] }} }}
execution_mode: {mode}
stages:
  - name: approve
    actions:
      - {{ name: ok, kind: approval }}
  - name: after
    actions:
      - {{ name: settle, kind: wait, config: {{ duration: 1s }} }}
"#
            ))?,
            chrono::Utc::now(),
        )
        .await?;
    let first = w.push_to(SHA_GOOD, "gated").await?;
    w.wait_until(&first, "the first to wait for approval", |e| {
        e.status == Status::InProgress
    })
    .await?;
    let second = w.push_to(SHA_BAD, "gated").await?;
    Ok((first, second))
}

fn approval(at_stage: usize) -> Input {
    Input::Approval {
        at: ActionRef {
            stage: at_stage,
            action: 0,
            attempt: 1,
        },
        approved: true,
        by: "ada".into(),
        comment: "go".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_executions_run_one_at_a_time_and_superseded_ones_stop_at_a_boundary() -> Result<()>
{
    queued_executions_run_one_at_a_time().await?;
    superseded_executions_stop_at_a_stage_boundary().await
}

async fn queued_executions_run_one_at_a_time() -> Result<()> {
    let w = World::new().await?;
    // The second waits until the first is done, then runs.
    let (first, second) = two_pushes(&w, "queued").await?;
    let e = w
        .wait_until(&second, "the second to be queued", |e| {
            e.status == Status::Queued
        })
        .await?;
    assert!(e.actions.is_empty(), "nothing of it runs yet");
    w.orchestrator.steer(&first, approval(0)).await?;
    w.wait_until(&first, "the first to succeed", |e| {
        e.status == Status::Succeeded
    })
    .await?;
    w.wait_until(&second, "the second to take its turn", |e| {
        e.status == Status::InProgress && e.stage_name() == "approve"
    })
    .await?;
    w.orchestrator
        .steer(
            &second,
            Input::Stop {
                mode: StopMode::Abandon,
                reason: "not this one".into(),
            },
        )
        .await?;
    assert!(matches!(
        w.store.load_execution(&second).await?.execution.status,
        Status::Stopped { .. }
    ));

    Ok(())
}

async fn superseded_executions_stop_at_a_stage_boundary() -> Result<()> {
    // The first stops when its stage ends; the newer one goes on.
    let w = World::new().await?;
    let (first, second) = two_pushes(&w, "superseded").await?;
    w.wait_until(&first, "the first to learn it is superseded", |e| {
        e.superseded_by.as_deref() == Some(second.as_str())
    })
    .await?;
    w.orchestrator.steer(&first, approval(0)).await?;
    let e = w
        .wait_until(&first, "the first to end", |e| e.status.is_final())
        .await?;
    assert_eq!(e.status, Status::Superseded { by: second.clone() });
    assert_eq!(e.stage_name(), "approve", "it never started the next stage");
    // Approved once it waits for its approval: before it starts, there is
    // nothing to approve.
    w.wait_until(&second, "the second to wait for its approval", |e| {
        e.status == Status::InProgress && e.stage_name() == "approve"
    })
    .await?;
    w.orchestrator.steer(&second, approval(0)).await?;
    w.wait_until(&second, "the second to succeed", |e| {
        e.status == Status::Succeeded
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_stage_is_retried_once_its_cause_is_fixed() -> Result<()> {
    let w = World::new().await?;
    w.store
        .put_definition(
            &PipelineDefinition::parse(
                r#"
name: integration
source: { repository: acme/greeter, branches: { include: [main] } }
stages:
  - name: test
    actions:
      - { name: lint, kind: invoke, config: { function: greeter-acceptance-tests } }
      - { name: suite, kind: invoke, config: { function: greeter-integration-suite } }
"#,
            )?,
            chrono::Utc::now(),
        )
        .await?;
    let id = w.push_to(SHA_GOOD, "integration").await?;
    let e = w
        .wait_until(&id, "the execution to fail", |e| {
            matches!(e.status, Status::Failed { .. })
        })
        .await?;
    assert!(
        matches!(&e.status, Status::Failed { reason } if reason.contains("suite failed") && reason.contains("greeter-integration-suite could not be invoked")),
        "{:?}",
        e.status
    );
    // The missing function is deployed; only the failed action runs again.
    let role = function_role(&w.stack).await?;
    create_function(
        &w.lambda,
        &role,
        "greeter-integration-suite",
        sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]),
        &[("RECORDER_DIR", &w.tests_dir.path().display().to_string())],
        5,
    )
    .await?;
    let e = w
        .orchestrator
        .steer(&id, Input::RetryStage { failed_only: true })
        .await?
        .state;
    assert_eq!(e.actions[0].attempt, 1, "lint is not run again");
    assert_eq!(e.actions[1].attempt, 2);
    let e = w
        .wait_until(&id, "the retried execution to succeed", |e| {
            e.status.is_final()
        })
        .await?;
    assert_eq!(e.status, Status::Succeeded);
    let runs = read_json_files(w.tests_dir.path());
    assert_eq!(runs.len(), 2, "lint once, the suite once: {runs:?}");
    Ok(())
}

/// Built and rolled out to live: the stages a commit status is posted for.
const REPORTED_PIPELINE: &str = concat!(head_and_build!(), live_canary!());

/// An SQS queue of the stack's moto, and its ARN.
async fn queue(stack: &TestStack, name: &str) -> Result<(aws_sdk_sqs::Client, String, String)> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await?
        .queue_url
        .context("queue url")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .context("queue arn")?;
    Ok((sqs, url, arn))
}

/// The messages on a queue by now (waiting a second for the first).
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, into: &mut Vec<String>) -> Result<()> {
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(());
        }
        for m in messages {
            into.push(m.body().unwrap_or_default().to_owned());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
}

/// A push's facts reach the people watching: a commit status per stage and
/// per deploy action on GitHub (a stand-in that checks and records each
/// request), and a notice per deployment start, promotion, rollback and
/// execution end on the SNS topic and EventBridge's default bus. A token
/// that is missing or wrong skips the statuses, says so in the timeline,
/// and holds nothing back; GitHub down is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_reports_commit_statuses_and_notices() -> Result<()> {
    let github = github::FakeGitHub::start().await?;
    let w = World::with_parameters(&[("GitHubApiUrl", &github.url)]).await?;
    let definition = REPORTED_PIPELINE.replace(
        "PRE_TRAFFIC",
        w.stack.var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION"),
    );
    w.store
        .put_definition(&PipelineDefinition::parse(&definition)?, chrono::Utc::now())
        .await?;
    // What a user would wire: a queue on the topic, a rule on the bus.
    let config = w.stack.sdk_config().await;
    let topic = w.stack.var("SLUICE_RESOURCE_NOTIFICATION_TOPIC").to_owned();
    let (sqs, sns_queue, sns_queue_arn) = queue(&w.stack, "notices-by-sns").await?;
    aws_sdk_sns::Client::new(&config)
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&sns_queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;
    let (_, bus_queue, bus_queue_arn) = queue(&w.stack, "notices-by-eventbridge").await?;
    let events = aws_sdk_eventbridge::Client::new(&config);
    events
        .put_rule()
        .name("sluice-notices")
        .event_pattern(r#"{"source": ["sluice"]}"#)
        .send()
        .await?;
    events
        .put_targets()
        .rule("sluice-notices")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&bus_queue_arn)
                .build()?,
        )
        .send()
        .await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let token_secret = w
        .stack
        .var("SLUICE_RESOURCE_GIT_HUB_TOKEN_SECRET")
        .to_owned();
    let set_token = |token: &'static str| {
        let secrets = secrets.clone();
        let token_secret = token_secret.clone();
        async move {
            secrets
                .put_secret_value()
                .secret_id(token_secret)
                .secret_string(token)
                .send()
                .await
        }
    };
    let timeline_says = |id: String, what: &'static str| {
        let store = w.store.clone();
        async move {
            wait_for(what, Duration::from_secs(60), || async {
                let lines = store.execution_events(&id).await?;
                Ok(lines.iter().any(|l| l.message.contains(what)).then_some(()))
            })
            .await
        }
    };
    let succeeded = |e: &Execution| e.status == Status::Succeeded;

    // 1. No token yet (the stack's "unset"): the push runs, the timeline says so.
    const SHA_UNSET: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    w.upload_build(SHA_UNSET, "r2").await?;
    let unset = w.push(SHA_UNSET).await?;
    w.wait_until(&unset, "the first push to succeed", succeeded)
        .await?;
    timeline_says(unset.clone(), "holds no GitHub token").await?;
    assert!(github.requests().is_empty(), "{:?}", github.requests());

    // 2. A wrong token: GitHub's 401, said once in the timeline.
    set_token("ghp-revoked").await?;
    const SHA_WRONG: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
    w.upload_build(SHA_WRONG, "r3").await?;
    let wrong = w.push(SHA_WRONG).await?;
    w.wait_until(&wrong, "the second push to succeed", succeeded)
        .await?;
    timeline_says(
        wrong.clone(),
        "GitHub refused the token (401 Bad credentials)",
    )
    .await?;
    let lines = w.store.execution_events(&wrong).await?;
    assert_eq!(
        lines.iter().filter(|l| l.message.contains("401")).count(),
        1,
        "said once: {lines:?}"
    );

    // 3. The right token, and GitHub down for the build's first status:
    // tried again.
    set_token(github::TOKEN).await?;
    github.script_for.lock().unwrap().push((
        SHA_GOOD.into(),
        "sluice/greeter/build".into(),
        (502, vec![], "Server Error"),
    ));
    w.upload_build(SHA_GOOD, "r4").await?;
    let good = w.push(SHA_GOOD).await?;
    w.wait_until(&good, "the third push to succeed", succeeded)
        .await?;
    // 4. A build whose smoke test fails: rolled back, the execution failed.
    let bad_zip = sluice_local::code::bootstrap_zip(
        &binary("greeter")?,
        &[
            ("release", b"r5"),
            ("greeter.env", b"GREETER_MODE=failing\n"),
        ],
    );
    w.s3.put_object()
        .bucket(w.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET"))
        .key(format!("builds/acme/greeter/{SHA_BAD}/greeter.zip"))
        .body(bad_zip.into())
        .send()
        .await?;
    let bad = w.push(SHA_BAD).await?;
    w.wait_until(&bad, "the fourth push to fail", |e| {
        matches!(e.status, Status::Failed { .. })
    })
    .await?;

    // The last status of each context of a commit, once every one is final.
    let last_of = |sha: &str| {
        let mut last = std::collections::BTreeMap::new();
        for r in github.requests() {
            if r.answered == 201 && r.path == format!("/repos/acme/greeter/statuses/{sha}") {
                last.insert(
                    r.body["context"].as_str().unwrap_or_default().to_owned(),
                    r.body.clone(),
                );
            }
        }
        last
    };
    let settled = |sha: &'static str| {
        let last_of = &last_of;
        async move {
            wait_for(
                "every status of the commit to be final",
                Duration::from_secs(60),
                || async {
                    let last = last_of(sha);
                    Ok(
                        (last.len() == 3 && last.values().all(|s| s["state"] != "pending"))
                            .then_some(last),
                    )
                },
            )
            .await
        }
    };
    let good_statuses = settled(SHA_GOOD)
        .await
        .with_context(|| format!("{:#?}\n{}", github.requests(), w.stack.log_tail()))?;
    for context in [
        "sluice/greeter/build",
        "sluice/greeter/live",
        "sluice/greeter/live/deploy-live",
    ] {
        assert_eq!(
            good_statuses[context]["state"], "success",
            "{context}: {good_statuses:?}"
        );
    }
    assert!(
        good_statuses["sluice/greeter/live/deploy-live"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("promoted version ") && d.ends_with(" of greeter:live")),
        "{good_statuses:?}"
    );
    assert!(
        good_statuses["sluice/greeter/build"]["target_url"]
            .as_str()
            .is_some_and(|u| u.contains("#dashboards:name=")),
        "a status links to the dashboard: {good_statuses:?}"
    );
    // The status GitHub answered 502 (the build's pending) is posted again
    // 10 s later, as it is by then: the build has passed.
    wait_for(
        "the failed status to be posted again",
        Duration::from_secs(60),
        || async {
            let requests = github.requests();
            let failed = requests
                .iter()
                .position(|r| r.answered == 502)
                .context("the request GitHub failed")?;
            // The retry, not a later report's post of the same context.
            let retry_at = requests[failed].at + Duration::from_secs(10);
            let again = requests[failed + 1..].iter().find(|r| {
                r.answered == 201
                    && r.at >= retry_at
                    && r.path == requests[failed].path
                    && r.body["context"] == requests[failed].body["context"]
            });
            Ok(again.map(|r| assert_ne!(r.body["state"], "pending", "{r:?}")))
        },
    )
    .await?;
    let requests = github.requests();
    // The weight on the way, while the canary ran.
    assert!(
        requests.iter().any(|r| r.path.ends_with(SHA_GOOD)
            && r.body["state"] == "pending"
            && r.body["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("step 1/2: 50% on version"))),
        "{requests:?}"
    );
    let bad_statuses = settled(SHA_BAD).await?;
    assert_eq!(bad_statuses["sluice/greeter/build"]["state"], "success");
    for context in ["sluice/greeter/live", "sluice/greeter/live/deploy-live"] {
        assert_eq!(
            bad_statuses[context]["state"], "failure",
            "{context}: {bad_statuses:?}"
        );
    }
    assert!(
        bad_statuses["sluice/greeter/live/deploy-live"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("rolled back: ")),
        "{bad_statuses:?}"
    );

    // The notices: by SNS (raw) and by EventBridge, for both pushes.
    let deployed = |e: &str| format!("{e}~1.0.1");
    let wanted = [
        (deployed(&good), "deployment_started"),
        (deployed(&good), "deployment_promoted"),
        (good.clone(), "execution_ended"),
        (deployed(&bad), "deployment_started"),
        (deployed(&bad), "deployment_rolled_back"),
        (bad.clone(), "execution_ended"),
    ];
    let id_of = |n: &serde_json::Value| {
        n["deployment_id"]
            .as_str()
            .or(n["execution_id"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let have = |got: &[serde_json::Value]| {
        wanted
            .iter()
            .all(|(id, event)| got.iter().any(|n| id_of(n) == *id && n["event"] == *event))
    };
    let (mut by_sns, mut by_bus) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        drain(&sqs, &sns_queue, &mut by_sns).await?;
        drain(&sqs, &bus_queue, &mut by_bus).await?;
        // A message's text, then its JSON.
        let sns_notices: Vec<serde_json::Value> = by_sns
            .iter()
            .filter_map(|m| serde_json::from_str(m.rsplit_once("\n\n")?.1).ok())
            .collect();
        let bus_events: Vec<serde_json::Value> = by_bus
            .iter()
            .filter_map(|m| serde_json::from_str(m).ok())
            .collect();
        let details: Vec<serde_json::Value> =
            bus_events.iter().map(|e| e["detail"].clone()).collect();
        if have(&sns_notices) && have(&details) {
            let rolled_back = |n: &&serde_json::Value| {
                id_of(n) == deployed(&bad) && n["event"] == "deployment_rolled_back"
            };
            let by_mail = by_sns
                .iter()
                .find(|m| m.contains("rolled back") && m.contains(&deployed(&bad)))
                .context("the rollback's message")?;
            assert!(by_mail.contains("Reason: "), "{by_mail}");
            let notice = sns_notices.iter().find(rolled_back).context("rollback")?;
            assert!(
                notice["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("greets")),
                "the reason names the failed smoke test: {notice}"
            );
            let event = bus_events
                .iter()
                .find(|e| rolled_back(&&e["detail"]))
                .context("the rollback's event")?;
            assert_eq!(event["source"], "sluice");
            assert_eq!(event["detail-type"], "Sluice Deployment Rolled Back");
            assert_eq!(event["detail"]["stack"], w.stack.var("SLUICE_STACK_NAME"));
            assert_eq!(event["detail"]["execution_id"], bad.as_str());
            let ended = bus_events
                .iter()
                .find(|e| {
                    e["detail"]["execution_id"] == good.as_str()
                        && e["detail"]["event"] == "execution_ended"
                })
                .context("the good push's end")?;
            assert_eq!(ended["detail"]["status"], "succeeded");
            assert_eq!(ended["detail"]["sha"], SHA_GOOD);
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("notices missing:\nby SNS {by_sns:#?}\nby EventBridge {by_bus:#?}");
        }
    }
    Ok(())
}

/// Each answer GitHub may give a commit status, and what the reporter makes
/// of it: tried again later (5xx, rate limits, no answer) or given up
/// (a wrong token, no access, a refused status).
#[tokio::test]
async fn githubs_answers_are_tried_again_or_given_up_as_they_deserve() -> Result<()> {
    use sluice::notices::{CommitState, StatusLine};
    use sluice::reporter::{GitHubApi, Posted};
    let fake = github::FakeGitHub::start().await?;
    let api = GitHubApi::new(fake.url.clone(), reqwest::Client::new());
    let line = StatusLine {
        state: CommitState::Pending,
        description: "step 1/3: 10% on version 7 of greeter:live".into(),
    };
    let post = |token: &'static str| {
        let api = api.clone();
        let line = line.clone();
        async move {
            api.post_status(
                token,
                ("acme", "greeter"),
                SHA_GOOD,
                "sluice/greeter/live/deploy-live",
                &line,
                Some("https://console.example/dashboard"),
            )
            .await
        }
    };
    assert_eq!(post(github::TOKEN).await, Posted::Done);
    let sent = &fake.requests()[0];
    assert_eq!(
        sent.path,
        format!("/repos/acme/greeter/statuses/{SHA_GOOD}")
    );
    assert_eq!(sent.body["state"], "pending");
    assert_eq!(sent.body["target_url"], "https://console.example/dashboard");

    let later = |p: Posted, wait: Option<u64>| matches!(p, Posted::Later { after, .. } if after.map(|a| a.as_secs()) == wait);
    let refused = |p: Posted, says: &str| matches!(&p, Posted::Refused(why) if why.contains(says));
    fake.script.lock().unwrap().extend([
        (502, vec![], "Server Error"),
        (
            403,
            vec![("x-ratelimit-remaining", "0")],
            "API rate limit exceeded",
        ),
        (429, vec![("retry-after", "30")], "slow down"),
        (429, vec![], "slow down"),
        (403, vec![], "You have exceeded a secondary rate limit"),
        (
            403,
            vec![],
            "Resource not accessible by personal access token",
        ),
        (404, vec![], "Not Found"),
        (422, vec![], "Validation Failed"),
    ]);
    assert!(
        later(post(github::TOKEN).await, None),
        "a 5xx is tried again"
    );
    assert!(
        later(post(github::TOKEN).await, Some(60)),
        "the primary rate limit, with no reset said: a minute"
    );
    assert!(
        later(post(github::TOKEN).await, Some(30)),
        "as retry-after asks"
    );
    assert!(
        later(post(github::TOKEN).await, Some(60)),
        "a 429 says nothing more"
    );
    assert!(
        later(post(github::TOKEN).await, Some(60)),
        "a secondary rate limit, said in the message only"
    );
    assert!(refused(post(github::TOKEN).await, "commit statuses: write"));
    assert!(refused(post(github::TOKEN).await, "knows no acme/greeter"));
    assert!(refused(
        post(github::TOKEN).await,
        "refused the status (422"
    ));
    assert!(
        matches!(post("ghp-wrong").await, Posted::BadToken(why) if why.contains("401 Bad credentials"))
    );
    let answered: Vec<u16> = fake.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, [201, 502, 403, 429, 429, 403, 403, 404, 422, 401]);

    // Nobody listening: tried again later.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let nowhere = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let gone = GitHubApi::new(nowhere, reqwest::Client::new());
    let p = gone
        .post_status(
            github::TOKEN,
            ("acme", "greeter"),
            SHA_GOOD,
            "c",
            &line,
            None,
        )
        .await;
    assert!(
        matches!(&p, Posted::Later { why, .. } if why.contains("did not answer")),
        "{p:?}"
    );
    Ok(())
}
