use super::*;
use crate::pipeline::GitRef;
use chrono::TimeZone;
use proptest::prelude::*;

fn t(secs: i64) -> Time {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

const PIPELINE: &str = r#"
name: app
source: { repository: acme/app }
execution_mode: MODE
stages:
  - name: build
    actions:
      - { name: artifact, kind: artifact, config: { key: "builds/{sha}.zip", timeout: 10m } }
  - name: beta
    actions:
      - { name: deploy-beta, kind: deploy, config: { function: app, alias: beta, artifact: artifact, config: AllAtOnce } }
      - { name: lint, kind: invoke, config: { function: lint } }
      - { name: test-beta, kind: invoke, run_order: 2, config: { function: tests } }
  - name: approve
    actions:
      - { name: approval, kind: approval, config: { timeout: 1h } }
  - name: live
    actions:
      - { name: bake, kind: wait, config: { duration: 30s } }
      - { name: deploy-live, kind: deploy, run_order: 2, config: { function: app, alias: live, artifact: artifact, config: "canary:10:5m" } }
"#;

fn definition(mode: &str) -> PipelineDefinition {
    PipelineDefinition::parse(&PIPELINE.replace("MODE", mode)).unwrap()
}

fn push() -> Push {
    Push {
        repository: "acme/app".into(),
        reference: GitRef::Branch("main".into()),
        sha: "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4".into(),
        deleted: false,
        forced: false,
        changed_paths: None,
        message: None,
        author: None,
    }
}

struct Run {
    e: Execution,
    now: Time,
    commands: Vec<Command>,
}

impl Run {
    fn new(mode: &str) -> Self {
        let (e, commands) = Execution::create("x-1", definition(mode), push(), t(0));
        let mut run = Run {
            e,
            now: t(0),
            commands,
        };
        if mode != "queued" {
            // Its record arrives: the orchestrator starts it.
            run.feed(Input::Start);
        }
        run
    }

    fn feed(&mut self, input: Input) -> bool {
        let (e, commands) = decide(&self.e, &input, self.now);
        let changed = e != self.e;
        self.e = e;
        self.commands.extend(commands);
        changed
    }

    fn at(&self, name: &str) -> ActionRef {
        let i = self.e.actions.iter().position(|a| a.name == name).unwrap();
        self.e.action_ref(i)
    }

    fn pass(&mut self, name: &str) -> bool {
        let at = self.at(name);
        self.feed(Input::ActionSucceeded {
            at,
            detail: "ok".into(),
            outputs: BTreeMap::new(),
        })
    }

    fn fail(&mut self, name: &str) -> bool {
        let at = self.at(name);
        self.feed(Input::ActionFailed {
            at,
            reason: "boom".into(),
        })
    }

    fn clone_run(&self) -> Run {
        Run {
            e: self.e.clone(),
            now: self.now,
            commands: Vec::new(),
        }
    }

    fn running(&self) -> Vec<&str> {
        self.e
            .actions
            .iter()
            .filter(|a| matches!(a.state, ActionState::Running { .. }))
            .map(|a| a.name.as_str())
            .collect()
    }

    fn approve(&mut self, approved: bool) -> bool {
        let at = self.at("approval");
        self.feed(Input::Approval {
            at,
            approved,
            by: "ada".into(),
            comment: "looks good".into(),
        })
    }

    fn run_until_approval(&mut self) {
        assert!(self.pass("artifact"));
        assert!(self.pass("deploy-beta"));
        assert!(self.pass("lint"));
        assert!(self.pass("test-beta"));
        assert_eq!(self.e.stage_name(), "approve");
    }
}

#[test]
fn stages_run_in_order_and_run_orders_group_actions() {
    let mut r = Run::new("superseded");
    assert_eq!(r.e.status, Status::InProgress);
    assert_eq!(r.running(), ["artifact"]);
    assert!(
        r.commands
            .iter()
            .any(|c| matches!(c, Command::StartTimer { when, .. } if *when == t(600)))
    );
    assert!(r.pass("artifact"));
    assert_eq!(r.e.stage_name(), "beta");
    assert_eq!(
        r.running(),
        ["deploy-beta", "lint"],
        "run order 1 runs together"
    );
    assert!(r.pass("lint"));
    assert_eq!(
        r.running(),
        ["deploy-beta"],
        "order 2 waits for all of order 1"
    );
    assert!(r.pass("deploy-beta"));
    assert_eq!(r.running(), ["test-beta"]);
    assert!(r.pass("test-beta"));
    assert_eq!(r.running(), ["approval"]);
    assert!(!r.pass("approval"), "only a person approves");
    assert!(r.approve(true));
    assert_eq!(r.e.stage_name(), "live");
    assert_eq!(r.running(), ["bake"]);
    let bake = r.at("bake");
    assert!(
        !r.commands.contains(&Command::RunAction { at: bake }),
        "a wait is only a timer"
    );
    r.now = t(10);
    assert!(r.feed(Input::TimerFired { at: bake }), "early: re-armed");
    assert_eq!(r.running(), ["bake"]);
    r.now = t(30);
    assert!(r.feed(Input::TimerFired { at: bake }));
    assert!(r.pass("deploy-live"));
    assert_eq!(r.e.status, Status::Succeeded);
    assert_eq!(r.commands.last(), Some(&Command::ReleaseTurn));
}

#[test]
fn a_failed_action_fails_the_execution_and_a_retry_runs_the_stage_again() {
    let mut r = Run::new("superseded");
    r.pass("artifact");
    assert!(r.fail("lint"));
    assert_eq!(
        r.e.status,
        Status::InProgress,
        "deploy-beta is still running"
    );
    assert!(r.pass("deploy-beta"));
    assert!(
        matches!(&r.e.status, Status::Failed { reason } if reason.contains("lint failed in stage beta: boom")),
        "{:?}",
        r.e.status
    );
    assert!(r.running().is_empty(), "test-beta never starts");
    let stale = r.at("lint");
    assert!(r.feed(Input::RetryStage { failed_only: true }));
    assert_eq!(r.running(), ["lint"], "only the failed action runs again");
    assert!(
        !r.feed(Input::ActionSucceeded {
            at: ActionRef {
                attempt: 1,
                ..stale
            },
            detail: "late".into(),
            outputs: BTreeMap::new()
        }),
        "a result of the first attempt is stale"
    );
    assert!(r.pass("lint"));
    assert_eq!(r.running(), ["test-beta"]);
    r.fail("test-beta");
    assert!(r.feed(Input::RetryStage { failed_only: false }));
    assert_eq!(
        r.running(),
        ["deploy-beta", "lint"],
        "all actions run again"
    );
    assert!(
        !r.feed(Input::RetryStage { failed_only: false }),
        "only a failed execution retries"
    );
}

#[test]
fn a_rejection_or_a_deadline_fails_the_action() {
    let mut r = Run::new("superseded");
    r.run_until_approval();
    assert!(r.approve(false));
    assert!(matches!(&r.e.status, Status::Failed { reason } if reason.contains("rejected by ada")));

    let mut r = Run::new("superseded");
    let artifact = r.at("artifact");
    r.now = t(601);
    assert!(r.feed(Input::TimerFired { at: artifact }));
    assert!(
        matches!(&r.e.status, Status::Failed { reason } if reason.contains("no result before its deadline"))
    );
    assert!(r.commands.contains(&Command::CancelAction {
        at: artifact,
        mode: StopMode::Abandon
    }));
}

#[test]
fn stop_abandons_now_or_finishes_running_actions_first() {
    let mut r = Run::new("superseded");
    r.pass("artifact");
    assert!(r.feed(Input::Stop {
        mode: StopMode::Abandon,
        reason: "wrong commit".into()
    }));
    assert!(matches!(&r.e.status, Status::Stopped { .. }));
    let cancelled = r
        .commands
        .iter()
        .filter(|c| matches!(c, Command::CancelAction { .. }))
        .count();
    assert_eq!(cancelled, 2, "both running actions are stopped");
    assert!(!r.pass("lint"));
    assert!(
        matches!(&r.e.status, Status::Stopped { .. }),
        "results after a stop change nothing"
    );

    let mut r = Run::new("superseded");
    r.pass("artifact");
    assert!(r.feed(Input::Stop {
        mode: StopMode::Finish,
        reason: "freeze".into()
    }));
    assert!(r.pass("lint"));
    assert_eq!(r.e.status, Status::InProgress);
    assert!(r.pass("deploy-beta"));
    assert!(
        matches!(&r.e.status, Status::Stopped { reason } if reason == "freeze"),
        "test-beta never starts"
    );
}

/// A pipeline whose one stage runs an AWS CodePipeline beside an invoke.
fn legacy() -> Run {
    let definition = PipelineDefinition::parse(
        r#"
name: app
source: { repository: acme/app }
stages:
  - name: legacy
    actions:
      - { name: legacy, kind: codepipeline, config: { pipeline: old } }
      - { name: lint, kind: invoke, config: { function: lint } }
"#,
    )
    .unwrap();
    let (e, commands) = Execution::create("x-1", definition, push(), t(0));
    let mut run = Run {
        e,
        now: t(0),
        commands,
    };
    run.feed(Input::Start);
    run
}

fn cancels(r: &Run) -> Vec<(ActionRef, StopMode)> {
    r.commands
        .iter()
        .filter_map(|c| match c {
            Command::CancelAction { at, mode } => Some((*at, *mode)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stop_stops_the_codepipeline_execution_an_action_started() {
    // Recorded once; a retry of the action forgets it.
    let mut r = legacy();
    let at = r.at("legacy");
    let started = Input::ActionRunStarted {
        at,
        run: "cp-1".into(),
    };
    assert!(r.feed(started.clone()));
    assert!(!r.feed(started), "the same run twice changes nothing");
    assert_eq!(r.e.actions[0].run.as_deref(), Some("cp-1"));
    assert!(cancels(&r).is_empty());

    // Abandon: the run is stopped at once with the action.
    let mut abandoned = r.clone_run();
    assert!(abandoned.feed(Input::Stop {
        mode: StopMode::Abandon,
        reason: "wrong commit".into()
    }));
    assert!(cancels(&abandoned).contains(&(at, StopMode::Abandon)));
    assert!(matches!(abandoned.e.status, Status::Stopped { .. }));

    // Finish: the run is told to stop after its actions in progress; the
    // execution stops once the action ends, however it ended.
    assert!(r.feed(Input::Stop {
        mode: StopMode::Finish,
        reason: "freeze".into()
    }));
    assert_eq!(cancels(&r), [(at, StopMode::Finish)]);
    assert_eq!(r.e.status, Status::InProgress);
    assert!(r.pass("lint"));
    assert!(r.fail("legacy"));
    assert!(matches!(&r.e.status, Status::Stopped { reason } if reason == "freeze"));

    // A Finish stop before the run is recorded: the record's arrival tells it.
    let mut early = legacy();
    assert!(early.feed(Input::Stop {
        mode: StopMode::Finish,
        reason: "freeze".into()
    }));
    assert!(cancels(&early).is_empty(), "nothing known to stop yet");
    assert!(early.feed(Input::ActionRunStarted {
        at,
        run: "cp-2".into()
    }));
    assert_eq!(cancels(&early), [(at, StopMode::Finish)]);

    // A failed run is retried as a new attempt, with no run yet.
    let mut retried = legacy();
    retried.feed(Input::ActionRunStarted {
        at,
        run: "cp-3".into(),
    });
    assert!(retried.fail("legacy"));
    assert!(retried.pass("lint"));
    assert!(matches!(retried.e.status, Status::Failed { .. }));
    assert!(retried.feed(Input::RetryStage { failed_only: true }));
    assert_eq!(retried.e.actions[0].run, None);
    assert!(
        !retried.feed(Input::ActionRunStarted {
            at,
            run: "cp-stale".into()
        }),
        "a run of the old attempt is not this attempt's"
    );
}

#[test]
fn a_superseded_execution_ends_at_the_next_stage_boundary() {
    let mut r = Run::new("superseded");
    assert!(r.feed(Input::Supersede { by: "x-2".into() }));
    assert!(!r.feed(Input::Supersede { by: "x-3".into() }), "once");
    assert_eq!(r.e.status, Status::InProgress);
    assert!(r.pass("artifact"));
    assert_eq!(r.e.status, Status::Superseded { by: "x-2".into() });
    assert!(r.running().is_empty() && r.e.stage_name() == "build");
}

#[test]
fn a_queued_execution_waits_for_its_turn() {
    let mut r = Run::new("queued");
    assert_eq!(r.e.status, Status::Queued);
    assert!(r.running().is_empty());
    assert!(r.feed(Input::Start));
    assert_eq!(r.running(), ["artifact"]);
    assert!(!r.feed(Input::Start), "started once");
}

#[test]
fn a_retried_queued_execution_waits_for_its_turn_again() {
    let mut r = Run::new("queued");
    assert!(r.feed(Input::Start));
    r.pass("artifact");
    r.fail("lint");
    r.pass("deploy-beta");
    assert!(matches!(r.e.status, Status::Failed { .. }));
    assert_eq!(r.commands.last(), Some(&Command::ReleaseTurn));
    // Another execution may have taken the turn since: the retry waits for it
    // (the simulation found two running at once when a retry ran at once).
    r.commands.clear();
    assert!(r.feed(Input::RetryStage { failed_only: true }));
    assert_eq!(r.e.status, Status::Queued);
    assert!(r.running().is_empty());
    assert!(r.commands.contains(&Command::TakeTurn));
    assert!(
        !r.commands
            .iter()
            .any(|c| matches!(c, Command::RunAction { .. })),
        "{:?}",
        r.commands
    );
    assert!(r.feed(Input::Start));
    assert_eq!(r.e.status, Status::InProgress);
    assert_eq!(r.running(), ["lint"], "only the failed action runs again");
    assert_eq!(r.at("lint").attempt, 2);
}

#[test]
fn pending_reissues_running_actions() {
    let mut r = Run::new("superseded");
    r.pass("artifact");
    let commands = pending(&r.e, r.now);
    assert_eq!(
        commands,
        vec![
            Command::RunAction {
                at: r.at("deploy-beta")
            },
            Command::RunAction { at: r.at("lint") },
        ]
    );
}

/// An operator's steer is saved without its commands, which the woken
/// orchestrator derives from the saved state: each must be derivable.
#[test]
fn pending_derives_what_a_steer_leaves_to_the_orchestrator() {
    // A stop abandons: what runs is told to stop (the deployment under way
    // is aborted; the invoke action has nothing to stop), and the turn is
    // given up.
    let mut r = Run::new("superseded");
    r.pass("artifact");
    r.commands.clear();
    assert!(r.feed(Input::Stop {
        mode: StopMode::Abandon,
        reason: "wrong build".into(),
    }));
    let derived = pending(&r.e, r.now);
    assert_eq!(
        derived,
        vec![
            Command::CancelAction {
                at: r.at("deploy-beta"),
                mode: StopMode::Abandon,
            },
            Command::CancelAction {
                at: r.at("lint"),
                mode: StopMode::Abandon,
            },
            Command::ReleaseTurn,
        ]
    );
    let decided: Vec<&Command> = r
        .commands
        .iter()
        .filter(|c| !matches!(c, Command::Record(_)))
        .collect();
    assert!(
        decided.iter().all(|c| derived.contains(c)),
        "decided {decided:?}, derived {derived:?}"
    );
    // Once told, an abandoned action is not told again.
    for name in ["deploy-beta", "lint"] {
        let at = r.at(name);
        assert!(r.feed(Input::ActionStopped { at }), "{name}");
    }
    assert_eq!(pending(&r.e, r.now), vec![Command::ReleaseTurn]);
    let at = r.at("lint");
    assert!(!r.feed(Input::ActionStopped { at }), "told once");

    // A retry in queued mode waits for the turn again.
    let mut r = Run::new("queued");
    assert!(r.feed(Input::Start));
    r.pass("artifact");
    r.fail("lint");
    r.pass("deploy-beta");
    assert_eq!(pending(&r.e, r.now), vec![Command::ReleaseTurn]);
    assert!(r.feed(Input::RetryStage { failed_only: true }));
    assert_eq!(pending(&r.e, r.now), vec![Command::TakeTurn]);

    // An approval starts the next stage's actions.
    let mut r = Run::new("parallel");
    r.pass("artifact");
    r.pass("deploy-beta");
    r.pass("lint");
    r.pass("test-beta");
    let approval = r.at("approval");
    r.commands.clear();
    assert!(r.feed(Input::Approval {
        at: approval,
        approved: true,
        by: "ada".into(),
        comment: "ship it".into(),
    }));
    let derived = pending(&r.e, r.now);
    for decided in r
        .commands
        .iter()
        .filter(|c| !matches!(c, Command::Record(_)))
    {
        assert!(derived.contains(decided), "{decided:?} not in {derived:?}");
    }
}

fn pick(e: &Execution, choice: u8, target: usize, attempt_skew: u32, secs: i64) -> Input {
    let action = if e.actions.is_empty() {
        0
    } else {
        target % e.actions.len()
    };
    let at = ActionRef {
        stage: e.stage,
        action,
        attempt: e.actions.get(action).map_or(1, |a| a.attempt) + attempt_skew,
    };
    match choice % 9 {
        0..=2 => Input::ActionSucceeded {
            at,
            detail: "ok".into(),
            outputs: BTreeMap::new(),
        },
        3 => Input::ActionFailed {
            at,
            reason: "boom".into(),
        },
        4 => Input::TimerFired { at },
        5 => Input::Approval {
            at,
            approved: secs % 3 != 0,
            by: "ada".into(),
            comment: String::new(),
        },
        6 => Input::RetryStage {
            failed_only: secs % 2 == 0,
        },
        7 => Input::Stop {
            mode: if secs % 2 == 0 {
                StopMode::Abandon
            } else {
                StopMode::Finish
            },
            reason: "op".into(),
        },
        _ => Input::Supersede { by: "x-2".into() },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn invariants_hold_for_any_input_sequence(
        steps in prop::collection::vec((any::<u8>(), 0usize..4, 0u32..2, 0i64..4000), 1..60)
    ) {
        let mut r = Run::new("superseded");
        r.feed(Input::Start);
        let mut finals = 0;
        for (choice, target, skew, secs) in steps {
            let before = r.e.clone();
            r.now = t(secs.max((r.now - t(0)).num_seconds()));
            let input = pick(&r.e, choice, target, skew, secs);
            let (after, commands) = decide(&before, &input, r.now);
            // An input that does not apply changes nothing.
            if commands.is_empty() {
                prop_assert_eq!(&after, &before);
            }
            // Nothing moves once final.
            if before.status.is_final() {
                prop_assert_eq!(&after, &before);
            }
            // Stages only move forward, and only past a stage whose actions all passed.
            prop_assert!(after.stage >= before.stage);
            if after.stage > before.stage {
                prop_assert!(before.superseded_by.is_none() && before.stopping.is_none());
            }
            // Within a stage, a run order starts only when every lower one passed.
            for run in after.actions.iter().filter(|a| matches!(a.state, ActionState::Running { .. })) {
                for other in after.actions.iter().filter(|a| a.run_order < run.run_order) {
                    let ok = matches!(other.state, ActionState::Succeeded { .. });
                    prop_assert!(ok, "{} runs before {} passed", run.name, other.name);
                }
            }
            // Commands only name running actions of the current stage and attempt.
            for c in &commands {
                if let Command::RunAction { at } | Command::StartTimer { at, .. } = c {
                    prop_assert_eq!(at.stage, after.stage);
                    let run = &after.actions[at.action];
                    prop_assert_eq!(run.attempt, at.attempt);
                    let running = matches!(run.state, ActionState::Running { .. });
                    prop_assert!(running, "{:?} names {} which is not running", c, run.name);
                }
            }
            // A final or failed execution runs nothing, and says so once.
            if !after.status.is_running() && !matches!(after.status, Status::Queued) {
                let idle = after.actions.iter().all(|a| !matches!(a.state, ActionState::Running { .. }));
                prop_assert!(idle, "{:?} has running actions", after.status);
            }
            finals += commands.iter().filter(|c| **c == Command::ReleaseTurn).count();
            prop_assert!(finals <= 1 + r.commands.iter().filter(|c| matches!(c, Command::Record(e) if e.message.contains("retried"))).count());
            r.e = after;
            r.commands.extend(commands);
        }
    }
}
