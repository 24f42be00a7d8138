//! The deployment engine on the local stack: real hook functions through
//! sluice-local, real alias updates, the timer queue, and workers killed
//! between AWS calls.

mod support;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sluice::aws::{AwsCloud, invoke};
use sluice::budget::Budget;
use sluice::clock::SystemClock;
use sluice::domain::deployment::{
    AliasUpdate, Command, Deployment, DeploymentSpec, EventKind, FailedCheck, Gate, Input,
    MemberSpec, OnBusy, OnManualChange, Phase, RollbackPolicy, VersionSource,
};
use sluice::engine::{Engine, EngineError};
use sluice::events::{HandedOver, QueueMessage, TimerMessage, queue_message};
use sluice::ports::FaultPoint;
use sluice::ports::{Deployments as _, Invocation};
use sluice::store::Store;
use sluice::store::keys::Lock;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The production engine over the local stack, its cloud with checkpoints
/// where a test injects faults.
type TestEngine = Engine<Store, Checkpointed<AwsCloud>>;

struct World {
    stack: TestStack,
    engine: TestEngine,
    lambda: aws_sdk_lambda::Client,
    hooks: tempfile::TempDir,
}

/// The template's table and timer queue, greeter versions 1 to 3 behind `live`
/// (on 1), and hook functions that pass or fail and record what they were sent.
/// The engine runs in the test itself: the template's shifter is left out, and
/// the pipeline functions, which these tests do not use.
async fn world() -> Result<World> {
    world_at(1.0).await
}

/// The same world at a schedule scale: the analysis tests' minutes pass in
/// seconds, and the engine reads Lambda's metrics on the stack's timing.
async fn world_at(schedule_scale: f64) -> Result<World> {
    let mut w = world_of(start_stack_without(
        Some("template.yaml"),
        &[],
        schedule_scale,
        &[
            "ShifterFunction",
            "SourceFunction",
            "OrchestratorFunction",
            "CodePipelineActionFunction",
        ],
    )?)
    .await?;
    w.engine = w.engine.clone().timed(stack_metric_timing(&w.stack)?);
    Ok(w)
}

async fn world_of(stack: TestStack) -> Result<World> {
    let config = stack.sdk_config().await;
    let lambda = stack.lambda().await;
    let role = function_role(&stack).await?;
    let hooks = tempfile::tempdir()?;
    // Each function waits out Lambda's state windows: the hooks are made
    // while the greeter's versions are.
    let greeter = released_greeter(&lambda, &role, "greeter");
    let recorder = binary("recorder")?;
    let hook_functions = [
        ("greeter-pre-ok", "Succeeded"),
        ("greeter-post-ok", "Succeeded"),
        ("greeter-pre-fail", "Failed"),
    ]
    .map(|(name, status)| {
        let (lambda, role, recorder) = (&lambda, &role, &recorder);
        let dir = hooks.path().join(name);
        async move {
            std::fs::create_dir_all(&dir)?;
            let reply =
                format!(r#"{{"status":"{status}","reason":"{name} says {status}","checks":[]}}"#);
            let zip = sluice_local::code::bootstrap_zip(recorder, &[]);
            let env = [
                ("RECORDER_DIR", dir.to_str().context("path")?),
                ("RECORDER_REPLY", reply.as_str()),
            ];
            create_function(lambda, role, name, zip, &env, 5).await?;
            anyhow::Ok(())
        }
    });
    tokio::try_join!(greeter, futures::future::try_join_all(hook_functions))?;
    let engine = Engine::new(
        template_store(&stack).await,
        Checkpointed {
            inner: AwsCloud {
                lambda: lambda.clone(),
                cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
                sqs: aws_sdk_sqs::Client::new(&config),
                timer_queue_url: stack.var("SLUICE_RESOURCE_TIMER_QUEUE").to_owned(),
                budget: template_budget(&stack).await,
                reserved: Default::default(),
            },
            faults: None,
        },
        SystemClock,
        Duration::from_secs(10),
    );
    Ok(World {
        stack,
        engine,
        lambda,
        hooks,
    })
}

fn spec(version: &str, config: &str, pre: Option<&str>, post: Option<&str>) -> DeploymentSpec {
    DeploymentSpec {
        function: "greeter".into(),
        alias: "live".into(),
        source: VersionSource::Version(version.into()),
        config: config.parse().unwrap(),
        pre_traffic_hook: pre.map(str::to_owned),
        post_traffic_hook: post.map(str::to_owned),
        alarms: vec![],
        on_manual_change: Default::default(),
        on_busy: OnBusy::Queue,
        smoke_tests: vec![],
        smoke_tests_from: None,
        analysis: None,
        hook_invocation: Default::default(),
        hook_timeout_seconds: None,
        rollback: Default::default(),
        frozen_for_seconds: None,
        group: vec![],
    }
}

/// A function of the greeter's code with versions 1 to 3 published and
/// `live` on 1.
async fn released_greeter(lambda: &aws_sdk_lambda::Client, role: &str, name: &str) -> Result<()> {
    create_function(lambda, role, name, greeter_zip("r1")?, &[], 5).await?;
    for release in ["r1", "r2", "r3"] {
        lambda
            .update_function_code()
            .function_name(name)
            .zip_file(aws_sdk_lambda::primitives::Blob::new(greeter_zip(release)?))
            .send()
            .await?;
        wait_updated(lambda, name).await?;
        lambda.publish_version().function_name(name).send().await?;
    }
    lambda
        .create_alias()
        .function_name(name)
        .name("live")
        .function_version("1")
        .send()
        .await?;
    Ok(())
}

impl World {
    /// Who holds the lock of `greeter:live`, the alias the tests deploy.
    async fn live_lock_holder(&self) -> Result<Option<String>> {
        Ok(self
            .engine
            .store()
            .lock_holder(&Lock::alias("greeter", "live"))
            .await?)
    }

    /// An alarm on the greeter's errors, in state INSUFFICIENT_DATA until a test sets it.
    async fn create_alarm(&self, name: &str) -> Result<()> {
        self.engine
            .cloud()
            .inner
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/Lambda")
            .metric_name("Errors")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .send()
            .await?;
        Ok(())
    }

    /// Publishes the greeter's current code as a version failing `rate` of its calls.
    async fn publish_failing(&self, rate: &str) -> Result<String> {
        self.publish_in_mode(&[("GREETER_MODE", "failing"), ("GREETER_FAILURE_RATE", rate)])
            .await
    }

    /// Publishes a version of the greeter with these `GREETER_*` settings.
    async fn publish_in_mode(&self, settings: &[(&str, &str)]) -> Result<String> {
        let env = settings
            .iter()
            .fold(
                aws_sdk_lambda::types::Environment::builder(),
                |env, (k, v)| env.variables(*k, *v),
            )
            .build();
        self.lambda
            .update_function_configuration()
            .function_name("greeter")
            .environment(env)
            .send()
            .await?;
        wait_updated(&self.lambda, "greeter").await?;
        let published = self
            .lambda
            .publish_version()
            .function_name("greeter")
            .send()
            .await?;
        Ok(published.version().context("version")?.to_owned())
    }

    async fn live_alias(&self) -> Result<aws_sdk_lambda::operation::get_alias::GetAliasOutput> {
        Ok(self
            .lambda
            .get_alias()
            .function_name("greeter")
            .name("live")
            .send()
            .await?)
    }

    async fn alias(&self) -> Result<(String, Vec<(String, f64)>)> {
        let a = self.live_alias().await?;
        let weights = a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .map(|w| w.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        Ok((a.function_version().unwrap_or_default().to_owned(), weights))
    }

    /// Plays the shifter's timer-queue handler until `id` is finished.
    async fn run_one_to_end(&self, id: &str) -> Result<Deployment> {
        let mut ended = self.run_to_end(&[id]).await?;
        ended.pop().context("the deployment")
    }

    /// Plays the shifter's timer-queue handler until every id is finished.
    async fn run_to_end(&self, ids: &[&str]) -> Result<Vec<Deployment>> {
        self.run_with(&self.engine, ids).await
    }

    async fn run_with(&self, engine: &TestEngine, ids: &[&str]) -> Result<Vec<Deployment>> {
        let until = Instant::now() + DEADLINE;
        loop {
            let mut done = Vec::new();
            for id in ids {
                let d = self.engine.store().load(id).await?.deployment;
                if d.phase.is_terminal() {
                    done.push(d);
                }
            }
            if done.len() == ids.len() {
                return Ok(done);
            }
            if Instant::now() > until {
                bail!(
                    "deployments did not finish: {done:?}\n{}",
                    self.stack.log_tail()
                );
            }
            for message in self.take_timers().await? {
                engine.run_queued(&message).await?;
            }
        }
    }

    /// The messages that are due (timers, deployments handed back), taken
    /// off the queue (waits up to 1 s for one), as the shifter's event source
    /// takes them.
    async fn take_timers(&self) -> Result<Vec<QueueMessage<TimerMessage>>> {
        let sqs = &self.engine.cloud().inner.sqs;
        let queue = &self.engine.cloud().inner.timer_queue_url;
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .wait_time_seconds(1)
            .send()
            .await?;
        let mut timers = Vec::new();
        for m in received.messages() {
            timers.push(
                queue_message(m.body().unwrap_or_default(), "a timer message")
                    .map_err(anyhow::Error::msg)?,
            );
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
        Ok(timers)
    }

    /// Starts `id` on a worker of its own, held before its first gate runs:
    /// released by `hold.release`, the worker's result in the handle.
    async fn held_at_its_first_gate(
        &self,
        id: &str,
        spec: DeploymentSpec,
    ) -> Result<(
        Hold,
        tokio::task::JoinHandle<Result<Deployment, EngineError>>,
    )> {
        let hold = hold_once(|p| {
            matches!(
                p,
                FaultPoint::Before {
                    command: Command::RunGate { .. },
                    ..
                }
            )
        });
        let worker = self
            .engine
            .with_cloud(self.engine.cloud().with(hold.hook.clone()));
        let id = id.to_owned();
        let first = tokio::spawn(async move { worker.start(&id, spec).await });
        tokio::time::timeout(DEADLINE, hold.reached.notified())
            .await
            .context("the worker did not reach its gate")?;
        Ok((hold, first))
    }

    /// What a hook was sent, oldest first.
    fn hook_calls(&self, hook: &str) -> Vec<(String, u64, f64)> {
        calls(&self.hooks.path().join(hook))
    }
}

fn calls(dir: &Path) -> Vec<(String, u64, f64)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    entries
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .map(|r| {
            (
                r["gate"].as_str().unwrap_or_default().to_owned(),
                r["step"].as_u64().unwrap_or_default(),
                r["weight"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_gated_at_every_shift_and_promoted_whole() -> Result<()> {
    let w = world().await?;
    let d = w
        .engine
        .start(
            "healthy",
            spec(
                "2",
                "canary:10:1s",
                Some("greeter-pre-ok"),
                Some("greeter-post-ok"),
            ),
        )
        .await?;
    assert!(
        matches!(d.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        d.phase
    );
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![("2".to_owned(), 0.1)])
    );

    let [done] = w.run_to_end(&["healthy"]).await?.try_into().expect("one");
    assert_eq!(done.phase, Phase::Promoted);
    assert_eq!(
        w.alias().await?,
        ("2".to_owned(), vec![]),
        "promoted: on the new version, routing cleared"
    );
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![
            ("PreTraffic".into(), 1, 10.0),
            ("PreTraffic".into(), 2, 100.0)
        ]
    );
    assert_eq!(
        w.hook_calls("greeter-post-ok"),
        vec![
            ("PostTraffic".into(), 1, 10.0),
            ("PostTraffic".into(), 2, 100.0)
        ]
    );
    let kinds = timeline_kinds(&w, "healthy").await?;
    assert_eq!(kinds.first(), Some(&EventKind::Created));
    assert_eq!(kinds.last(), Some(&EventKind::Promoted));
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Shifted).count(),
        2
    );
    assert_eq!(w.live_lock_holder().await?, None, "lock released");
    Ok(())
}

/// A gate with nothing to run (no hook, no alarm) passes in the save that
/// enters it: a save fewer a gate than a gate that reads an alarm, for the
/// same timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_with_nothing_to_run_costs_no_save_of_its_own() -> Result<()> {
    let w = world().await?;
    w.create_alarm("greeter-calm").await?;
    let mut watched = spec("1", "canary:10:1s", None, None);
    watched.alarms = vec!["greeter-calm".into()];
    let runs = [
        ("bare", spec("2", "canary:10:1s", None, None)),
        ("watched", watched),
    ];
    let mut saves = Vec::new();
    let mut timelines = Vec::new();
    for (id, spec) in runs {
        w.engine.start(id, spec).await?;
        let [done] = w.run_to_end(&[id]).await?.try_into().expect("one");
        assert_eq!(done.phase, Phase::Promoted, "{id}");
        saves.push(w.engine.store().load(id).await?.version);
        timelines.push(timeline_kinds(&w, id).await?);
    }
    assert_eq!(timelines[0], timelines[1], "one timeline shape");
    assert_eq!(saves[1] - saves[0], 4, "2 steps, 2 gates each: {saves:?}");
    let passed: Vec<String> = w
        .engine
        .store()
        .events("bare")
        .await?
        .into_iter()
        .filter(|e| e.kind == EventKind::GatePassed)
        .map(|e| e.message)
        .collect();
    assert_eq!(passed.len(), 4, "{passed:?}");
    assert!(
        passed.iter().all(|m| m.contains("nothing to run")),
        "{passed:?}"
    );
    Ok(())
}

/// Under the freeze policy a failed gate holds the split: until an
/// operator's abort, or, without one, until its wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_failed_under_the_freeze_policy_holds_the_split_until_an_abort_or_its_wait_ends()
-> Result<()> {
    let w = world().await?;
    let mut frozen = spec(
        "2",
        "canary:10:1s",
        Some("greeter-pre-ok"),
        Some("greeter-pre-fail"),
    );
    frozen.rollback = RollbackPolicy::Freeze;
    let split = ("1".to_owned(), vec![("2".to_owned(), 0.1)]);
    let d = w.engine.start("frozen", frozen.clone()).await?;
    assert!(
        matches!(
            &d.phase,
            Phase::FrozenOnFailure {
                step: 0,
                failed: FailedCheck::Gate(Gate::PostTraffic),
                ..
            }
        ),
        "{:?}",
        d.phase
    );
    assert_eq!(w.alias().await?, split, "the split held");
    // Owned, not stuck, and not due for the sweep before its wait ends.
    let an_hour_less = chrono::Utc::now() + chrono::Duration::minutes(59);
    assert!(w.engine.store().due(an_hour_less).await?.is_empty());
    assert!(w.engine.store().stuck(an_hour_less).await?.is_empty());
    w.engine
        .steer(
            "frozen",
            Input::Abort {
                reason: "a person looked".into(),
            },
        )
        .await?;
    let [done] = w.run_to_end(&["frozen"]).await?.try_into().expect("one");
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("a person looked")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));

    // Without an operator's word, it rolls back when its wait ends.
    frozen.frozen_for_seconds = Some(2);
    let d = w.engine.start("frozen-briefly", frozen).await?;
    assert!(
        matches!(d.phase, Phase::FrozenOnFailure { .. }),
        "{:?}",
        d.phase
    );
    assert_eq!(w.alias().await?, split);
    let [done] = w
        .run_to_end(&["frozen-briefly"])
        .await?
        .try_into()
        .expect("one");
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("no operator's word")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    let kinds = timeline_kinds(&w, "frozen-briefly").await?;
    assert!(kinds.contains(&EventKind::Frozen), "{kinds:?}");
    Ok(())
}

/// Under the gradual policy a gate failed at 50% steps the weight back
/// down: to 10%, judged by the PostTraffic gate on the old version and
/// baked, then to 0%.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gradual_rollback_walks_the_weight_down_judged_at_each_step_to_0() -> Result<()> {
    let w = world().await?;
    let hook = "greeter-post-fails-at-50";
    let dir = w.hooks.path().join(hook);
    std::fs::create_dir_all(&dir)?;
    let reply = |status: &str| {
        format!(r#"{{"status":"{status}","reason":"{hook} says {status}","checks":[]}}"#)
    };
    let replies = format!(
        "[{},{},{}]",
        reply("Succeeded"),
        reply("Failed"),
        reply("Succeeded")
    );
    let role = function_role(&w.stack).await?;
    let zip = sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]);
    let env = [
        ("RECORDER_DIR", dir.to_str().context("path")?),
        ("RECORDER_REPLIES", replies.as_str()),
    ];
    create_function(&w.lambda, &role, hook, zip, &env, 5).await?;
    let mut gradual = spec(
        "2",
        "steps:10@1s,50@1s,100",
        Some("greeter-pre-ok"),
        Some(hook),
    );
    gradual.rollback = RollbackPolicy::Gradual;
    w.engine.start("gradual", gradual).await?;
    let [done] = w.run_to_end(&["gradual"]).await?.try_into().expect("one");
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("PostTraffic gate failed at 50%")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    assert_eq!(
        w.hook_calls(hook),
        vec![
            ("PostTraffic".into(), 1, 10.0),
            ("PostTraffic".into(), 2, 50.0),
            ("PostTraffic".into(), 1, 10.0)
        ]
    );
    let stepping_back: Vec<bool> = std::fs::read_dir(&dir)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| -> Result<bool> {
            let request: Value = serde_json::from_slice(&std::fs::read(e.path())?)?;
            Ok(request["steppingBack"] == Value::Bool(true))
        })
        .collect::<Result<_>>()?;
    assert_eq!(
        stepping_back.iter().filter(|b| **b).count(),
        1,
        "only the gate on the way down judges the old version"
    );
    let shifts: Vec<String> = w
        .engine
        .store()
        .events("gradual")
        .await?
        .into_iter()
        .filter(|e| e.kind == EventKind::Shifted)
        .map(|e| e.message)
        .collect();
    assert_eq!(
        shifts,
        vec![
            "10% on version 2",
            "50% on version 2",
            "10% on version 2, stepping back"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_gates_and_alarms_roll_back_with_the_alias_whole() -> Result<()> {
    let w = world().await?;
    // A failing PreTraffic gate: rolled back before any traffic.
    let d = w
        .engine
        .start(
            "smoke-fails",
            spec(
                "2",
                "canary:10:1s",
                Some("greeter-pre-fail"),
                Some("greeter-post-ok"),
            ),
        )
        .await?;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.contains("pre-fail says Failed")),
        "{:?}",
        d.phase
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    assert!(
        w.hook_calls("greeter-post-ok").is_empty(),
        "no PostTraffic gate without a shift"
    );

    // An alarm in ALARM fails the gate of the next step, after the first shift.
    let cw = &w.engine.cloud().inner.cloudwatch;
    w.create_alarm("greeter-errors").await?;
    let mut watched = spec("2", "canary:10:1s", None, None);
    watched.alarms = vec!["greeter-errors".into()];
    let d = w.engine.start("alarmed", watched.clone()).await?;
    assert!(matches!(d.phase, Phase::Baking { .. }), "{:?}", d.phase);
    cw.set_alarm_state()
        .alarm_name("greeter-errors")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test")
        .send()
        .await?;
    let [done] = w.run_to_end(&["alarmed"]).await?.try_into().expect("one");
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("greeter-errors is in ALARM")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));

    // A named alarm that does not exist is a failed gate, not a silent pass.
    watched.alarms = vec!["no-such-alarm".into()];
    let d = w.engine.start("unknown-alarm", watched).await?;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.contains("does not exist")),
        "{:?}",
        d.phase
    );

    // A version that does not exist fails to start and never touches the alias.
    let d = w
        .engine
        .start("no-version", spec("9", "AllAtOnce", None, None))
        .await?;
    assert!(
        matches!(&d.phase, Phase::FailedToStart { reason } if reason.contains("version 9")),
        "{:?}",
        d.phase
    );
    assert_eq!(w.live_lock_holder().await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_before_any_command_is_repaired_by_resume() -> Result<()> {
    let w = world().await?;
    // Kill the worker before the n-th command it executes, for every n the deployment has.
    let killed_at = w
        .kill_before_each(
            "crash",
            |_| true,
            |n| {
                spec(
                    alternating(n),
                    "linear:50:1s",
                    Some("greeter-pre-ok"),
                    Some("greeter-post-ok"),
                )
            },
            async |id, _, ended| {
                assert_eq!(ended.phase, Phase::Promoted, "{id}");
                let version = ended.to_version.clone().unwrap_or_default();
                assert_eq!(
                    w.alias().await?,
                    (version, vec![]),
                    "{id} left the alias split"
                );
                assert_eq!(w.live_lock_holder().await?, None, "{id} kept the lock");
                Ok(())
            },
        )
        .await?;
    assert!(
        killed_at.len() >= 8,
        "only {killed_at:?} commands were interrupted"
    );
    Ok(())
}

/// Versions 2 and 3 in turn, so each deployment has something to shift.
fn alternating(n: usize) -> &'static str {
    if n.is_multiple_of(2) { "2" } else { "3" }
}

impl World {
    /// Kills a worker before the n-th command `counted` picks, for n = 0,
    /// 1, ..., each time in a new deployment of `spec_for(n)`, until one
    /// runs to its end unkilled. Each killed one is repaired by a fresh
    /// worker (the reconcile sweep's resume; timers may have been lost
    /// too), then `repaired` is given its id, its state saved when killed
    /// and its end. Returns the ns it was killed at.
    async fn kill_before_each(
        &self,
        prefix: &str,
        counted: fn(&Command) -> bool,
        spec_for: impl Fn(usize) -> DeploymentSpec,
        repaired: impl AsyncFn(&str, Deployment, Deployment) -> Result<()>,
    ) -> Result<Vec<usize>> {
        let mut killed_at = Vec::new();
        for n in 0.. {
            let id = format!("{prefix}-{n}");
            let seen = Arc::new(AtomicUsize::new(0));
            let crashing = self.engine.with_cloud(self.engine.cloud().with(stop_before(
                move |c: &Command| counted(c) && seen.fetch_add(1, Ordering::SeqCst) == n,
            )));
            let outcome = async {
                crashing.start(&id, spec_for(n)).await?;
                self.run_with(&crashing, &[&id]).await
            }
            .await;
            let crashed = outcome
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<EngineError>())
                .is_some_and(|e| matches!(e, EngineError::Injected(_)));
            if !crashed {
                // Past the last command: nothing left to kill.
                outcome?;
                break;
            }
            killed_at.push(n);
            let saved = self.engine.store().load(&id).await?.deployment;
            // The sweep, taking it up until it ends.
            let ended = wait_for("the sweep's repair", DEADLINE, || async {
                let d = self.engine.resume(&id).await?;
                Ok(d.phase.is_terminal().then_some(d))
            })
            .await?;
            repaired(&id, saved, ended).await?;
        }
        Ok(killed_at)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deployments_on_one_alias_never_interleave() -> Result<()> {
    let w = world().await?;
    let (a, b) = tokio::join!(
        w.engine.start(
            "first",
            spec("2", "canary:10:1s", Some("greeter-pre-ok"), None)
        ),
        w.engine.start(
            "second",
            spec("3", "canary:10:1s", Some("greeter-pre-ok"), None)
        ),
    );
    let (a, b) = (a?, b?);
    let queued = [&a, &b]
        .iter()
        .filter(|d| matches!(d.phase, Phase::Queued { .. }))
        .count();
    assert_eq!(
        queued, 1,
        "exactly one waits: {:?} / {:?}",
        a.phase, b.phase
    );
    let done = w.run_to_end(&["first", "second"]).await?;
    assert!(done.iter().all(|d| d.phase == Phase::Promoted), "{done:?}");

    // The one that waited prepared only after the other had promoted.
    let (winner, waiter) = if matches!(a.phase, Phase::Queued { .. }) {
        ("second", "first")
    } else {
        ("first", "second")
    };
    let promoted_at = w
        .engine
        .store()
        .events(winner)
        .await?
        .into_iter()
        .find(|e| e.kind == EventKind::Promoted)
        .context("promoted")?
        .at;
    let prepared_at = w
        .engine
        .store()
        .events(waiter)
        .await?
        .into_iter()
        .find(|e| e.kind == EventKind::Prepared)
        .context("prepared")?
        .at;
    assert!(
        prepared_at >= promoted_at,
        "{waiter} prepared at {prepared_at}, before {winner} promoted at {promoted_at}"
    );
    let expected = if waiter == "first" { "2" } else { "3" };
    assert_eq!(w.alias().await?, (expected.to_owned(), vec![]));

    // Refusing instead of queueing fails at once without touching the alias.
    let other = if expected == "2" { "3" } else { "2" };
    let mut refusing = spec(other, "canary:10:1h", None, None);
    let holder = w.engine.start("holder", refusing.clone()).await?;
    assert!(
        matches!(holder.phase, Phase::Baking { .. }),
        "{:?}",
        holder.phase
    );
    refusing.on_busy = OnBusy::Refuse;
    let refused = w.engine.start("refused", refusing).await?;
    assert!(
        matches!(&refused.phase, Phase::FailedToStart { reason } if reason.contains("holder")),
        "{:?}",
        refused.phase
    );
    Ok(())
}

/// The whole template but the pipeline functions: the shifter function runs
/// the deployments from its event sources; its reconcile schedule plays
/// every 1.2 s.
async fn shifter_world() -> Result<World> {
    shifter_world_with(&[]).await
}

/// As `shifter_world`, with more of the template's parameters.
async fn shifter_world_with(parameters: &[(&str, &str)]) -> Result<World> {
    // The shifter may invoke only what ManagedFunctions names (and Sluice's
    // own hooks): the test hooks share the greeter's prefix.
    let mut all = vec![("ManagedFunctions", "greeter*")];
    all.extend_from_slice(parameters);
    world_of(start_stack_without(
        Some("template.yaml"),
        &all,
        0.02,
        &[
            "SourceFunction",
            "OrchestratorFunction",
            "CodePipelineActionFunction",
        ],
    )?)
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shifter_function_runs_deployments_from_its_event_sources() -> Result<()> {
    let w = shifter_world().await?;
    let finished = |id: &'static str| {
        let store = w.engine.store().clone();
        move || {
            let store = store.clone();
            async move {
                let d = store.load(id).await?.deployment;
                Ok(d.phase.is_terminal().then_some(d))
            }
        }
    };

    // Saving a deployment is all it takes: the stream hands it to the shifter,
    // and the timer queue brings it back after each bake.
    let (d, commands) = Deployment::create(
        "via-stream",
        spec(
            "2",
            "linear:50:1s",
            Some("greeter-pre-ok"),
            Some("greeter-post-ok"),
        ),
        chrono::Utc::now(),
    );
    let events: Vec<_> = commands
        .into_iter()
        .filter_map(|c| match c {
            Command::Record(e) => Some(e),
            _ => None,
        })
        .collect();
    w.engine.store().create(&d, &events).await?;
    let done = wait_for("the shifter to promote", DEADLINE, finished("via-stream"))
        .await
        .with_context(|| w.stack.log_tail())?;
    assert_eq!(done.phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));
    let pre = w.hook_calls("greeter-pre-ok");
    assert!(
        pre.contains(&("PreTraffic".into(), 1, 50.0))
            && pre.contains(&("PreTraffic".into(), 2, 100.0)),
        "{pre:?}"
    );

    // An alarm going off mid-bake: the state change reaches the shifter and rolls back.
    w.create_alarm("greeter-live-errors").await?;
    let mut watched = spec("3", "canary:10:1h", None, None);
    watched.alarms = vec!["greeter-live-errors".into()];
    let (d, _) = Deployment::create("watched", watched, chrono::Utc::now());
    w.engine.store().create(&d, &[]).await?;
    wait_for("the first shift", DEADLINE, || async {
        let d = w.engine.store().load("watched").await?.deployment;
        Ok(matches!(d.phase, Phase::Baking { .. }).then_some(()))
    })
    .await?;
    assert_eq!(
        w.alias().await?,
        ("2".to_owned(), vec![("3".to_owned(), 0.1)])
    );
    w.engine
        .cloud()
        .inner
        .cloudwatch
        .set_alarm_state()
        .alarm_name("greeter-live-errors")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("errors")
        .send()
        .await?;
    let done = wait_for("the rollback", DEADLINE, finished("watched")).await?;
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("greeter-live-errors")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));

    // A function ManagedFunctions does not name is out of the shifter's
    // role: the call is refused as on AWS, and the timeline names the
    // action and the resource.
    let mut outside = spec("2", "AllAtOnce", None, None);
    outside.function = "billing".into();
    let (d, _) = Deployment::create("outside", outside, chrono::Utc::now());
    w.engine.store().create(&d, &[]).await?;
    let done = wait_for("the refusal", DEADLINE, finished("outside"))
        .await
        .with_context(|| w.stack.log_tail())?;
    let Phase::FailedToStart { reason } = &done.phase else {
        bail!(
            "expected a deployment that failed to start: {:?}",
            done.phase
        );
    };
    assert!(
        reason.contains("assumed-role/sluice-ShifterFunctionRole/")
            && reason.contains(
                "is not authorized to perform: lambda:GetAlias on resource: arn:aws:lambda:us-east-1:123456789012:function:billing because"
            ),
        "{reason}"
    );

    // A person sets the alias back by hand mid-bake: the shifter's next
    // write is refused, it stops, and it counts the change for its alarm.
    let (d, _) = Deployment::create(
        "by-hand",
        spec("3", "linear:50:2s", None, None),
        chrono::Utc::now(),
    );
    w.engine.store().create(&d, &[]).await?;
    w.wait_phase("by-hand", "the first shift", |p| {
        matches!(p, Phase::Baking { .. })
    })
    .await?;
    w.set_alias_by_hand("2", &[]).await?;
    let done = w
        .wait_phase("by-hand", "its stop", Phase::is_terminal)
        .await?;
    assert_eq!(
        done.phase,
        Phase::RolledBack {
            reason: "the alias was changed outside Sluice: it serves version 2".into()
        }
    );

    // The shifter counted all of it in Sluice's metrics (EMF lines in its log).
    let log = std::fs::read_to_string(w.stack.dir.path().join("state/sluice-local.log"))?;
    for metric in [
        "DeploymentsPromoted",
        "DeploymentsRolledBack",
        "GatesPassed",
        "ManualAliasChanges",
    ] {
        assert!(
            log.contains(&format!(r#"\"{metric}\":1"#))
                || log.contains(&format!(r#""{metric}":1"#)),
            "no {metric} in the shifter's log"
        );
    }
    Ok(())
}

/// A PreTraffic hook that takes its time (a long acceptance suite) holds
/// back only its own deployment: deployments of other aliases created after
/// it start, pass their gates and are promoted while it runs. Its stream
/// record is handed to the queue, which Lambda reads with several batches at
/// once, and a batch's items run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_gate_holds_back_only_its_own_deployment() -> Result<()> {
    let w = shifter_world().await?;
    let role = function_role(&w.stack).await?;
    let slow_dir = w.hooks.path().join("greeter-pre-slow");
    std::fs::create_dir_all(&slow_dir)?;
    let zip = sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]);
    let env = [
        ("RECORDER_DIR", slow_dir.to_str().context("path")?),
        (
            "RECORDER_REPLY",
            r#"{"status":"Succeeded","reason":"the long suite passed","checks":[]}"#,
        ),
    ];
    create_function(&w.lambda, &role, "greeter-pre-slow", zip, &env, 60).await?;
    let others = ["blue", "green", "red", "teal", "gold"];
    w.create_aliases_on_1(&others).await?;
    let create = |id: &str, alias: &str, hook: &str| {
        let mut spec = spec("2", "AllAtOnce", Some(hook), None);
        spec.alias = alias.into();
        let (d, _) = Deployment::create(id, spec, chrono::Utc::now());
        let store = w.engine.store().clone();
        async move { store.create(&d, &[]).await }
    };

    // The hook holds every event that names this deployment.
    create("recorder-hold-suite", "live", "greeter-pre-slow").await?;
    wait_for("the slow gate to start", DEADLINE, || async {
        Ok((!w.hook_calls("greeter-pre-slow").is_empty()).then_some(()))
    })
    .await
    .with_context(|| w.stack.log_tail())?;
    for alias in others {
        create(&format!("quick-{alias}"), alias, "greeter-pre-ok").await?;
    }
    // Well inside the sweep's grace: only the stream and the queue start them.
    for alias in others {
        let id = format!("quick-{alias}");
        let done = w.wait_phase(&id, "its end", Phase::is_terminal).await?;
        assert_eq!(done.phase, Phase::Promoted, "{id}");
    }
    let slow = w
        .engine
        .store()
        .load("recorder-hold-suite")
        .await?
        .deployment;
    assert_eq!(slow.phase, Phase::PreTraffic { step: 0 });
    assert_eq!(
        w.hook_calls("greeter-pre-slow").len(),
        1,
        "held, not run again"
    );

    std::fs::write(slow_dir.join("release"), b"")?;
    let done = w
        .wait_phase("recorder-hold-suite", "its end", Phase::is_terminal)
        .await?;
    assert_eq!(done.phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));
    Ok(())
}

/// sluice-local goes away mid-bake and comes back (`make dev-restart`): on
/// the same ports, with the same env file and the alias revisions it gave, as
/// Lambda's outlive any one server. The deployment goes on from its timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sluice_local_restarts_alone_and_the_deployment_goes_on() -> Result<()> {
    let mut w = shifter_world().await?;
    let (d, _) = Deployment::create(
        "through-a-restart",
        spec("2", "linear:50:3s", Some("greeter-pre-ok"), None),
        chrono::Utc::now(),
    );
    w.engine.store().create(&d, &[]).await?;
    w.wait_phase("through-a-restart", "the first shift", |p| {
        matches!(p, Phase::Baking { step: 0, .. })
    })
    .await?;
    let env_file = w.stack.dir.path().join("state/env");
    let env_before = std::fs::read_to_string(&env_file)?;
    let revision = w.alias_revision().await?;
    let old_pid = w.stack.local_pid();

    tokio::task::block_in_place(|| w.stack.stack.restart_local())?;
    assert_ne!(w.stack.local_pid(), old_pid, "a new process");
    assert_eq!(std::fs::read_to_string(&env_file)?, env_before);
    assert_eq!(w.alias_revision().await?, revision, "the revision it gave");
    let unsigned = reqwest::get(w.stack.var("SLUICE_URL_API_FUNCTION")).await?;
    assert_eq!(unsigned.status(), 403, "the API's URL answers where it did");

    let done = w
        .wait_phase("through-a-restart", "its end", Phase::is_terminal)
        .await?;
    assert_eq!(done.phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![
            ("PreTraffic".to_owned(), 1, 50.0),
            ("PreTraffic".to_owned(), 2, 100.0)
        ],
        "the second gate ran on the restarted stack"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_promote_pause_resume_abort_and_retry() -> Result<()> {
    let w = world().await?;
    // Promote: the hour-long bakes are skipped; every gate still runs.
    let d = w
        .engine
        .start(
            "promoted",
            spec(
                "2",
                "linear:25:1h",
                Some("greeter-pre-ok"),
                Some("greeter-post-ok"),
            ),
        )
        .await?;
    assert!(matches!(d.phase, Phase::Baking { step: 0, .. }));
    // An operator's steer is decided and saved; the shifter (here, the
    // test's) runs what it asks for, handed over on its queue.
    let steered = w.engine.steer("promoted", Input::Promote).await?.state;
    assert!(steered.skip_waits, "{steered:?}");
    let [d] = w.run_to_end(&["promoted"]).await?.try_into().expect("one");
    assert_eq!(d.phase, Phase::Promoted);
    assert_eq!(w.hook_calls("greeter-pre-ok").len(), 4);
    assert_eq!(w.hook_calls("greeter-post-ok").len(), 4);
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));

    // Pause holds a bake: its timer changes nothing; resume goes on from where it stood.
    let d = w
        .engine
        .start("paused", spec("3", "canary:10:1s", None, None))
        .await?;
    assert!(matches!(d.phase, Phase::Baking { .. }));
    let armed = Input::TimerFired {
        step: 0,
        at: d.wake().map(|(_, at)| at),
    };
    w.engine.steer("paused", Input::Pause).await?;
    let d = w.engine.apply("paused", armed).await?;
    assert!(
        matches!(d.phase, Phase::Baking { .. }) && d.paused,
        "{:?}",
        d.phase
    );
    assert_eq!(
        w.alias().await?,
        ("2".to_owned(), vec![("3".to_owned(), 0.1)])
    );
    w.engine.steer("paused", Input::Resume).await?;
    let [d] = w.run_to_end(&["paused"]).await?.try_into().expect("one");
    assert_eq!(d.phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));

    // Abort rolls back at once; retry starts the same deployment anew.
    let d = w
        .engine
        .start("aborted", spec("2", "canary:10:1h", None, None))
        .await?;
    assert!(matches!(d.phase, Phase::Baking { .. }));
    let steered = w
        .engine
        .steer(
            "aborted",
            Input::Abort {
                reason: "operator".into(),
            },
        )
        .await?
        .state;
    assert!(
        matches!(steered.phase, Phase::RollingBack { .. }),
        "{:?}",
        steered.phase
    );
    assert_eq!(
        w.alias().await?,
        ("3".to_owned(), vec![("2".to_owned(), 0.1)]),
        "the steer itself writes no alias"
    );
    assert!(
        w.engine.cloud().inner.reserved.lock().unwrap().is_empty(),
        "nor takes a budget slot ahead for it: the worker that writes does"
    );
    let [d] = w.run_to_end(&["aborted"]).await?.try_into().expect("one");
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.contains("operator")),
        "{:?}",
        d.phase
    );
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));
    w.engine
        .steer(
            "aborted",
            Input::Retry {
                new_id: "aborted-again".into(),
            },
        )
        .await?;
    // Saved by the steer; the table's stream hands it to a shifter.
    let again = w.engine.store().load("aborted-again").await?.deployment;
    assert_eq!(again.phase, Phase::Created);
    let again = w.engine.arrived("aborted-again").await?;
    assert!(
        matches!(again.phase, Phase::Baking { .. }),
        "{:?}",
        again.phase
    );
    assert_eq!(again.spec, d.spec);
    assert_eq!(
        w.engine
            .store()
            .load("aborted")
            .await?
            .deployment
            .retried_as
            .as_deref(),
        Some("aborted-again")
    );

    // A retry whose steer died between saving the old deployment and the
    // new one: retried again, it saves the new one it named, no other.
    let reason = "make way".to_owned();
    w.engine
        .steer("aborted-again", Input::Abort { reason })
        .await?;
    w.run_to_end(&["aborted-again"]).await?;
    let d = w
        .engine
        .start(
            "half-retried",
            spec("2", "canary:10:1h", Some("greeter-pre-fail"), None),
        )
        .await?;
    assert!(matches!(d.phase, Phase::RolledBack { .. }), "{:?}", d.phase);
    let stored = w.engine.store().load("half-retried").await?;
    let mut named = stored.deployment.clone();
    named.retried_as = Some("half-retried-again".into());
    w.engine.store().save(&named, stored.version, &[]).await?;
    let steered = w
        .engine
        .steer(
            "half-retried",
            Input::Retry {
                new_id: "half-retried-other".into(),
            },
        )
        .await?;
    assert!(!steered.changed && !steered.woken);
    assert_eq!(steered.state, named, "already retried: unchanged");
    let saved = w
        .engine
        .store()
        .load("half-retried-again")
        .await?
        .deployment;
    assert_eq!((saved.phase, saved.spec), (Phase::Created, d.spec));
    assert!(matches!(
        w.engine.store().load("half-retried-other").await,
        Err(sluice::store::StoreError::NotFound(_))
    ));
    Ok(())
}

/// A steer hands the shifter only what its decision issued: a pause during
/// a gate under way wakes no one (the gate is not run a second time), an
/// abort hands over the rollback alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steer_during_a_gate_hands_the_shifter_only_what_it_decided() -> Result<()> {
    let w = world().await?;
    let spec = spec("2", "canary:10:1h", Some("greeter-pre-ok"), None);
    let (hold, first) = w.held_at_its_first_gate("steered", spec).await?;

    let paused = w.engine.steer("steered", Input::Pause).await?;
    assert!(paused.changed && paused.state.paused);
    assert!(!paused.woken, "a pause issues nothing to run");
    let reason = "operator".to_owned();
    let aborted = w.engine.steer("steered", Input::Abort { reason }).await?;
    assert!(aborted.changed && aborted.woken);
    let handed = w.take_timers().await?;
    let [QueueMessage::HandedOver(HandedOver::SteeredDeployment { id, commands, .. })] =
        handed.as_slice()
    else {
        bail!("expected the abort's hand-over alone, got {handed:?}");
    };
    assert_eq!(id, "steered");
    assert!(
        matches!(
            commands.as_slice(),
            [Command::SetAlias {
                update: AliasUpdate::Rollback,
                ..
            }]
        ),
        "{commands:?}"
    );

    // The held worker's gate ends; its result no longer applies.
    hold.release.notify_one();
    first.await??;
    for message in &handed {
        w.engine.run_queued(message).await?;
    }
    let [d] = w.run_to_end(&["steered"]).await?.try_into().expect("one");
    assert!(matches!(d.phase, Phase::RolledBack { .. }), "{:?}", d.phase);
    assert_eq!(w.hook_calls("greeter-pre-ok").len(), 1, "the gate ran once");
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pre_traffic_hook_stops_a_version_that_fails_its_smoke_tests() -> Result<()> {
    let w = world().await?;
    let hook = w
        .stack
        .var("SLUICE_RESOURCE_PRE_TRAFFIC_FUNCTION")
        .to_owned();
    let smoke: Vec<sluice::domain::smoke::SmokeTest> = serde_json::from_value(serde_json::json!([
        {"name": "greets by name", "event": {"name": "Ada"}, "expect": {"fields": {"/message": "Hello, Ada!"}}}
    ]))?;

    let mut healthy = spec("2", "AllAtOnce", Some(&hook), None);
    healthy.smoke_tests = smoke.clone();
    let d = w.engine.start("smoke-passes", healthy).await?;
    assert_eq!(d.phase, Phase::Promoted, "{:?}", d.phase);
    let timeline = w.engine.store().events("smoke-passes").await?;
    assert!(
        timeline
            .iter()
            .any(|e| e.message.contains("1 checks passed on version 2")),
        "{timeline:?}"
    );

    // More tests from a file in the artifact bucket; a file that cannot be read fails the gate.
    let bucket = w.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET").to_owned();
    let s3 = aws_sdk_s3::Client::new(&w.stack.sdk_config().await);
    s3.put_object()
        .bucket(&bucket)
        .key("smoke/greeter.yaml")
        .body(
            b"- name: greets Grace\n  event: {name: Grace}\n  expect: {fields: {/message: 'Hello, Grace!'}}\n"
                .to_vec()
                .into(),
        )
        .send()
        .await?;
    let mut from_file = spec("3", "AllAtOnce", Some(&hook), None);
    from_file.smoke_tests_from = Some(format!("s3://{bucket}/smoke/greeter.yaml").parse().unwrap());
    let d = w.engine.start("smoke-file", from_file).await?;
    assert_eq!(d.phase, Phase::Promoted, "{:?}", d.phase);
    let timeline = w.engine.store().events("smoke-file").await?;
    assert!(
        timeline
            .iter()
            .any(|e| e.message.contains("1 checks passed on version 3")),
        "{timeline:?}"
    );
    let mut missing = spec("2", "AllAtOnce", Some(&hook), None);
    missing.smoke_tests_from = Some(format!("s3://{bucket}/smoke/missing.yaml").parse().unwrap());
    let d = w.engine.start("smoke-file-missing", missing).await?;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.contains("smoke tests from s3://") && reason.contains("NoSuchKey")),
        "{:?}",
        d.phase
    );
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));

    // Version 4: the same code, configured to fail every call.
    let v4 = w.publish_failing("1.0").await?;
    let mut failing = spec(&v4, "canary:10:1s", Some(&hook), None);
    failing.smoke_tests = smoke;
    let d = w.engine.start("smoke-fails", failing).await?;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.contains("checks failed") && reason.contains("failed on purpose")),
        "{:?}",
        d.phase
    );
    assert_eq!(
        w.alias().await?,
        ("3".to_owned(), vec![]),
        "the failing version never got traffic"
    );
    Ok(())
}

/// Callers using the alias until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    callers: tokio::task::JoinSet<()>,
}

impl Traffic {
    fn through_the_alias(w: &World, callers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut traffic = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let (lambda, stop) = (w.lambda.clone(), stop.clone());
            traffic.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = lambda
                        .invoke()
                        .function_name("greeter")
                        .qualifier("live")
                        .send()
                        .await;
                }
            });
        }
        Traffic {
            stop,
            callers: traffic,
        }
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.callers.join_next().await.is_some() {}
    }
}

/// The analysis judged only periods published before its verdict: the last
/// period it read had closed a read delay (longer than sluice-local's
/// publication lag) before the verdict. Returns the verdict's line.
async fn assert_judged_published_periods(w: &World, id: &str) -> Result<String> {
    let stored = w.engine.store().load(id).await?.deployment;
    let analysis = stored.analysis.clone().context("the analysis's progress")?;
    let timing = stored.metric_timing;
    let events = w.engine.store().events(id).await?;
    assert!(
        analysis.through > analysis.from,
        "{analysis:?}: no period read\n{events:#?}"
    );
    let verdict = events
        .iter()
        .rev()
        .find(|e| e.message.contains("error rate"))
        .with_context(|| format!("no verdict in {events:?}"))?;
    assert!(
        timing.readable_at(analysis.through) <= verdict.at,
        "read {} before it was published ({})",
        analysis.through,
        verdict.at
    );
    Ok(verdict.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analysis_passes_a_healthy_version_and_rolls_back_a_bad_one_on_published_minutes()
-> Result<()> {
    // A minute is 3 s: published 3 to 4.5 s after it closes, read 6 s after.
    let w = world_at(0.05).await?;
    let analysis: sluice::domain::analysis::AnalysisSettings =
        serde_json::from_value(serde_json::json!({
            "max_error_rate": 5.0, "min_invocations": 10, "on_inconclusive": "fail",
            "max_p99_duration_ms": 700
        }))?;
    let traffic = Traffic::through_the_alias(&w, 4);

    // A one-second bake is shorter than one published period: extended.
    let mut healthy = spec("2", "canary:20:1s", None, None);
    healthy.analysis = Some(analysis.clone());
    w.engine.start("analysed-healthy", healthy).await?;
    let d = &w.run_one_to_end("analysed-healthy").await?;
    assert_eq!(d.phase, Phase::Promoted, "{:?}", d.phase);
    let verdict = assert_judged_published_periods(&w, "analysed-healthy").await?;
    assert!(
        verdict.starts_with("analysis at step 1 passed: error rate") && verdict.contains(", p99 "),
        "{verdict}"
    );
    let events = w.engine.store().events("analysed-healthy").await?;
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("bake extended to")),
        "{events:?}"
    );

    // Version 4 fails 30% of its calls; its bake of an hour ends at the
    // first published period that shows it.
    let v4 = w.publish_failing("0.3").await?;
    let mut failing = spec(&v4, "canary:20:1h", None, None);
    failing.analysis = Some(analysis.clone());
    w.engine.start("analysed-failing", failing).await?;
    let d = &w.run_one_to_end("analysed-failing").await?;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.starts_with("analysis failed at 20%: error rate")),
        "{:?}",
        d.phase
    );
    assert_judged_published_periods(&w, "analysed-failing").await?;
    assert_eq!(
        w.alias().await?,
        ("2".to_owned(), vec![]),
        "back to 100% on the old version"
    );

    // Version 5 answers every call, in a second: over the p99 bound of 700
    // ms (CloudWatch's percentile of the window's durations; a healthy
    // version's stays far under it on a loaded machine), without an error.
    let v5 = w
        .publish_in_mode(&[("GREETER_MODE", "slow"), ("GREETER_DELAY_MS", "1000")])
        .await?;
    let mut slow = spec(&v5, "canary:20:1h", None, None);
    // Slow calls are fewer: a period holds a handful.
    slow.analysis = Some(sluice::domain::analysis::AnalysisSettings {
        min_invocations: 5,
        ..analysis
    });
    w.engine.start("analysed-slow", slow).await?;
    let d = &w.run_one_to_end("analysed-slow").await?;
    traffic.stop().await;
    let Phase::RolledBack { reason } = &d.phase else {
        panic!("{:?}", d.phase)
    };
    let p99: f64 = reason
        .strip_prefix("analysis failed at 20%: p99 duration ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .with_context(|| format!("not a p99 verdict: {reason}"))?;
    assert!((1000.0..3000.0).contains(&p99), "{reason}");
    assert!(reason.contains("error rate 0.0%"), "{reason}");
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watch_after_promotion_rolls_back_a_version_bad_at_100_percent() -> Result<()> {
    let w = world_at(0.05).await?;
    let traffic = Traffic::through_the_alias(&w, 2);
    // All at once: no bake judged it before it served every caller.
    let v4 = w.publish_failing("0.3").await?;
    let mut watched = spec(&v4, "AllAtOnce", None, None);
    watched.analysis = Some(serde_json::from_value(serde_json::json!({
        "max_error_rate": 5.0, "min_invocations": 10, "watch_after_promotion_seconds": 3600
    }))?);
    let d = w.engine.start("watched", watched).await?;
    assert!(
        matches!(d.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        d.phase
    );
    assert_eq!(
        w.alias().await?,
        (v4.clone(), vec![]),
        "100% on the new version"
    );
    let d = &w.run_one_to_end("watched").await?;
    traffic.stop().await;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.starts_with("analysis failed at 100%: error rate")),
        "{:?}",
        d.phase
    );
    assert_judged_published_periods(&w, "watched").await?;
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_left_by_a_finished_deployment_is_freed_for_the_next() -> Result<()> {
    let w = world().await?;
    w.engine
        .start("holder", spec("2", "canary:10:1h", None, None))
        .await?;
    let waiter = w
        .engine
        .start("waiter", spec("3", "canary:10:1h", None, None))
        .await?;
    assert!(
        matches!(waiter.phase, Phase::Queued { .. }),
        "{:?}",
        waiter.phase
    );
    // The holder's worker dies after the rollback, before releasing the lock.
    let dies_at_release = w.engine.with_cloud(
        w.engine
            .cloud()
            .with(stop_before(|c: &Command| matches!(c, Command::ReleaseLock))),
    );
    let died = dies_at_release
        .apply(
            "holder",
            Input::Abort {
                reason: "operator".into(),
            },
        )
        .await;
    assert!(matches!(died, Err(EngineError::Injected(_))), "{died:?}");
    assert_eq!(w.live_lock_holder().await?.as_deref(), Some("holder"));
    // The sweep finds the waiter and frees the lock its finished holder left.
    let waiter = w.engine.resume("waiter").await?;
    assert!(
        matches!(waiter.phase, Phase::Baking { .. }),
        "{:?}",
        waiter.phase
    );
    assert_eq!(w.live_lock_holder().await?.as_deref(), Some("waiter"));
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![("3".to_owned(), 0.1)])
    );
    Ok(())
}

/// A fault hook that holds the worker the first time it reaches a point `at`
/// picks: `reached` is notified, and the worker waits for `release`.
struct Hold {
    hook: FaultHook,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

fn hold_once(at: impl Fn(&FaultPoint) -> bool + Send + Sync + 'static) -> Hold {
    let reached = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, g) = (reached.clone(), release.clone());
    let hook: FaultHook = Arc::new(move |point| {
        let hold = at(&point) && !held.swap(true, Ordering::SeqCst);
        let (r, g) = (r.clone(), g.clone());
        Box::pin(async move {
            if hold {
                r.notify_one();
                g.notified().await;
            }
            false
        })
    });
    Hold {
        hook,
        reached,
        release,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_overtaken_by_a_rollback_never_splits_the_alias_again() -> Result<()> {
    let w = world().await?;
    // Held at two places: before its first alias write starts (it has saved
    // the 10% shift), and between reading the alias and writing it.
    let holds = [
        hold_once(|p| {
            matches!(
                p,
                FaultPoint::Before {
                    command: Command::SetAlias { .. },
                    ..
                }
            )
        }),
        hold_once(|p| matches!(p, FaultPoint::AliasWrite { .. })),
    ];
    for (n, hold) in holds.into_iter().enumerate() {
        let id = format!("overtaken-{n}");
        let slow = w
            .engine
            .with_cloud(w.engine.cloud().with(hold.hook.clone()));
        let forward = tokio::spawn({
            let id = id.clone();
            async move { slow.start(&id, spec("2", "canary:10:1h", None, None)).await }
        });
        tokio::time::timeout(DEADLINE, hold.reached.notified())
            .await
            .context("the worker did not reach the held point")?;
        let saved = w.engine.store().load(&id).await?.deployment;
        assert!(
            matches!(saved.phase, Phase::Shifting { step: 0 }),
            "{:?}",
            saved.phase
        );

        // Another worker rolls it back, all the way, while the first is held.
        let rolled = w
            .engine
            .apply(
                &id,
                Input::Abort {
                    reason: "operator".into(),
                },
            )
            .await?;
        assert!(
            matches!(rolled.phase, Phase::RolledBack { .. }),
            "{:?}",
            rolled.phase
        );
        assert_eq!(w.alias().await?, ("1".to_owned(), vec![]), "{id}");

        // The held worker goes on: its 10% write must not land.
        hold.release.notify_one();
        tokio::time::timeout(DEADLINE, forward)
            .await
            .context("the held worker did not finish")???;
        assert_eq!(w.alias().await?, ("1".to_owned(), vec![]), "{id}");
        let end = w.engine.store().load(&id).await?.deployment;
        assert!(
            matches!(end.phase, Phase::RolledBack { .. }),
            "{:?}",
            end.phase
        );
    }
    Ok(())
}

/// A new deployment's record delivered again while the worker that claimed
/// it is preparing it (uploading, publishing) leaves it to that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_arrival_does_not_prepare_a_deployment_twice() -> Result<()> {
    let w = world().await?;
    let hold = hold_once(|p| {
        matches!(
            p,
            FaultPoint::Before {
                command: Command::Prepare,
                ..
            }
        )
    });
    let worker = w
        .engine
        .with_cloud(w.engine.cloud().with(hold.hook.clone()));
    let spec = spec("2", "AllAtOnce", None, None);
    let first = tokio::spawn(async move { worker.start("prepared-once", spec).await });
    tokio::time::timeout(DEADLINE, hold.reached.notified())
        .await
        .context("the worker did not reach its Prepare")?;
    let claimed = w.engine.store().load("prepared-once").await?;
    assert_eq!(claimed.deployment.phase, Phase::Created);
    assert_eq!(claimed.version, 2, "claimed by the first worker");

    let again = w.engine.arrived("prepared-once").await?;
    assert_eq!(again.phase, Phase::Created);
    let after = w.engine.store().load("prepared-once").await?;
    assert_eq!(after.version, 2, "the redelivery claimed nothing");

    hold.release.notify_one();
    let done = tokio::time::timeout(DEADLINE, first)
        .await
        .context("the held worker did not finish")???;
    assert_eq!(done.phase, Phase::Promoted);
    Ok(())
}

/// The stream delivers a new deployment at least once, and the sweep lists
/// what its index says is due: neither may run a gate again while the worker
/// that has the deployment is running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_under_way_is_not_run_again_by_a_redelivery_or_the_sweep() -> Result<()> {
    let w = world().await?;
    let spec = spec("2", "AllAtOnce", Some("greeter-pre-ok"), None);
    let (hold, first) = w.held_at_its_first_gate("once", spec).await?;

    // The stream's record of the new deployment, delivered again.
    let again = w.engine.arrived("once").await?;
    assert!(
        matches!(again.phase, Phase::PreTraffic { step: 0 }),
        "{:?}",
        again.phase
    );
    // A sweep that listed it before the worker saved its gate.
    assert_eq!(w.engine.resume_if_due("once").await?, None);
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![],
        "the gate ran while held"
    );

    hold.release.notify_one();
    tokio::time::timeout(DEADLINE, first)
        .await
        .context("the held worker did not finish")???;
    let done = w.run_to_end(&["once"]).await?;
    assert_eq!(done[0].phase, Phase::Promoted);
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![("PreTraffic".to_owned(), 1, 100.0)],
        "the gate ran once"
    );
    Ok(())
}

/// A worker that finds the control-plane budget spoken for further ahead
/// than it waits hands the deployment back to the queue, delayed until the
/// budget is near: the queue alone, with no sweep, finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_out_of_budget_is_handed_back_and_finished_without_the_sweep() -> Result<()> {
    let w = world().await?;
    // A worker that waits for no slot, and a budget spoken for 3 s ahead
    // by a caller that takes a second a slot: three writes, quick enough on
    // a busy machine that the slots are still ahead when the worker asks.
    let ddb = aws_sdk_dynamodb::Client::new(&w.stack.sdk_config().await);
    let table = w.stack.var("SLUICE_RESOURCE_STATE_TABLE").to_owned();
    let budget = Budget::new(ddb.clone(), table.clone(), 10, Duration::ZERO);
    let others = Budget::new(ddb, table, 1, sluice::budget::LONGEST_WAIT);
    for _ in 0..3 {
        others.reserve(chrono::Utc::now()).await?;
    }
    let starved = w.engine.with_cloud(Checkpointed {
        inner: AwsCloud {
            budget,
            ..w.engine.cloud().inner.clone()
        },
        faults: None,
    });
    let failed = starved
        .start(
            "starved",
            spec("2", "AllAtOnce", Some("greeter-pre-ok"), None),
        )
        .await;
    assert!(
        matches!(failed, Err(EngineError::OutOfBudget { .. })),
        "{failed:?}"
    );
    let saved = w.engine.store().load("starved").await?.deployment;
    assert_eq!(saved.phase, Phase::Created);

    let done = w.run_to_end(&["starved"]).await?;
    assert_eq!(done[0].phase, Phase::Promoted);
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![("PreTraffic".to_owned(), 1, 100.0)]
    );
    Ok(())
}

/// The gate a timer starts (the next step's PreTraffic) is the timer
/// worker's alone: the bake's end is saved before the gate runs, so the
/// sweep does not find the step due and a timer delivered again runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_a_timer_started_is_not_run_again_by_a_redelivery_or_the_sweep() -> Result<()> {
    let w = world().await?;
    w.engine
        .start(
            "timed",
            spec("2", "linear:50:1s", Some("greeter-pre-ok"), None),
        )
        .await?;
    let message = wait_for("the bake's timer", DEADLINE, || async {
        Ok(w.take_timers().await?.into_iter().find_map(|m| match m {
            QueueMessage::Timer(t) if t.deployment_id == "timed" => Some(t),
            _ => None,
        }))
    })
    .await?;
    let hold = hold_once(|p| {
        matches!(
            p,
            FaultPoint::Before {
                command: Command::RunGate { step: 1, .. },
                ..
            }
        )
    });
    let worker = w
        .engine
        .with_cloud(w.engine.cloud().with(hold.hook.clone()));
    let timer = message.clone();
    let first = tokio::spawn(async move { worker.timer(&timer).await });
    tokio::time::timeout(DEADLINE, hold.reached.notified())
        .await
        .context("the timer's worker did not reach the gate")?;

    let saved = w.engine.store().load("timed").await?.deployment;
    assert_eq!(
        saved.phase,
        Phase::PreTraffic { step: 1 },
        "saved before the gate"
    );
    assert_eq!(w.engine.resume_if_due("timed").await?, None);
    let again = w.engine.timer(&message).await?;
    assert_eq!(again.phase, Phase::PreTraffic { step: 1 });
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![("PreTraffic".to_owned(), 1, 50.0)],
        "the second step's gate ran while held"
    );

    hold.release.notify_one();
    tokio::time::timeout(DEADLINE, first)
        .await
        .context("the held worker did not finish")???;
    let done = w.run_to_end(&["timed"]).await?;
    assert_eq!(done[0].phase, Phase::Promoted);
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![
            ("PreTraffic".to_owned(), 1, 50.0),
            ("PreTraffic".to_owned(), 2, 100.0)
        ],
        "each step's gate ran once"
    );
    Ok(())
}

impl World {
    /// More aliases of the greeter, each serving version 1.
    async fn create_aliases_on_1(&self, aliases: &[impl AsRef<str>]) -> Result<()> {
        for alias in aliases {
            self.lambda
                .create_alias()
                .function_name("greeter")
                .name(alias.as_ref())
                .function_version("1")
                .send()
                .await?;
        }
        Ok(())
    }

    /// Waits until deployment `id`'s saved phase is one `reached` wants, as
    /// the stack's functions move it; says what it waited for and the
    /// stack's log if it never is.
    async fn wait_phase(
        &self,
        id: &str,
        what: &str,
        reached: impl Fn(&Phase) -> bool,
    ) -> Result<Deployment> {
        wait_for(&format!("{id}: {what}"), DEADLINE, || async {
            let d = self.engine.store().load(id).await?.deployment;
            Ok(reached(&d.phase).then_some(d))
        })
        .await
        .with_context(|| self.stack.log_tail())
    }

    /// What an on-call engineer does in the console: sets the alias by hand.
    /// Returns the revision it left.
    async fn set_alias_by_hand(&self, version: &str, weights: &[(&str, f64)]) -> Result<String> {
        let routing = aws_sdk_lambda::types::AliasRoutingConfiguration::builder()
            .set_additional_version_weights(Some(
                weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            ))
            .build();
        let written = self
            .lambda
            .update_alias()
            .function_name("greeter")
            .name("live")
            .function_version(version)
            .routing_config(routing)
            .send()
            .await?;
        Ok(written.revision_id().context("revision")?.to_owned())
    }

    async fn alias_revision(&self) -> Result<String> {
        let a = self.live_alias().await?;
        Ok(a.revision_id().context("revision")?.to_owned())
    }

    /// Plays the timer queue until the deployment's saved phase is what `done` wants.
    async fn run_until(&self, id: &str, done: impl Fn(&Phase) -> bool) -> Result<Deployment> {
        let until = Instant::now() + DEADLINE;
        loop {
            let d = self.engine.store().load(id).await?.deployment;
            if done(&d.phase) {
                return Ok(d);
            }
            anyhow::ensure!(Instant::now() < until, "{id} stayed in {:?}", d.phase);
            for message in self.take_timers().await? {
                self.engine.run_queued(&message).await?;
            }
        }
    }
}

/// An on-call engineer changes the alias by hand mid-deployment (the
/// console's emergency rollback, a weight of their own). Sluice never writes
/// over it: by default the deployment ends as rolled back with the alias as
/// found; set to freeze, it waits for an operator, and resume goes on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_made_by_hand_is_never_written_over() -> Result<()> {
    let w = world().await?;
    let baking = w
        .engine
        .start("console", spec("2", "linear:50:2s", None, None))
        .await?;
    assert!(
        matches!(baking.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        baking.phase
    );
    let by_hand = w.set_alias_by_hand("1", &[]).await?;
    let ended = w.run_until("console", Phase::is_terminal).await?;
    assert_eq!(
        ended.phase,
        Phase::RolledBack {
            reason: "the alias was changed outside Sluice: it serves version 1".into()
        }
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    assert_eq!(
        w.alias_revision().await?,
        by_hand,
        "the alias was written after the hand"
    );
    let timeline: Vec<String> = w
        .engine
        .store()
        .events("console")
        .await?
        .into_iter()
        .map(|e| e.message)
        .collect();
    let said = format!(
        "the alias was changed outside Sluice before step 2: it serves version 1 (revision {by_hand}); taken as an operator's rollback, the alias left as found"
    );
    assert!(timeline.contains(&said), "{timeline:#?}");
    assert_eq!(w.live_lock_holder().await?, None);

    // Frozen instead: the alias stays as the person left it until an operator says.
    let mut freeze = spec("3", "linear:50:2s", None, None);
    freeze.on_manual_change = OnManualChange::Freeze;
    w.engine.start("frozen", freeze).await?;
    let by_hand = w.set_alias_by_hand("1", &[("3", 0.2)]).await?;
    let frozen = w
        .run_until("frozen", |p| matches!(p, Phase::Frozen { .. }))
        .await?;
    assert_eq!(
        frozen.phase,
        Phase::Frozen {
            step: 1,
            found: "version 1 with 20% on version 3".into()
        }
    );
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![("3".to_owned(), 0.2)])
    );
    assert_eq!(w.alias_revision().await?, by_hand);
    assert_eq!(
        w.engine.resume_if_due("frozen").await?,
        None,
        "the sweep leaves it"
    );
    assert_eq!(w.live_lock_holder().await?.as_deref(), Some("frozen"));
    w.engine.apply("frozen", Input::Resume).await?;
    let done = w.run_to_end(&["frozen"]).await?;
    assert_eq!(done[0].phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));
    Ok(())
}

/// A deployment after one of Sluice's starts from the alias as that one
/// left it: no `GetAlias`, one `UpdateAlias` a shift. A person's change in
/// between is seen: another version by `GetFunction` (the deployment reads
/// the alias and starts from what the person left), a change that moved
/// no traffic by Lambda refusing the first write (written again), a split
/// the same way (taken as the person's, never written over).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_starts_from_the_alias_as_the_last_one_left_it() -> Result<()> {
    let w = world().await?;
    let config = "linear:50:1s";
    let calls = || async {
        let requests = quota_requests(&w).await?;
        let count = |operation: &str| {
            requests["by_operation"][operation]["allowed"]
                .as_u64()
                .unwrap_or(0)
        };
        anyhow::Ok((count("GetAlias"), count("UpdateAlias")))
    };
    let run = |id: &'static str, version: &'static str| {
        let w = &w;
        async move {
            w.engine
                .start(id, spec(version, config, None, None))
                .await?;
            w.run_until(id, Phase::is_terminal).await
        }
    };
    assert_eq!(run("first", "2").await?.phase, Phase::Promoted);

    let before = calls().await?;
    let second = run("second", "3").await?;
    let after = calls().await?;
    assert_eq!(second.phase, Phase::Promoted);
    assert_eq!(second.from_version.as_deref(), Some("2"));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 2),
        "(GetAlias, UpdateAlias) for two shifts"
    );
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));

    // A person points the alias elsewhere: read, and started from.
    w.set_alias_by_hand("1", &[]).await?;
    let before = calls().await?;
    let third = run("third", "2").await?;
    let after = calls().await?;
    assert_eq!(third.phase, Phase::Promoted);
    assert_eq!(third.from_version.as_deref(), Some("1"));
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 2));

    // A change that moves no traffic (a description edited): the first
    // write is refused, the alias read, and written again.
    w.lambda
        .update_alias()
        .function_name("greeter")
        .name("live")
        .description("edited by hand")
        .send()
        .await?;
    let before = calls().await?;
    let edited = run("edited", "3").await?;
    let after = calls().await?;
    assert_eq!(edited.phase, Phase::Promoted, "{:?}", edited.phase);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 3));

    // A person splits it, the version unchanged: the first write is
    // refused, and the split is theirs.
    let by_hand = w.set_alias_by_hand("3", &[("1", 0.2)]).await?;
    let split = run("split", "2").await?;
    assert_eq!(
        split.phase,
        Phase::RolledBack {
            reason:
                "the alias was changed outside Sluice: it serves version 3 with 20% on version 1"
                    .into()
        }
    );
    assert_eq!(
        w.alias().await?,
        ("3".to_owned(), vec![("1".to_owned(), 0.2)])
    );
    assert_eq!(w.alias_revision().await?, by_hand, "never written over");

    // Left as found, so the next one reads the alias again (and is refused
    // for the split, as any deployment is).
    let refused = run("refused", "2").await?;
    assert!(
        matches!(&refused.phase, Phase::FailedToStart { reason } if reason.contains("split")),
        "{:?}",
        refused.phase
    );

    // The version left is the one asked for, so there is no write to find
    // a split: the alias is read.
    w.set_alias_by_hand("3", &[]).await?;
    assert_eq!(run("whole", "2").await?.phase, Phase::Promoted);
    w.set_alias_by_hand("2", &[("1", 0.2)]).await?;
    let same = run("same", "2").await?;
    assert!(
        matches!(&same.phase, Phase::FailedToStart { reason } if reason.contains("split")),
        "{:?}",
        same.phase
    );
    assert_eq!(
        w.alias().await?,
        ("2".to_owned(), vec![("1".to_owned(), 0.2)])
    );
    assert_eq!(w.live_lock_holder().await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alias_that_changes_under_every_write_fails_the_worker_and_resume_repairs_it()
-> Result<()> {
    let w = world().await?;
    // Once the first shift is recorded, someone else writes the alias (its
    // description, not its traffic) before each write of this worker.
    let meddle = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lambda = w.lambda.clone();
    let on = meddle.clone();
    let meddling = w
        .engine
        .with_cloud(w.engine.cloud().with(Arc::new(move |point| {
            let lambda = lambda.clone();
            let meddles =
                on.load(Ordering::SeqCst) && matches!(point, FaultPoint::AliasWrite { .. });
            Box::pin(async move {
                if meddles {
                    lambda
                        .update_alias()
                        .function_name("greeter")
                        .name("live")
                        .description(uuid::Uuid::new_v4().to_string())
                        .send()
                        .await
                        .expect("the meddling write");
                }
                false
            })
        })));
    let baking = meddling
        .start("meddled", spec("2", "linear:50:1s", None, None))
        .await?;
    assert!(
        matches!(baking.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        baking.phase
    );
    meddle.store(true, Ordering::SeqCst);
    let until = Instant::now() + DEADLINE;
    let failed = 'played: loop {
        anyhow::ensure!(Instant::now() < until, "the worker never failed");
        for message in w.take_timers().await? {
            if let Err(e) = meddling.run_queued(&message).await {
                break 'played e;
            }
        }
    };
    assert!(
        failed
            .to_string()
            .contains("changed under every one of 5 attempts"),
        "{failed}"
    );
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![("2".to_owned(), 0.5)])
    );
    let saved = w.engine.store().load("meddled").await?.deployment;
    assert!(
        matches!(saved.phase, Phase::Shifting { step: 1 }),
        "{:?}",
        saved.phase
    );

    // Left alone, the sweep's repair makes the write the saved phase wants.
    let repaired = w.engine.resume("meddled").await?;
    assert_eq!(repaired.phase, Phase::Promoted);
    assert_eq!(w.alias().await?, ("2".to_owned(), vec![]));
    Ok(())
}

// Faults of the real stack: DynamoDB writes refused or answered into the
// void, the Lambda API throttled, moto or sluice-local stopped mid-way. In
// each, the deployment converges, its timeline is the one a calm run writes
// (nothing lost, nothing done twice) and the alias is left whole.

const FAULT_CONFIG: &str = "steps:10@1s,50@1s,100";

/// A deployment of `version` on the fault tests' schedule, with hooks that pass.
fn fault_spec(version: &str) -> DeploymentSpec {
    spec(
        version,
        FAULT_CONFIG,
        Some("greeter-pre-ok"),
        Some("greeter-post-ok"),
    )
}

/// A calm run's timeline: what every faulty run must end up with.
async fn calm_timeline(w: &World) -> Result<Vec<EventKind>> {
    w.engine.start("calm", fault_spec("2")).await?;
    w.run_to_end(&["calm"]).await?;
    timeline_kinds(w, "calm").await
}

/// What happened, in order; a line saying a step started late says when,
/// not what, and is left out.
async fn timeline_kinds(w: &World, id: &str) -> Result<Vec<EventKind>> {
    Ok(w.engine
        .store()
        .events(id)
        .await?
        .iter()
        .map(|e| e.kind)
        .filter(|kind| *kind != EventKind::Late)
        .collect())
}

impl World {
    /// Drives `id` with `faulty` until it ends, as the shifter's triggers
    /// would: timers from the queue, and, where a worker failed, the sweep's
    /// repair (at once, rather than after its grace). Returns the deployment
    /// and the errors the workers met.
    async fn run_through_faults(
        &self,
        faulty: &TestEngine,
        id: &str,
    ) -> Result<(Deployment, Vec<String>)> {
        let until = Instant::now() + Duration::from_secs(120);
        let mut errors = Vec::new();
        loop {
            let d = self.engine.store().load(id).await?.deployment;
            if d.phase.is_terminal() {
                return Ok((d, errors));
            }
            if Instant::now() > until {
                bail!("{id} did not finish: {:?}; errors: {errors:?}", d.phase);
            }
            let waiting =
                matches!(d.phase, Phase::Baking { until, .. } if until > chrono::Utc::now());
            if !waiting {
                if let Err(e) = faulty.resume(id).await {
                    errors.push(e.to_string());
                }
                continue;
            }
            for message in self.take_timers().await? {
                if let Err(e) = faulty.run_queued(&message).await {
                    errors.push(e.to_string());
                }
            }
        }
    }
}

/// Fails DynamoDB writes in turn: one refused before it is sent, then,
/// some writes later, one applied whose answer is lost.
#[derive(Debug, Clone, Default)]
struct FailWrites {
    writes: Arc<AtomicUsize>,
    injected: Arc<std::sync::Mutex<Vec<String>>>,
}

#[derive(Debug, Clone)]
struct LoseAnswer;

impl aws_smithy_types::config_bag::Storable for LoseAnswer {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

const WRITES: [&str; 4] = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"];

impl aws_smithy_runtime_api::client::interceptors::Intercept for FailWrites {
    fn name(&self) -> &'static str {
        "fail-writes"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_default();
        if !WRITES.contains(&operation.as_str()) {
            return Ok(());
        }
        match self.writes.fetch_add(1, Ordering::SeqCst) % 6 {
            2 => {
                self.injected
                    .lock()
                    .unwrap()
                    .push(format!("{operation} refused"));
                Err("injected: the write was refused".into())
            }
            5 => {
                self.injected
                    .lock()
                    .unwrap()
                    .push(format!("{operation} answer lost"));
                cfg.interceptor_state().store_put(LoseAnswer);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn read_after_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if cfg.load::<LoseAnswer>().is_some() {
            return Err("injected: the write was applied but its answer lost".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_writes_refused_or_unanswered_are_repaired_without_doing_anything_twice()
-> Result<()> {
    let w = world().await?;
    let calm = calm_timeline(&w).await?;
    let config = w.stack.sdk_config().await;
    let faults = FailWrites::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(faults.clone())
            .build(),
    );
    let faulty = w.engine.with_store(sluice::store::Store::new(
        dynamodb,
        w.stack.var("SLUICE_RESOURCE_STATE_TABLE"),
        chrono::Duration::days(1),
    ));
    let mut starts = 0;
    // The operator tries again until the deployment exists.
    while let Err(sluice::store::StoreError::NotFound(_)) = w.engine.store().load("faulty").await {
        starts += 1;
        anyhow::ensure!(starts < 10, "the deployment was never created");
        let _ = faulty.start("faulty", fault_spec("3")).await;
    }
    let (d, errors) = w.run_through_faults(&faulty, "faulty").await?;
    let injected = faults.injected.lock().unwrap().clone();
    assert!(
        injected.iter().any(|f| f.ends_with("refused"))
            && injected.iter().any(|f| f.ends_with("answer lost")),
        "{injected:?}"
    );
    assert!(!errors.is_empty(), "the workers met the faults");
    assert_eq!(d.phase, Phase::Promoted, "{errors:?}");
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));
    assert_eq!(timeline_kinds(&w, "faulty").await?, calm, "{injected:?}");
    // A lock whose release was refused is freed by the next deployment.
    let next = w
        .engine
        .start("next", spec("2", "AllAtOnce", None, None))
        .await?;
    if matches!(next.phase, Phase::Queued { .. }) {
        w.engine.resume("next").await?;
    }
    let [next] = w.run_to_end(&["next"]).await?.try_into().expect("one");
    assert_eq!(next.phase, Phase::Promoted);
    Ok(())
}

/// The local Lambda API's throttle: how many requests are left to refuse.
async fn throttle(w: &World, requests: Option<u32>) -> Result<u64> {
    throttle_only(w, requests, None).await
}

/// `throttle`, refusing only `operation`'s requests if named.
async fn throttle_only(w: &World, requests: Option<u32>, operation: Option<&str>) -> Result<u64> {
    let url = throttle_url(w);
    let only = operation.map_or(String::new(), |o| format!("&operation={o}"));
    let http = reqwest::Client::new();
    let answer: Value = match requests {
        Some(n) => {
            http.post(format!("{url}?requests={n}{only}"))
                .send()
                .await?
        }
        None => http.get(url).send().await?,
    }
    .error_for_status()?
    .json()
    .await?;
    anyhow::ensure!(answer["operation"].as_str() == operation, "{answer}");
    answer["throttle"].as_u64().context("throttle count")
}

fn throttle_url(w: &World) -> String {
    format!(
        "{}/_sluice/throttle",
        w.stack.var("AWS_ENDPOINT_URL_LAMBDA")
    )
}

/// Deployment `id` of version 3 on the fault tests' schedule, with hooks
/// that pass, started and baking its first step.
async fn started_for_faults(w: &World, id: &str) -> Result<Deployment> {
    let d = w.engine.start(id, fault_spec("3")).await?;
    anyhow::ensure!(
        matches!(d.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        d.phase
    );
    Ok(d)
}

/// A shift Lambda keeps refusing as it would a passing fault (every
/// `UpdateAlias` throttled, past the worker's own attempts and its
/// hand-backs through the timer queue 1, 2, 4, 8 and 16 s later): the
/// deployment rolls back rather than wait half-shifted for the sweep, and
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shift_throttled_past_its_retries_rolls_back_rather_than_wait_half_shifted() -> Result<()>
{
    let w = world().await?;
    let id = "throttled-for-good";
    started_for_faults(&w, id).await?;
    let refused = reqwest::Client::new()
        .post(format!(
            "{}?requests=5&operation=update-alias",
            throttle_url(&w)
        ))
        .send()
        .await?;
    assert_eq!(refused.status(), 400, "not an operation's name");
    assert_eq!(
        throttle_only(&w, Some(1000), Some("UpdateAlias")).await?,
        1000
    );
    // The timer queue played as the shifter does: the bake's end, then
    // each hand-back, until the rollback is decided.
    let rolling_back = wait_for("the rollback decided", Duration::from_secs(120), || async {
        for message in w.take_timers().await? {
            // Each attempt fails (throttled): the phase says what came of it.
            let _ = w.engine.run_queued(&message).await;
        }
        let d = w.engine.store().load(id).await?.deployment;
        Ok(match d.phase {
            Phase::RollingBack { .. } => Some(d),
            _ => None,
        })
    })
    .await?;
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![("3".to_owned(), 0.1)]),
        "the alias held at the last step that landed"
    );
    // The first write and its five hand-backs at least, each refused.
    let refused = 1000 - throttle_only(&w, None, Some("UpdateAlias")).await?;
    assert!(refused >= 6, "{refused} UpdateAlias refused");
    // Lambda takes writes again: the sweep's repair lands the rollback.
    assert_eq!(throttle(&w, Some(0)).await?, 0);
    w.engine.resume(id).await?;
    let d = w.engine.store().load(id).await?.deployment;
    let Phase::RolledBack { reason } = &d.phase else {
        panic!("{:?} (was {:?})", d.phase, rolling_back.phase);
    };
    assert!(
        reason.contains("the shift of greeter:live to 50% failed")
            && reason.contains("TooManyRequests")
            && reason.contains("(after 5 retries)"),
        "{reason}"
    );
    assert_eq!(w.alias().await?, ("1".to_owned(), vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_lambda_api_delays_the_rollout_but_skips_and_repeats_nothing() -> Result<()> {
    let w = world().await?;
    let calm = calm_timeline(&w).await?;
    started_for_faults(&w, "throttled").await?;
    let refused = reqwest::Client::new()
        .post(format!("{}?requests=many", throttle_url(&w)))
        .send()
        .await?;
    assert_eq!(refused.status(), 400, "a count that is not a number");
    assert_eq!(throttle(&w, None).await?, 0, "and nothing was set");
    // The next gates and shifts meet a Lambda API refusing requests.
    assert_eq!(throttle(&w, Some(12)).await?, 12);
    let (d, errors) = w.run_through_faults(&w.engine, "throttled").await?;
    assert_eq!(throttle(&w, None).await?, 0, "every throttle was met");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("throttled") || e.contains("TooManyRequests")),
        "{errors:?}"
    );
    assert_eq!(d.phase, Phase::Promoted, "{errors:?}");
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));
    assert_eq!(timeline_kinds(&w, "throttled").await?, calm);
    Ok(())
}

/// Stops a process until dropped: a service that stops answering.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Self {
        assert!(pid > 0);
        // SAFETY: kill(2) on a child process of this test.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moto_stopped_mid_deployment_fails_the_worker_in_time_and_the_sweep_finishes_it()
-> Result<()> {
    let w = world().await?;
    let calm = calm_timeline(&w).await?;
    // A DynamoDB client with the functions' timeouts.
    let config = w
        .stack
        .sdk_config()
        .await
        .to_builder()
        .timeout_config(sluice::aws::api_timeouts())
        .build();
    let faulty = w.engine.with_store(sluice::store::Store::new(
        aws_sdk_dynamodb::Client::new(&config),
        w.stack.var("SLUICE_RESOURCE_STATE_TABLE"),
        chrono::Duration::days(1),
    ));
    faulty.start("outage", fault_spec("3")).await?;
    {
        let _down = Stopped::stop(w.stack.moto_pid());
        let started = Instant::now();
        let failed = faulty.resume("outage").await;
        assert!(matches!(failed, Err(EngineError::Store(_))), "{failed:?}");
        assert!(
            started.elapsed() < sluice::aws::API_TIMEOUT + Duration::from_secs(5),
            "the worker gave up within the client's timeout"
        );
    }
    let (d, errors) = w.run_through_faults(&faulty, "outage").await?;
    assert_eq!(d.phase, Phase::Promoted, "{errors:?}");
    assert_eq!(w.alias().await?, ("3".to_owned(), vec![]));
    assert_eq!(timeline_kinds(&w, "outage").await?, calm);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lambda_api_that_stops_answering_at_a_gate_fails_it_and_the_rollback_completes_later()
-> Result<()> {
    let w = world().await?;
    // A Lambda client that gives up on an attempt after 2 s.
    let lambda = aws_sdk_lambda::Client::from_conf(
        w.lambda
            .config()
            .to_builder()
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .build(),
            )
            .build(),
    );
    let faulty = w.engine.with_cloud(Checkpointed {
        inner: AwsCloud {
            lambda,
            ..w.engine.cloud().inner.clone()
        },
        faults: None,
    });
    let d = faulty.start("cut-off", fault_spec("2")).await?;
    let Phase::Baking { step: 0, until } = d.phase else {
        bail!("{:?}", d.phase)
    };
    {
        let _down = Stopped::stop(w.stack.local_pid());
        wait_for("the first bake to end", DEADLINE, || async {
            Ok((chrono::Utc::now() >= until).then_some(()))
        })
        .await?;
        // The next gate's hook cannot be reached: the gate fails, and the
        // rollback's alias write cannot be sent either.
        let failed = faulty.resume("cut-off").await;
        assert!(matches!(failed, Err(EngineError::Aws(_))), "{failed:?}");
        let saved = w.engine.store().load("cut-off").await?.deployment;
        assert!(
            matches!(&saved.phase, Phase::RollingBack { reason } if reason.contains("could not run")),
            "{:?}",
            saved.phase
        );
    }
    let (d, errors) = w.run_through_faults(&faulty, "cut-off").await?;
    assert!(matches!(d.phase, Phase::RolledBack { .. }), "{errors:?}");
    assert_eq!(
        w.alias().await?,
        ("1".to_owned(), vec![]),
        "whole on the old version"
    );
    Ok(())
}

/// The functions' clients give up on an AWS API call that stops answering
/// (`aws::api_timeouts`), but an invoke runs as long as its function does, or
/// as long as its caller's own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_calls_give_up_in_time_and_invokes_run_as_long_as_their_function() -> Result<()> {
    let stack = start_stack(None, &[], 1.0)?;
    let role = function_role(&stack).await?;
    let local = stack.lambda().await;
    create_function(
        &local,
        &role,
        "slow",
        greeter_zip("r1")?,
        &[("GREETER_MODE", "slow"), ("GREETER_DELAY_MS", "7000")],
        10,
    )
    .await?;
    let lambda = aws_sdk_lambda::Client::from_conf(
        local
            .config()
            .to_builder()
            .timeout_config(sluice::aws::api_timeouts())
            .build(),
    );
    assert!(Duration::from_secs(7) > sluice::aws::API_ATTEMPT_TIMEOUT);
    let ran = invoke(&lambda, "slow", b"{}".to_vec(), None).await?;
    assert!(matches!(ran, Invocation::Answered(_)), "{ran:?}");
    let cut = invoke(
        &lambda,
        "slow",
        b"{}".to_vec(),
        Some(Duration::from_secs(2)),
    )
    .await?;
    assert!(
        matches!(&cut, Invocation::NotRun(reason) if reason.contains("TimeoutError")),
        "{cut:?}"
    );
    {
        let _down = Stopped::stop(stack.local_pid());
        let started = Instant::now();
        let failed = lambda
            .get_function_configuration()
            .function_name("slow")
            .send()
            .await;
        assert!(failed.is_err(), "{failed:?}");
        assert!(
            started.elapsed() < sluice::aws::API_TIMEOUT + Duration::from_secs(5),
            "the call gave up within the client's timeout"
        );
    }
    lambda
        .get_function_configuration()
        .function_name("slow")
        .send()
        .await
        .context("answered again once sluice-local runs")?;
    Ok(())
}

/// A deploy from a zip meets Lambda as it is: the function may be mid-update
/// (Lambda refuses to publish then), the new version starts `Pending`, and
/// the control plane may throttle. The engine waits for the update and the
/// version, and a throttled publish leaves the deployment to be retried,
/// never failed; an artifact that is not there fails it with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zip_deploy_waits_out_updates_and_pending_versions_and_survives_throttling() -> Result<()>
{
    let w = world().await?;
    let bucket = w.stack.var("SLUICE_RESOURCE_ARTIFACT_BUCKET").to_owned();
    let s3 = aws_sdk_s3::Client::new(&w.stack.sdk_config().await);
    s3.put_object()
        .bucket(&bucket)
        .key("builds/greeter-r4.zip")
        .body(greeter_zip("r4")?.into())
        .send()
        .await?;
    let from_zip = |key: &str| DeploymentSpec {
        source: VersionSource::Artifact {
            bucket: bucket.clone(),
            key: key.to_owned(),
            object_version: None,
        },
        ..spec("unused", "AllAtOnce", Some("greeter-pre-ok"), None)
    };

    // Someone else's update is in progress when the deployment starts.
    w.lambda
        .update_function_configuration()
        .function_name("greeter")
        .description("an operator's change")
        .send()
        .await?;
    let d = w
        .engine
        .start("zip", from_zip("builds/greeter-r4.zip"))
        .await?;
    assert_eq!(d.to_version.as_deref(), Some("4"), "{:?}", d.phase);
    assert_eq!(
        d.phase,
        Phase::Promoted,
        "the PreTraffic hook could invoke the new version"
    );
    assert_eq!(w.alias().await?, ("4".to_owned(), vec![]));
    let answered = w
        .lambda
        .invoke()
        .function_name("greeter")
        .qualifier("live")
        .payload(aws_sdk_lambda::primitives::Blob::new(r#"{"name":"Ada"}"#))
        .send()
        .await?;
    assert_eq!(answered.executed_version(), Some("4"));

    // A missing artifact will not appear by retrying: failed, with the reason.
    let d = w
        .engine
        .start("missing", from_zip("builds/nothing.zip"))
        .await?;
    assert!(
        matches!(&d.phase, Phase::FailedToStart { reason } if reason.contains("builds/nothing.zip")),
        "{:?}",
        d.phase
    );

    // The control plane throttles every request for a while: the start
    // fails the worker, not the deployment, and a later resume finishes it.
    s3.put_object()
        .bucket(&bucket)
        .key("builds/greeter-r5.zip")
        .body(greeter_zip("r5")?.into())
        .send()
        .await?;
    throttle(&w, Some(1000)).await?;
    let err = w
        .engine
        .start("throttled", from_zip("builds/greeter-r5.zip"))
        .await
        .expect_err("every call throttled");
    assert!(format!("{err}").contains("TooManyRequests"), "{err}");
    let d = w.engine.store().load("throttled").await?.deployment;
    assert_eq!(d.phase, Phase::Created, "still to be started");
    throttle(&w, Some(0)).await?;
    let d = w.engine.resume("throttled").await?;
    assert_eq!(d.phase, Phase::Promoted, "{:?}", d.phase);
    assert_eq!(w.alias().await?, ("5".to_owned(), vec![]));

    // GetFunction's own quota held to 1 a second, as when many workers
    // watch their windows at once: a throttled read of the update's or the
    // version's state is a wait, not a failure.
    s3.put_object()
        .bucket(&bucket)
        .key("builds/greeter-r6.zip")
        .body(greeter_zip("r6")?.into())
        .send()
        .await?;
    let quota = format!("{}/_sluice/quota", w.stack.var("AWS_ENDPOINT_URL_LAMBDA"));
    let get_function_throttled = || async {
        let requests = quota_requests(&w).await?;
        anyhow::Ok(requests["get_function"]["throttled"].as_u64().unwrap_or(0))
    };
    let before = get_function_throttled().await?;
    let http = reqwest::Client::new();
    http.post(format!("{quota}?get_function=1"))
        .send()
        .await?
        .error_for_status()?;
    let d = w
        .engine
        .start("reads-throttled", from_zip("builds/greeter-r6.zip"))
        .await;
    http.post(format!("{quota}?get_function=100"))
        .send()
        .await?
        .error_for_status()?;
    let d = d?;
    assert_eq!(d.phase, Phase::Promoted, "{:?}", d.phase);
    assert_eq!(w.alias().await?, ("6".to_owned(), vec![]));
    assert!(
        get_function_throttled().await? > before,
        "the state reads were throttled"
    );
    Ok(())
}

/// Sets the local Lambda API's control-plane rate, requests per second.
async fn squeeze_control_plane(w: &World, rate: &str) -> Result<reqwest::Response> {
    let url = format!(
        "{}/_sluice/quota?control_plane={rate}",
        w.stack.var("AWS_ENDPOINT_URL_LAMBDA")
    );
    Ok(reqwest::Client::new().post(url).send().await?)
}

/// Lambda's own quota back, so that the test's reads after a fleet are not
/// throttled by the squeeze it was run under.
async fn lift_control_plane(w: &World) -> Result<()> {
    squeeze_control_plane(w, "15").await?.error_for_status()?;
    Ok(())
}

/// The control plane's throttled and allowed counts so far.
async fn quota_counts(w: &World) -> Result<Value> {
    Ok(quota_requests(w).await?["control_plane"].clone())
}

/// Lambda's request counts so far, by quota and by operation, all callers.
async fn quota_requests(w: &World) -> Result<Value> {
    let url = format!("{}/_sluice/quota", w.stack.var("AWS_ENDPOINT_URL_LAMBDA"));
    let answer: Value = reqwest::get(url).await?.error_for_status()?.json().await?;
    Ok(answer["requests"].clone())
}

impl World {
    /// Starts a deployment of version 2 on each alias (two steps, gated
    /// before and after each shift) and waits up to `deadline` for all to
    /// be promoted.
    async fn run_fleet(&self, aliases: &[String], deadline: Duration) -> Result<()> {
        for alias in aliases {
            let mut s = spec(
                "2",
                "linear:50:1s",
                Some("greeter-pre-ok"),
                Some("greeter-post-ok"),
            );
            s.alias = alias.clone();
            let (d, _) = Deployment::create(alias, s, chrono::Utc::now());
            self.engine.store().create(&d, &[]).await?;
        }
        let done = wait_for("every deployment to finish", deadline, || async {
            let mut done = Vec::new();
            for alias in aliases {
                let d = self.engine.store().load(alias).await?.deployment;
                if !d.phase.is_terminal() {
                    return Ok(None);
                }
                done.push(d);
            }
            Ok(Some(done))
        })
        .await
        .with_context(|| self.stack.log_tail())?;
        for d in &done {
            assert_eq!(d.phase, Phase::Promoted, "{}: {:?}", d.id, d.phase);
        }
        Ok(())
    }

    /// Each fleet alias whole on version 2, and every shift gated: `run_fleet`'s
    /// end, read apart so that its reads are not counted with the fleet's.
    async fn check_fleet(&self, aliases: &[String]) -> Result<()> {
        for alias in aliases {
            let a = self
                .lambda
                .get_alias()
                .function_name("greeter")
                .name(alias)
                .send()
                .await?;
            assert_eq!(a.function_version(), Some("2"), "{alias}");
            assert!(
                a.routing_config()
                    .is_none_or(|r| r.additional_version_weights().is_none_or(|w| w.is_empty()))
            );
        }
        // Both steps of every deployment were gated before and after their shift.
        let pre = self.hook_calls("greeter-pre-ok");
        let post = self.hook_calls("greeter-post-ok");
        let gates = 2 * aliases.len();
        assert_eq!(
            (pre.len(), post.len()),
            (gates, gates),
            "pre {pre:?} post {post:?}"
        );
        Ok(())
    }
}

/// The same fleet with Sluice's budget (1 a second) under the control
/// plane's rate (3): its workers, however many, take slots of the budget
/// in turn, and Lambda throttles none of their calls. The budget paces when
/// calls are sent, not when they arrive: the headroom covers a machine so
/// busy that calls sent a second apart arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_within_its_control_plane_budget_is_never_throttled() -> Result<()> {
    let w = shifter_world_with(&[("ControlPlaneBudget", "1")]).await?;
    let aliases: Vec<String> = (0..8).map(|i| format!("fleet-{i}")).collect();
    w.create_aliases_on_1(&aliases).await?;
    squeeze_control_plane(&w, "3").await?.error_for_status()?;
    let before = quota_counts(&w).await?;
    w.run_fleet(&aliases, Duration::from_secs(240)).await?;
    let after = quota_counts(&w).await?;
    lift_control_plane(&w).await?;
    w.check_fleet(&aliases).await?;
    let count = |c: &Value, what: &str| c[what].as_u64().unwrap_or(0);
    assert_eq!(
        count(&after, "throttled") - count(&before, "throttled"),
        0,
        "{before} → {after}"
    );
    assert!(
        count(&after, "allowed") - count(&before, "allowed") >= 16,
        "two shifts for each of eight deployments: {before} → {after}"
    );
    Ok(())
}

/// A fleet against a control plane held to 2 requests a second, well below
/// what eight deployments at once ask (however slow the machine running
/// them) and below Sluice's budget (10), as when other callers take most of
/// the account's quota: the shifter function's calls are throttled and
/// retried (by the SDK, then handed back to the queue), and no deployment
/// fails for it. Every shift is still gated, and every
/// alias ends whole on its new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_held_to_the_control_plane_quota_is_throttled_yet_all_promoted() -> Result<()> {
    let w = shifter_world().await?;
    let aliases: Vec<String> = (0..8).map(|i| format!("fleet-{i}")).collect();
    w.create_aliases_on_1(&aliases).await?;
    let refused = squeeze_control_plane(&w, "0.5").await?;
    assert_eq!(refused.status(), 400, "a rate below 1 is refused");
    squeeze_control_plane(&w, "2").await?.error_for_status()?;
    let before = quota_counts(&w).await?;

    // A step whose call is still throttled after the SDK's retries is
    // handed back to the queue and taken up again 1 to 16 s later; the
    // deadline leaves room for the sweep's grace (90 s) should a worker die.
    w.run_fleet(&aliases, Duration::from_secs(360)).await?;
    let after = quota_counts(&w).await?;
    lift_control_plane(&w).await?;
    w.check_fleet(&aliases).await?;
    let throttled =
        after["throttled"].as_u64().unwrap_or(0) - before["throttled"].as_u64().unwrap_or(0);
    assert!(throttled > 0, "the quota was met: {before} → {after}");
    println!("control plane under the fleet: {before} → {after}");
    let url = format!("{}/_sluice/quota", w.stack.var("AWS_ENDPOINT_URL_LAMBDA"));
    let report: Value = reqwest::get(url).await?.json().await?;
    let by_operation = &report["requests"]["by_operation"];
    println!("by operation, since the stack started: {by_operation}");
    assert!(
        by_operation["UpdateAlias"]["allowed"].as_u64() >= Some(16),
        "two shifts for each of eight deployments: {by_operation}"
    );
    Ok(())
}

/// The group the release-group tests deploy with the greeter: two more
/// functions of its code, versions 1 to 3, `live` on 1.
const MEMBERS: [&str; 2] = ["worker", "cron"];

impl World {
    async fn add_group_members(&self) -> Result<()> {
        let role = function_role(&self.stack).await?;
        futures::future::try_join_all(
            MEMBERS.map(|name| released_greeter(&self.lambda, &role, name)),
        )
        .await?;
        Ok(())
    }

    /// Each of the group's aliases (the greeter's first) as its primary
    /// version and the new version's weight (0 when whole).
    async fn group_aliases(&self) -> Result<Vec<(String, f64)>> {
        let mut found = Vec::new();
        for name in std::iter::once("greeter").chain(MEMBERS) {
            let a = self
                .lambda
                .get_alias()
                .function_name(name)
                .name("live")
                .send()
                .await?;
            let weight = a
                .routing_config()
                .and_then(|r| r.additional_version_weights())
                .and_then(|w| w.values().next().copied())
                .unwrap_or(0.0);
            found.push((a.function_version().unwrap_or_default().to_owned(), weight));
        }
        Ok(found)
    }
}

/// The greeter to `version` with the two other members to it too.
fn group_spec(version: &str, config: &str, pre: Option<&str>) -> DeploymentSpec {
    let mut grouped = spec(version, config, pre, Some("greeter-post-ok"));
    grouped.group = MEMBERS
        .iter()
        .map(|name| MemberSpec {
            function: (*name).into(),
            alias: "live".into(),
            source: VersionSource::Version(version.into()),
        })
        .collect();
    grouped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_group_moves_in_lockstep_and_rolls_back_as_a_whole() -> Result<()> {
    let w = world().await?;
    w.add_group_members().await?;

    // Promoted in lockstep: after each step, every member's alias has the
    // same weight on its new version.
    let d = w
        .engine
        .start(
            "group",
            group_spec("2", "steps:10@1s,50@1s,100", Some("greeter-pre-ok")),
        )
        .await?;
    assert!(
        matches!(d.phase, Phase::Baking { step: 0, .. }),
        "{:?}",
        d.phase
    );
    assert_eq!(w.group_aliases().await?, vec![("1".to_owned(), 0.1); 3]);
    w.run_until("group", |p| matches!(p, Phase::Baking { step: 1, .. }))
        .await?;
    assert_eq!(w.group_aliases().await?, vec![("1".to_owned(), 0.5); 3]);
    let done = w.run_one_to_end("group").await?;
    assert_eq!(done.phase, Phase::Promoted);
    assert_eq!(w.group_aliases().await?, vec![("2".to_owned(), 0.0); 3]);
    // One gate a step for the whole group, told of every member.
    assert_eq!(
        w.hook_calls("greeter-pre-ok"),
        vec![
            ("PreTraffic".into(), 1, 10.0),
            ("PreTraffic".into(), 2, 50.0),
            ("PreTraffic".into(), 3, 100.0)
        ]
    );
    let request: Value = std::fs::read_dir(w.hooks.path().join("greeter-pre-ok"))?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| -> Result<Value> { Ok(serde_json::from_slice(&std::fs::read(e.path())?)?) })
        .context("a recorded request")??;
    let members: Vec<&str> = request["group"]
        .as_array()
        .context("the group in the hook request")?
        .iter()
        .filter_map(|m| m["function"].as_str())
        .collect();
    assert_eq!(members, MEMBERS);
    for name in std::iter::once("greeter").chain(MEMBERS) {
        let holder = w
            .engine
            .store()
            .lock_holder(&Lock::alias(name, "live"))
            .await?;
        assert_eq!(holder, None, "{name}'s lock released");
    }

    // A PreTraffic gate that fails at step 2 rolls all three back.
    let hook = "group-pre-fails-at-2";
    let dir = w.hooks.path().join(hook);
    std::fs::create_dir_all(&dir)?;
    let reply = |status: &str| {
        format!(r#"{{"status":"{status}","reason":"{hook} says {status}","checks":[]}}"#)
    };
    let replies = format!("[{},{}]", reply("Succeeded"), reply("Failed"));
    let role = function_role(&w.stack).await?;
    let zip = sluice_local::code::bootstrap_zip(&binary("recorder")?, &[]);
    let env = [
        ("RECORDER_DIR", dir.to_str().context("path")?),
        ("RECORDER_REPLIES", replies.as_str()),
    ];
    create_function(&w.lambda, &role, hook, zip, &env, 5).await?;
    w.engine
        .start("group-fails", group_spec("3", "linear:50:1s", Some(hook)))
        .await?;
    let done = w.run_one_to_end("group-fails").await?;
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("PreTraffic gate failed before 100%")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.group_aliases().await?, vec![("2".to_owned(), 0.0); 3]);

    // An alarm on one member rolls every member back.
    w.create_alarm("worker-errors").await?;
    let mut watched = group_spec("3", "canary:10:1h", None);
    watched.alarms = vec!["worker-errors".into()];
    let d = w.engine.start("group-alarmed", watched).await?;
    assert!(matches!(d.phase, Phase::Baking { .. }), "{:?}", d.phase);
    assert_eq!(w.group_aliases().await?, vec![("2".to_owned(), 0.1); 3]);
    assert_eq!(w.engine.alarm_raised("worker-errors").await?, 1);
    let done = w.engine.store().load("group-alarmed").await?.deployment;
    assert!(
        matches!(&done.phase, Phase::RolledBack { reason } if reason.contains("worker-errors is in ALARM")),
        "{:?}",
        done.phase
    );
    assert_eq!(w.group_aliases().await?, vec![("2".to_owned(), 0.0); 3]);
    let last = w
        .engine
        .store()
        .events("group-alarmed")
        .await?
        .pop()
        .context("a line")?;
    assert_eq!(
        last.message,
        "every member serves its old version again (greeter:live 2, worker:live 2, cron:live 2)"
    );

    // A member's shift refused for good (its alias deleted while the worker
    // was about to write it): the group rolls back, never half-shifted; that
    // alias's own rollback is refused too, and left to a person, while the
    // members before and after it are rolled back.
    let hold = hold_once(|p| {
        matches!(
            p,
            FaultPoint::Before {
                command: Command::SetAlias { member: 1, .. },
                ..
            }
        )
    });
    let held = w
        .engine
        .with_cloud(w.engine.cloud().with(hold.hook.clone()));
    let forward = tokio::spawn(async move {
        held.start("group-refused", group_spec("3", "canary:10:1h", None))
            .await
    });
    tokio::time::timeout(DEADLINE, hold.reached.notified())
        .await
        .context("the worker did not reach the worker's write")?;
    w.lambda
        .delete_alias()
        .function_name("worker")
        .name("live")
        .send()
        .await?;
    hold.release.notify_one();
    let d = tokio::time::timeout(DEADLINE, forward).await???;
    assert!(
        matches!(&d.phase, Phase::RolledBack { reason } if reason.starts_with("the shift of worker:live to 10% failed: UpdateAlias of worker:live refused: ResourceNotFoundException")),
        "{:?}",
        d.phase
    );
    let lines: Vec<String> = w
        .engine
        .store()
        .events("group-refused")
        .await?
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("the rollback of worker:live was refused")),
        "{lines:?}"
    );
    for name in ["greeter", "cron"] {
        let a = w
            .lambda
            .get_alias()
            .function_name(name)
            .name("live")
            .send()
            .await?;
        assert_eq!(a.function_version(), Some("2"), "{name}");
        assert!(
            a.routing_config()
                .is_none_or(|r| r.additional_version_weights().is_none_or(|w| w.is_empty())),
            "{name}"
        );
    }
    Ok(())
}

/// A worker killed before each of a group's alias writes in turn (between
/// two members' writes, at every position): the sweep's repair finishes
/// the group, promoted whole on every member, never half-shifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_two_members_writes_converges_at_each_position() -> Result<()> {
    let w = world().await?;
    w.add_group_members().await?;
    let killed_at = w
        .kill_before_each(
            "group-crash",
            |c| matches!(c, Command::SetAlias { .. }),
            |n| group_spec(alternating(n), "linear:50:1s", None),
            async |id, saved, ended| {
                if let Phase::Shifting { step } = saved.phase {
                    // Saved mid-step: each member at this step's weight or the one before.
                    let weights: Vec<f64> = (0..3).map(|m| saved.member(m).weight).collect();
                    let allowed = [
                        saved.step_weight(step),
                        step.checked_sub(1).map_or(0.0, |s| saved.step_weight(s)),
                    ];
                    assert!(
                        weights.iter().all(|w| allowed.contains(w)),
                        "{id}: {weights:?}"
                    );
                }
                assert_eq!(ended.phase, Phase::Promoted, "{id}");
                let version = ended.to_version.clone().unwrap_or_default();
                assert_eq!(
                    w.group_aliases().await?,
                    vec![(version, 0.0); 3],
                    "{id} left a member split"
                );
                Ok(())
            },
        )
        .await?;
    // Two steps of three writes each.
    assert_eq!(killed_at, (0..6).collect::<Vec<_>>());
    Ok(())
}
