use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn t(secs: i64) -> Time {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn spec(config: &str) -> DeploymentSpec {
    DeploymentSpec {
        function: "greeter".into(),
        alias: "live".into(),
        source: VersionSource::Version("2".into()),
        config: config.parse().unwrap(),
        pre_traffic_hook: Some("pre".into()),
        post_traffic_hook: Some("post".into()),
        alarms: vec!["errors".into()],
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

/// Whether a run's deployment gets a deadline, beside the configs that always do.
fn choice_deadline(d: &Deployment) -> bool {
    d.spec.hook_invocation == HookInvocation::Async && d.spec.analysis.is_some()
}

/// The timer armed for `d`'s wake if it is `step`'s, else the sweep's.
fn armed_timer(d: &Deployment, step: usize) -> Input {
    let at = d.wake().filter(|(s, _)| *s == step).map(|(_, at)| at);
    Input::TimerFired { step, at }
}

/// Drives a deployment and keeps what an observer sees: the alias and the commands.
struct Run {
    d: Deployment,
    now: Time,
    commands: Vec<Command>,
    alias: (String, Option<(String, f64)>),
}

impl Run {
    fn new(config: &str) -> Self {
        let (d, commands) = Deployment::create("d-1", spec(config), t(0));
        let mut run = Run {
            d,
            now: t(0),
            commands: Vec::new(),
            alias: ("1".into(), None),
        };
        run.absorb(commands);
        run
    }

    fn absorb(&mut self, commands: Vec<Command>) {
        for c in &commands {
            if let Command::SetAlias {
                primary,
                additional,
                ..
            } = c
            {
                self.alias = (primary.clone(), additional.clone());
            }
        }
        self.commands.extend(commands);
    }

    fn feed(&mut self, input: Input) -> bool {
        let (d, commands) = decide(&self.d, &input, self.now);
        let changed = d != self.d;
        self.d = d;
        self.absorb(commands);
        changed
    }

    /// The timer armed for the deployment's wake fires (or, none armed
    /// for `step`, the sweep's).
    fn timer(&mut self, step: usize) -> bool {
        self.feed(armed_timer(&self.d, step))
    }

    fn at(&mut self, secs: i64) -> &mut Self {
        self.now = t(secs);
        self
    }

    fn gate(&mut self, gate: Gate, step: usize, passed: bool) -> bool {
        self.feed(Input::GateResult {
            gate,
            step,
            passed,
            reason: if passed { "ok".into() } else { "boom".into() },
        })
    }

    fn prepared(&mut self) {
        assert!(self.feed(Input::Prepared {
            group: vec![],
            from_version: "1".into(),
            to_version: "2".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
        }));
    }

    /// It ended with no alias write, and gave the lock up.
    fn assert_ended_without_a_write(&self) {
        let wrote = self
            .commands
            .iter()
            .any(|c| matches!(c, Command::SetAlias { .. }));
        assert!(!wrote, "{:?}", self.commands);
        assert!(self.commands.contains(&Command::ReleaseLock));
    }

    fn gates_run(&self) -> Vec<(Gate, usize)> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::RunGate { gate, step, .. } => Some((*gate, *step)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_healthy_canary_gates_every_shift_and_ends_whole_on_the_new_version() {
    let mut r = Run::new("canary:10:5s");
    assert_eq!(
        r.commands
            .iter()
            .filter(|c| **c == Command::Prepare)
            .count(),
        1
    );
    r.prepared();
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    }));
    assert!(r.gate(Gate::PostTraffic, 0, true));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, until } if until == t(5)));
    assert!(
        r.commands
            .contains(&Command::StartTimer { step: 0, at: t(5) })
    );
    r.at(5);
    assert!(r.timer(0));
    assert!(r.gate(Gate::PreTraffic, 1, true));
    assert_eq!(
        r.alias,
        ("2".into(), None),
        "the last step flips the alias and clears routing"
    );
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(1),
        revision: None,
    }));
    assert!(r.gate(Gate::PostTraffic, 1, true));
    assert_eq!(r.d.phase, Phase::Promoted);
    assert_eq!(r.d.weight, 100.0);
    assert_eq!(
        r.gates_run(),
        vec![
            (Gate::PreTraffic, 0),
            (Gate::PostTraffic, 0),
            (Gate::PreTraffic, 1),
            (Gate::PostTraffic, 1)
        ]
    );
    assert_eq!(r.commands.last(), Some(&Command::ReleaseLock));
}

/// Runs one step's gates and shift, each taking `gate_secs`, from `r.now`.
fn shift_step(r: &mut Run, step: usize, gate_secs: i64) {
    let start = r.now;
    r.now = start + ChronoDuration::seconds(gate_secs);
    assert!(r.gate(Gate::PreTraffic, step, true));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(step),
        revision: None,
    }));
    r.now += ChronoDuration::seconds(gate_secs);
    assert!(r.gate(Gate::PostTraffic, step, true));
}

#[test]
fn a_bake_runs_from_its_shift_so_no_two_shifts_are_closer_than_the_bake() {
    let mut r = Run::new("linear:20:10s");
    r.prepared();
    // The first shift lands at 2 s: its bake ends at 12 s.
    shift_step(&mut r, 0, 2);
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, until } if until == t(12)));
    // The wake-up comes late (an outage): said, and the next bake runs from its own shift.
    r.at(60);
    assert!(r.timer(0));
    let said = r.commands.iter().any(|c| {
        matches!(c, Command::Record(e) if e.message == "step 2 starts 48s after its bake ended at 2027-01-15 08:00:12 UTC")
    });
    assert!(said, "{:?}", r.commands);
    assert_eq!(r.d.planned_at, Some(t(12)), "due then, for StepLatency");
    shift_step(&mut r, 1, 2);
    assert!(matches!(r.d.phase, Phase::Baking { step: 1, until } if until == t(72)));
    // Slow gates delay the shift; the bake is still whole after it.
    r.at(72);
    assert!(r.timer(1));
    shift_step(&mut r, 2, 6);
    assert!(matches!(r.d.phase, Phase::Baking { step: 2, until } if until == t(88)));
    // A PostTraffic gate that outlasts the bake: the next step goes on at once, gated as ever.
    r.at(88);
    assert!(r.timer(2));
    shift_step(&mut r, 3, 12);
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 4 });
    assert_eq!(
        r.gates_run().last(),
        Some(&(Gate::PreTraffic, 4)),
        "no gate is skipped when a gate outlasts the bake"
    );
}

#[test]
fn a_failed_pre_traffic_gate_rolls_back_before_any_traffic() {
    let mut r = Run::new("Canary10Percent5Minutes");
    r.prepared();
    assert!(r.gate(Gate::PreTraffic, 0, false));
    assert!(matches!(r.d.phase, Phase::RollingBack { .. }));
    assert_eq!(r.alias, ("1".into(), None));
    assert!(!r.commands.iter().any(|c| matches!(
        c,
        Command::SetAlias {
            additional: Some(_),
            ..
        }
    )));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Rollback,
        revision: None,
    }));
    assert!(matches!(&r.d.phase, Phase::RolledBack { reason } if reason.contains("PreTraffic")));
}

#[test]
fn a_failed_post_traffic_gate_after_the_first_shift_rolls_back() {
    let mut r = Run::new("linear:10:10s");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    assert!(r.gate(Gate::PostTraffic, 0, false));
    assert_eq!(r.alias, ("1".into(), None));
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Rollback,
        revision: None,
    });
    assert!(
        matches!(&r.d.phase, Phase::RolledBack { reason } if reason.contains("PostTraffic") && reason.contains("10%"))
    );
    assert_eq!(r.d.weight, 0.0);
}

#[test]
fn an_alarm_mid_bake_rolls_back_at_once() {
    let mut r = Run::new("canary:10:5m");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    r.gate(Gate::PostTraffic, 0, true);
    r.at(30);
    assert!(r.feed(Input::AlarmRaised {
        alarm: "errors".into()
    }));
    assert_eq!(r.alias, ("1".into(), None));
    // The bake's timer arriving later changes nothing.
    r.at(300);
    assert!(!r.timer(0));
}

#[test]
fn promote_skips_waits_but_not_gates() {
    let mut r = Run::new("linear:25:1h");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    r.gate(Gate::PostTraffic, 0, true);
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    assert!(r.feed(Input::Promote));
    assert_eq!(
        r.d.phase,
        Phase::PreTraffic { step: 1 },
        "the gate of the next step still runs"
    );
    for step in 1..4 {
        if step > 1 {
            assert_eq!(r.d.phase, Phase::PreTraffic { step });
        }
        r.gate(Gate::PreTraffic, step, true);
        r.feed(Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Step(step),
            revision: None,
        });
        r.gate(Gate::PostTraffic, step, true);
    }
    assert_eq!(r.d.phase, Phase::Promoted);
    assert!(!r.feed(Input::Promote));
}

#[test]
fn pause_holds_the_bake_and_resume_goes_on() {
    let mut r = Run::new("canary:10:10s");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    assert!(
        r.feed(Input::Pause),
        "pausing during a gate takes effect at the bake"
    );
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    r.gate(Gate::PostTraffic, 0, true);
    r.at(10);
    assert!(!r.timer(0), "a paused bake does not end");
    assert!(!r.feed(Input::Pause), "pausing twice changes nothing");
    r.at(60);
    assert!(r.feed(Input::Resume));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    assert!(!r.feed(Input::Resume));
}

#[test]
fn resume_before_the_bake_ends_restarts_the_timer() {
    let mut r = Run::new("canary:10:10s");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    r.gate(Gate::PostTraffic, 0, true);
    r.at(2);
    r.feed(Input::Pause);
    r.at(4);
    r.commands.clear();
    assert!(r.feed(Input::Resume));
    assert!(
        r.commands
            .contains(&Command::StartTimer { step: 0, at: t(10) })
    );
    r.at(9);
    assert!(r.timer(0), "an early timer re-arms");
    assert!(matches!(r.d.phase, Phase::Baking { .. }));
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer { step: 0, at: t(10) })
    );
}

#[test]
fn abort_rolls_back_and_retry_starts_a_new_deployment_once() {
    let mut r = Run::new("canary:10:5m");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    assert!(r.feed(Input::Abort {
        reason: "operator".into()
    }));
    assert!(
        !r.feed(Input::Retry {
            new_id: "d-2".into()
        }),
        "no retry while rolling back"
    );
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Rollback,
        revision: None,
    });
    assert!(r.feed(Input::Retry {
        new_id: "d-2".into()
    }));
    assert!(
        r.commands
            .iter()
            .any(|c| matches!(c, Command::StartDeployment { id, .. } if id == "d-2"))
    );
    assert!(
        !r.feed(Input::Retry {
            new_id: "d-3".into()
        }),
        "retried once"
    );
}

#[test]
fn a_busy_alias_queues_or_refuses_by_configuration() {
    let mut r = Run::new("AllAtOnce");
    assert!(r.feed(Input::LockBusy {
        member: 0,
        holder: "d-0".into()
    }));
    assert!(matches!(r.d.phase, Phase::Queued { .. }));
    assert!(r.feed(Input::LockFreed));
    assert_eq!(r.d.phase, Phase::Created);
    assert_eq!(
        r.commands
            .iter()
            .filter(|c| **c == Command::Prepare)
            .count(),
        2
    );

    let mut refusing = spec("AllAtOnce");
    refusing.on_busy = OnBusy::Refuse;
    let (d, _) = Deployment::create("d-9", refusing, t(0));
    let (d, commands) = decide(
        &d,
        &Input::LockBusy {
            member: 0,
            holder: "d-0".into(),
        },
        t(1),
    );
    assert!(matches!(&d.phase, Phase::FailedToStart { reason } if reason.contains("d-0")));
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::SetAlias { .. })),
        "a refused deployment never touches the alias"
    );
}

#[test]
fn the_same_version_finishes_at_once_without_touching_the_alias() {
    let mut r = Run::new("canary:10:5m");
    r.commands.clear();
    assert!(r.feed(Input::Prepared {
        group: vec![],
        from_version: "2".into(),
        to_version: "2".into(),
        revision: None,
        metric_timing: None,
        function_arn: None,
    }));
    assert_eq!(r.d.phase, Phase::Promoted);
    // Prepare read the alias whole on "2"; a write from the finished phase
    // could land after the lock has passed on (the simulation found it).
    r.assert_ended_without_a_write();
}

#[test]
fn stale_duplicate_and_out_of_order_inputs_change_nothing() {
    let mut r = Run::new("linear:50:10s");
    r.prepared();
    let before = r.d.clone();
    for input in [
        Input::GateResult {
            gate: Gate::PreTraffic,
            step: 1,
            passed: true,
            reason: String::new(),
        },
        Input::GateResult {
            gate: Gate::PostTraffic,
            step: 0,
            passed: false,
            reason: String::new(),
        },
        Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Step(0),
            revision: None,
        },
        Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Rollback,
            revision: None,
        },
        Input::TimerFired { step: 0, at: None },
        Input::Prepared {
            group: vec![],
            from_version: "7".into(),
            to_version: "8".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
        },
        Input::LockFreed,
        Input::Resume,
    ] {
        let (d, commands) = decide(&r.d, &input, t(99));
        assert_eq!(d, before, "{input:?} changed the state");
        assert!(commands.is_empty(), "{input:?} issued commands");
    }
}

#[test]
fn pending_reissues_what_a_crash_interrupted() {
    let mut r = Run::new("canary:10:5m");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    // Crash after saving Shifting but before the alias update: the reconciler re-issues it.
    assert_eq!(
        pending(&r.d, t(1)),
        vec![Command::SetAlias {
            primary: "1".into(),
            additional: Some(("2".into(), 10.0)),
            update: AliasUpdate::Step(0),
            member: 0,
        }]
    );
    let json = serde_json::to_string(&r.d).unwrap();
    assert_eq!(
        serde_json::from_str::<Deployment>(&json).unwrap(),
        r.d,
        "state survives storage"
    );
}

fn changed_by_hand() -> Input {
    Input::AliasChangedByHand {
        member: 0,
        found: "version 1".into(),
        revision: Some("r-hand".into()),
    }
}

#[test]
fn revisions_from_prepare_and_each_write_are_kept_for_the_next_write() {
    let mut r = Run::new("linear:50:10s");
    assert!(r.feed(Input::Prepared {
        group: vec![],
        from_version: "1".into(),
        to_version: "2".into(),
        revision: Some("r0".into()),
        metric_timing: None,
        function_arn: None,
    }));
    assert_eq!(r.d.alias_revision.as_deref(), Some("r0"));
    r.gate(Gate::PreTraffic, 0, true);
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: Some("r1".into()),
    }));
    assert_eq!(r.d.alias_revision.as_deref(), Some("r1"));
}

#[test]
fn an_ended_deployment_says_how_it_left_the_alias_only_when_sluice_wrote_it_last() {
    let prepared = |r: &mut Run| {
        assert!(r.feed(Input::Prepared {
            group: vec![],
            from_version: "1".into(),
            to_version: "2".into(),
            revision: Some("r0".into()),
            metric_timing: None,
            function_arn: Some("arn:aws:lambda:us-east-1:123456789012:function:greeter".into()),
        }));
    };
    let left = |version: &str, revision: &str| {
        Some(AliasLeft {
            version: version.into(),
            revision: revision.into(),
            function_arn: Some("arn:aws:lambda:us-east-1:123456789012:function:greeter".into()),
        })
    };
    // Promoted: whole on the new version, at its last write's revision.
    let mut r = Run::new("AllAtOnce");
    prepared(&mut r);
    assert_eq!(r.d.alias_left(0), None, "not ended");
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: Some("r1".into()),
    });
    r.gate(Gate::PostTraffic, 0, true);
    assert_eq!(r.d.phase, Phase::Promoted);
    assert_eq!(r.d.alias_left(0), left("2", "r1"));

    // Rolled back by its own write: whole on the old version.
    let mut r = Run::new("linear:50:10s");
    prepared(&mut r);
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: Some("r1".into()),
    });
    r.gate(Gate::PostTraffic, 0, false);
    assert_eq!(r.d.alias_left(0), None, "rolling back");
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Rollback,
        revision: Some("r2".into()),
    });
    assert!(matches!(r.d.phase, Phase::RolledBack { .. }));
    assert_eq!(r.d.alias_left(0), left("1", "r2"));

    // Left as a person changed it: not Sluice's to say.
    let mut r = Run::new("linear:50:10s");
    prepared(&mut r);
    r.gate(Gate::PreTraffic, 0, true);
    assert!(r.feed(changed_by_hand()));
    assert!(matches!(r.d.phase, Phase::RolledBack { .. }));
    assert_eq!(r.d.alias_left(0), None);

    // Failed to start: the alias was never Sluice's.
    let mut r = Run::new("linear:50:10s");
    assert!(r.feed(Input::PrepareFailed {
        reason: "alias greeter:live does not exist".into()
    }));
    assert_eq!(r.d.alias_left(0), None);
}

#[test]
fn a_change_by_hand_ends_the_deployment_as_found_or_freezes_it_for_an_operator() {
    // Default: taken as an operator's rollback; nothing more is written.
    let mut r = Run::new("linear:50:10s");
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.commands.clear();
    assert!(r.feed(changed_by_hand()));
    assert_eq!(
        r.d.phase,
        Phase::RolledBack {
            reason: "the alias was changed outside Sluice: it serves version 1".into()
        }
    );
    assert_eq!(r.d.alias_revision.as_deref(), Some("r-hand"));
    r.assert_ended_without_a_write();

    // Frozen: only an operator moves it, and Sluice goes on from the alias as found.
    let mut asked = spec("linear:50:10s");
    asked.on_manual_change = OnManualChange::Freeze;
    let (d, _) = Deployment::create("f", asked, t(0));
    let mut r = Run {
        d,
        ..Run::new("linear:50:10s")
    };
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    assert!(r.feed(changed_by_hand()));
    assert_eq!(
        r.d.phase,
        Phase::Frozen {
            step: 0,
            found: "version 1".into()
        }
    );
    assert_eq!(pending(&r.d, t(1)), vec![]);
    for ignored in [
        Input::AlarmRaised { alarm: "a".into() },
        Input::MeasureFailed {
            step: 0,
            reason: "r".into(),
        },
        Input::Pause,
        Input::TimerFired { step: 0, at: None },
    ] {
        assert!(
            !r.feed(ignored.clone()),
            "{ignored:?} moved a frozen deployment"
        );
    }
    r.commands.clear();
    assert!(r.feed(Input::Resume));
    assert_eq!(r.d.phase, Phase::Shifting { step: 0 });
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 50.0))));
    assert_eq!(
        r.d.alias_revision.as_deref(),
        Some("r-hand"),
        "written on the person's revision"
    );

    // Rolling back when the person's change lands: left as found, ended.
    r.feed(Input::Abort { reason: "x".into() });
    assert!(r.feed(changed_by_hand()));
    assert!(
        matches!(r.d.phase, Phase::RolledBack { .. }),
        "{:?}",
        r.d.phase
    );
}

// Property tests: random input sequences, checked against the invariants.

/// Picks an input from generated numbers: mostly what the phase waits for (so
/// deployments progress), otherwise anything, stale steps included.
fn pick_input(d: &Deployment, choice: u8, step: usize, passed: bool, now: Time) -> Input {
    let n = d.schedule.steps.len();
    let expected = match &d.phase {
        Phase::Created => Some(Input::Prepared {
            group: vec![],
            from_version: "1".into(),
            to_version: "2".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
        }),
        Phase::Queued { .. } => Some(Input::LockFreed),
        Phase::PreTraffic { .. } | Phase::PostTraffic { .. }
            if d.spec.hook_invocation == HookInvocation::Async =>
        {
            Some(async_hook_input(d, choice, passed))
        }
        Phase::PreTraffic { step } => Some(Input::GateResult {
            gate: Gate::PreTraffic,
            step: *step,
            passed,
            reason: String::new(),
        }),
        Phase::Shifting { step } => Some(Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Step(*step),
            revision: None,
        }),
        Phase::PostTraffic { step } => Some(Input::GateResult {
            gate: Gate::PostTraffic,
            step: *step,
            passed,
            reason: String::new(),
        }),
        Phase::Baking { step, .. } => match &d.analysis {
            // Half the time, what CloudWatch says of the periods readable now.
            Some(a) if choice.is_multiple_of(2) => {
                Some(measurement(a.step, a.from, d, passed, now))
            }
            _ => Some(armed_timer(d, *step)),
        },
        Phase::Frozen { .. } => Some(Input::Resume),
        Phase::RollingBack { .. } => Some(Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Rollback,
            revision: None,
        }),
        _ => None,
    };
    if choice < 170
        && let Some(input) = expected
    {
        return input;
    }
    let step = step % (n + 1);
    match choice % 16 {
        0 => Input::GateResult {
            gate: Gate::PreTraffic,
            step,
            passed,
            reason: String::new(),
        },
        1 => Input::GateResult {
            gate: Gate::PostTraffic,
            step,
            passed,
            reason: String::new(),
        },
        2 => Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Step(step),
            revision: None,
        },
        3 => Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Rollback,
            revision: None,
        },
        4 if choice.is_multiple_of(2) => armed_timer(d, step),
        4 => Input::TimerFired { step, at: None },
        5 => Input::AlarmRaised { alarm: "a".into() },
        6 => match &d.analysis {
            Some(a) => measurement(step, a.from, d, passed, now),
            None => Input::MeasureFailed {
                step,
                reason: "r".into(),
            },
        },
        7 => Input::Promote,
        8 => Input::Pause,
        9 => Input::Resume,
        10 => Input::Abort { reason: "x".into() },
        11 => Input::Retry {
            new_id: "again".into(),
        },
        12 => Input::LockBusy {
            member: 0,
            holder: "other".into(),
        },
        13 => Input::LockFreed,
        14 => Input::PrepareFailed { reason: "p".into() },
        15 if choice.is_multiple_of(3) => Input::AliasChangedByHand {
            member: 0,
            found: "version 1 with 33.3% on version 2".into(),
            revision: Some("by-hand".into()),
        },
        _ => Input::Prepared {
            group: vec![],
            from_version: "1".into(),
            to_version: "2".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
        },
    }
}

/// The next fact of an asynchronous gate: the worker's token, Lambda's
/// acknowledgement, then the hook's report (or, now and then, a heartbeat
/// or a timer). The token is the gate's own, so the model can report with it.
fn async_hook_input(d: &Deployment, choice: u8, passed: bool) -> Input {
    let (gate, step) = match d.phase {
        Phase::PostTraffic { step } => (Gate::PostTraffic, step),
        Phase::PreTraffic { step } => (Gate::PreTraffic, step),
        _ => unreachable!("a gate phase"),
    };
    let token = format!("d.{gate:?}-{step}");
    match d.waiting_hook() {
        None => Input::HookStarted { gate, step, token },
        Some(w) if !w.invoked && choice.is_multiple_of(3) => Input::HookInvoked {
            gate,
            step,
            token_sha256: w.token_sha256.clone(),
        },
        Some(_) if choice.is_multiple_of(7) => Input::HookHeartbeat { token },
        Some(_) if choice.is_multiple_of(11) => armed_timer(d, step),
        Some(_) => Input::HookReported {
            token,
            passed,
            reason: String::new(),
        },
    }
}

/// CloudWatch's answer for `step` over the periods readable at `now`: a
/// healthy new version, or one that fails every call.
fn measurement(step: usize, from: Time, d: &Deployment, healthy: bool, now: Time) -> Input {
    let to = d.metric_timing.readable_through(now);
    let errors = if healthy { 0.0 } else { 100.0 };
    Input::Measured {
        group: vec![],
        step,
        measurement: Measurement {
            from,
            to,
            new: counts(100.0, errors),
            old: counts(900.0, 0.0),
        },
    }
}

const CONFIGS: [&str; 6] = [
    "AllAtOnce",
    "canary:10:5s",
    "linear:10:10s",
    "linear:30:1m",
    "steps:1@1s,50@2s,100",
    "Linear10PercentEvery1Minute",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn invariants_hold_for_any_input_sequence(
        config in 0..CONFIGS.len(),
        inputs in prop::collection::vec((any::<u8>(), 0usize..12, prop::bool::weighted(0.9), 0i64..400), 1..80),
    ) {
        let mut asked = spec(CONFIGS[config]);
        if config % 2 == 1 {
            asked.on_manual_change = OnManualChange::Freeze;
        }
        // Half the runs judge their bakes, and watch after the last shift.
        let analysed = inputs.len() % 2 == 0;
        if analysed {
            asked.analysis = Some(serde_json::from_str(r#"{"watch_after_promotion_seconds": 300}"#).unwrap());
        }
        // A third of the runs gate with asynchronous hooks.
        if inputs.len() % 3 == 0 {
            asked.hook_invocation = HookInvocation::Async;
            asked.hook_timeout_seconds = Some(600);
        }
        let (mut d, first) = Deployment::create("d", asked, t(0));
        // A fifth of the runs must end by a deadline (as a CloudFormation rollout does).
        if config % 5 == 0 || choice_deadline(&d) {
            d.deadline = Some(t(2000));
        }
        let mut now = t(0);
        let mut alias: (String, Option<(String, f64)>) = ("1".into(), None);
        // The next schedule step a forward shift may set, and the gate that must precede it.
        let mut next_step = 0usize;
        let mut pre_passed: Option<usize> = None;
        let mut touched = false;
        // A person's routing is on the alias (until Sluice is told to go on).
        let mut by_hand = false;
        let mut armed: std::collections::HashSet<Time> = std::collections::HashSet::new();
        let first_touches = first.iter().any(|c| matches!(c, Command::SetAlias { .. }));
        prop_assert!(!first_touches, "creating a deployment moved the alias");
        for (choice, step, passed, advance) in inputs {
            now += ChronoDuration::seconds(advance);
            let input = pick_input(&d, choice, step, passed, now);
            let before = d.clone();
            let (after, commands) = decide(&d, &input, now);
            if after == before {
                // Ignored, or an early timer re-armed for the bake's next wake, or a read.
                let rearm = match (&before.phase, commands.as_slice()) {
                    (Phase::Baking { step, .. }, [Command::StartTimer { step: s, at }]) => s == step && Some(*at) == before.bake_wake(),
                    (Phase::Baking { step, .. }, [Command::Measure { step: s, .. }]) => s == step,
                    // An asynchronous hook's timer, early: re-armed for its deadline.
                    (Phase::PreTraffic { step } | Phase::PostTraffic { step }, [Command::StartTimer { step: s, at }]) => s == step && Some(*at) == before.hook_deadline(),
                    _ => false,
                };
                prop_assert!(commands.is_empty() || rearm, "an ignored input issued {:?}", commands);
            }
            // A bad version seen by the analysis is rolled back at once.
            if let Input::Measured { measurement, .. } = &input
                && measurement.new.errors > 0.0
                && after != before
            {
                prop_assert!(matches!(after.phase, Phase::RollingBack { .. }), "{:?}", after.phase);
            }
            // Promoted only after the watch, when there is one.
            if analysed && matches!(after.phase, Phase::Promoted) && !matches!(before.phase, Phase::Promoted) {
                let watched = matches!(before.phase, Phase::Baking { .. });
                prop_assert!(watched || after.skip_waits, "promoted from {:?} without the watch", before.phase);
            }
            if let Input::GateResult { gate: Gate::PreTraffic, step, passed: true, .. } = &input
                && matches!(before.phase, Phase::PreTraffic { step: s } if s == *step)
            {
                pre_passed = Some(*step);
            }
            if let Input::HookReported { passed: true, .. } = &input
                && let Phase::PreTraffic { step } = before.phase
                && matches!(after.phase, Phase::Shifting { .. })
            {
                pre_passed = Some(step);
            }
            // An asynchronous gate ends only by its hook's report or its deadline.
            if let (Some(w), Phase::PreTraffic { .. } | Phase::PostTraffic { .. }) = (before.waiting_hook(), &before.phase)
                && after.phase != before.phase
                && !matches!(after.phase, Phase::RollingBack { .. } | Phase::RolledBack { .. } | Phase::FailedToStart { .. })
            {
                prop_assert!(matches!(input, Input::HookReported { .. }), "{:?} ended the gate", input);
                prop_assert!(now <= w.deadline, "a report after the deadline counted");
            }
            if matches!(input, Input::AliasChangedByHand { .. }) && after != before {
                by_hand = true;
                let left = matches!(after.phase, Phase::RolledBack { .. } | Phase::Frozen { .. });
                prop_assert!(left, "a change by hand led to {:?}", after.phase);
            }
            for c in &commands {
                if let Command::SetAlias { primary, additional, update, .. } = c {
                    touched = true;
                    // Only an operator's word takes the alias back from a person.
                    prop_assert!(!by_hand || matches!(before.phase, Phase::Frozen { .. }), "wrote over a change by hand");
                    by_hand = false;
                    let again = matches!(before.phase, Phase::Frozen { .. });
                    if let AliasUpdate::Step(s) = update
                        && !matches!(after.phase, Phase::Promoted)
                        && !(again && *s + 1 == next_step)
                    {
                        // Forward shifts: one step at a time, each behind a passed PreTraffic gate.
                        prop_assert_eq!(*s, next_step, "weight skipped a step");
                        prop_assert_eq!(pre_passed, Some(*s), "shift without a passed PreTraffic gate");
                        next_step += 1;
                    }
                    alias = (primary.clone(), additional.clone());
                }
            }
            // A failed gate always ends in rollback.
            if let Input::GateResult { passed: false, .. } = &input
                && after != before
            {
                prop_assert!(matches!(after.phase, Phase::RollingBack { .. }), "{:?}", after.phase);
            }
            if matches!(before.phase, Phase::RollingBack { .. }) {
                let still_rolling_back = matches!(after.phase, Phase::RollingBack { .. } | Phase::RolledBack { .. });
                prop_assert!(still_rolling_back, "left a rollback for {:?}", after.phase);
            }
            // Every terminal state left the alias whole, on the right version.
            match &after.phase {
                Phase::Promoted => prop_assert_eq!(&alias, &("2".to_string(), None)),
                Phase::RolledBack { .. } if by_hand => {}
                Phase::RolledBack { .. } => prop_assert_eq!(&alias, &("1".to_string(), None)),
                Phase::FailedToStart { .. } => prop_assert!(!touched, "a deployment that never started moved the alias"),
                _ => {}
            }
            prop_assert!(after.weight >= 0.0 && after.weight <= 100.0);
            // Past its deadline, the first timer ends it (rolled back, or never started).
            if let (Input::TimerFired { .. }, Some(deadline)) = (&input, before.abort_at())
                && deadline <= now
            {
                let ending = matches!(after.phase, Phase::RollingBack { .. } | Phase::RolledBack { .. } | Phase::FailedToStart { .. });
                prop_assert!(ending, "past its deadline, {:?}", after.phase);
            }
            // A wake ahead has its timer, and a decision arms one at most.
            let timers: Vec<Time> = commands.iter().filter_map(|c| match c {
                Command::StartTimer { at, .. } => Some(*at),
                _ => None,
            }).collect();
            prop_assert!(timers.len() <= 1, "{:?} armed {:?}", input, timers);
            armed.extend(timers);
            // (A deadline no timer was armed for is the minutely sweep's.)
            if let Some((_, at)) = after.wake() {
                let swept = Some(at) == after.abort_at();
                prop_assert!(at <= now || armed.contains(&at) || swept, "no timer for the wake at {} after {:?}", at, input);
            }
            d = after;
        }
    }
}

#[test]
fn a_spec_refuses_unknown_fields_and_names_aws_would_refuse() {
    let json = serde_json::to_value(spec("AllAtOnce")).unwrap();
    let back: DeploymentSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, spec("AllAtOnce"));
    for (field, value) in [
        ("pre_traffic_hok", serde_json::json!("pre")),
        ("alrams", serde_json::json!(["errors"])),
    ] {
        let mut typo = json.clone();
        typo[field] = value;
        let err = serde_json::from_value::<DeploymentSpec>(typo).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("unknown field `{field}`")),
            "{err}"
        );
    }
    let mut nested = json.clone();
    nested["source"] = serde_json::json!({"artifact": {"bucket": "b", "key": "k", "verison": "1"}});
    assert!(serde_json::from_value::<DeploymentSpec>(nested).is_err());

    assert_eq!(spec("AllAtOnce").problems(), Vec::<String>::new());
    let mut bad = spec("AllAtOnce");
    bad.function = "greeter/../../x".into();
    bad.alias = "../cli".into();
    bad.source = VersionSource::Version("live".into());
    bad.pre_traffic_hook = Some(" ".into());
    bad.post_traffic_hook = Some("hooks:live:x".into());
    bad.alarms = vec![String::new()];
    let problems = bad.problems();
    let fields: Vec<&str> = problems
        .iter()
        .map(|p| p.split([':', ' ']).next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "function",
            "alias",
            "source.version",
            "pre_traffic_hook",
            "post_traffic_hook",
            "alarms[0]"
        ],
        "{problems:?}"
    );

    let mut huge = spec("AllAtOnce");
    huge.smoke_tests = vec![crate::smoke::SmokeTest {
        name: "big".into(),
        function: None,
        event: serde_json::json!({ "blob": "x".repeat(crate::limits::MAX_SPEC_BYTES) }),
        expect: Default::default(),
    }];
    let problems = huge.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("the spec as JSON is ")
            && problems[0].contains("the most is 65536")
            && problems[0].contains("smoke_tests_from"),
        "{problems:?}"
    );
}

// Analysis: judged by the deployment over whole, published periods.

fn analysed(config: &str, analysis: &str) -> Run {
    let mut asked = spec(config);
    asked.analysis = Some(serde_json::from_str(analysis).unwrap());
    let (d, commands) = Deployment::create("d-1", asked, t(0));
    let mut run = Run {
        d,
        now: t(0),
        commands: Vec::new(),
        alias: ("1".into(), None),
    };
    run.absorb(commands);
    run.prepared();
    run
}

fn counts(invocations: f64, errors: f64) -> crate::analysis::Counts {
    crate::analysis::Counts {
        invocations,
        errors,
        duration_ms: invocations * 10.0,
        p99_duration_ms: None,
    }
}

impl Run {
    /// The last read the deployment asked for.
    fn last_measure(&self) -> (usize, Time, Time) {
        self.commands
            .iter()
            .rev()
            .find_map(|c| match c {
                Command::Measure { step, from, to } => Some((*step, *from, *to)),
                _ => None,
            })
            .expect("a Measure command")
    }

    /// Answers the last read with `new` calls on the new version (and a healthy old one).
    fn measured(&mut self, new: crate::analysis::Counts) -> bool {
        let (step, from, to) = self.last_measure();
        self.feed(Input::Measured {
            group: vec![],
            step,
            measurement: Measurement {
                from,
                to,
                new,
                old: counts(900.0, 0.0),
            },
        })
    }

    fn timeline(&self) -> Vec<String> {
        events_of(&self.commands)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }
}

#[test]
fn analysis_reads_only_published_periods_and_extends_a_bake_too_short_for_one() {
    // AWS's timing: minutes, read two minutes after they close. t(0) is on a minute.
    let mut r = analysed("canary:10:1m", r#"{"max_error_rate": 5}"#);
    r.at(10);
    shift_step(&mut r, 0, 5);
    // Shifted at 0:15: the first whole minute at 10%, 1:00-2:00, is
    // readable at 4:00, past the one-minute bake's end at 1:15.
    assert_eq!(
        r.d.phase,
        Phase::Baking {
            step: 0,
            until: t(240)
        }
    );
    assert!(
        r.timeline().iter().any(|l| l.contains("bake extended to")
            && l.contains("minute 08:01, the first whole one at this weight")),
        "{:?}",
        r.timeline()
    );
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(180)
        })
    );
    // A timer a little early reads nothing and is set again.
    r.at(179);
    assert!(r.timer(0));
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(180)
        })
    );
    // The shift's own minute is read at 3:00, and judged, but the bake waits
    // for the first whole one.
    r.at(180);
    assert!(r.timer(0));
    assert_eq!(r.last_measure(), (0, t(0), t(60)));
    assert!(r.measured(counts(2.0, 0.0)));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    r.at(240);
    assert!(r.timer(0));
    assert_eq!(r.last_measure(), (0, t(0), t(120)));
    assert!(r.measured(counts(100.0, 1.0)));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    assert!(
        r.timeline().iter().any(|l| l.starts_with(
            "analysis at step 1 passed: error rate 1.0% (1 of 100 calls, minutes 08:00-08:01)"
        )),
        "{:?}",
        r.timeline()
    );
    // The same answer again, or a read of fewer periods, changes nothing.
    let before = r.d.clone();
    assert!(!r.measured(counts(100.0, 1.0)));
    assert_eq!(r.d, before);
}

#[test]
fn analysis_rolls_back_as_soon_as_a_published_period_shows_a_bad_version() {
    let mut r = analysed("canary:10:10m", r#"{"max_error_rate": 5}"#);
    shift_step(&mut r, 0, 5);
    let Phase::Baking { until, .. } = r.d.phase else {
        panic!("{:?}", r.d.phase)
    };
    assert_eq!(until, t(605));
    // The shift's minute (0:00-1:00) is read at 3:00, long before the bake ends.
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(180)
        })
    );
    r.at(180);
    assert!(r.timer(0));
    assert!(r.measured(counts(100.0, 0.0)));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(240)
        })
    );
    r.at(240);
    assert!(r.timer(0));
    assert_eq!(r.last_measure(), (0, t(0), t(120)));
    assert!(r.measured(counts(169.0, 12.0)));
    let Phase::RollingBack { reason } = &r.d.phase else {
        panic!("{:?}", r.d.phase)
    };
    assert_eq!(
        reason,
        "analysis failed at 10%: error rate 7.1% (12 of 169 calls, minutes 08:00-08:01) > 5%; old version 0.0% (0 of 900 calls)"
    );
    assert_eq!(r.alias, ("1".into(), None));
}

#[test]
fn too_little_traffic_follows_on_inconclusive() {
    // fail: rolled back at the bake's end.
    let mut r = analysed("canary:10:1m", r#"{"on_inconclusive": "fail"}"#);
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(3.0, 0.0)));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("inconclusive: the new version served 3 calls")),
        "{:?}",
        r.d.phase
    );
    // pass: goes on, saying so.
    let mut r = analysed("canary:10:1m", r#"{"on_inconclusive": "pass"}"#);
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(3.0, 0.0)));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    assert!(
        r.timeline()
            .iter()
            .any(|l| l.contains("passed as on_inconclusive says"))
    );
    // wait: keeps reading new periods, goes on at the first verdict...
    let mut r = analysed("canary:10:1m", r#"{"max_wait_seconds": 180}"#);
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(3.0, 0.0)));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    assert!(
        r.timeline()
            .iter()
            .any(|l| l.contains("watching for data until"))
    );
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(300)
        })
    );
    r.at(300);
    assert!(r.timer(0));
    assert!(r.measured(counts(40.0, 0.0)));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    // ...and fails when none comes by its end.
    let mut r = analysed("canary:10:1m", r#"{"max_wait_seconds": 40}"#);
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(3.0, 0.0)));
    // The bake ended at 4:00: the wait's end, 4:40, comes before the next read (5:00).
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(280)
        })
    );
    r.at(280);
    assert!(r.timer(0));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("still inconclusive 40 s after the bake")),
        "{:?}",
        r.d.phase
    );
}

#[test]
fn a_failed_read_is_retried_and_written_down_then_judged_by_policy() {
    let mut r = analysed("canary:10:1m", r#"{"on_inconclusive": "fail"}"#);
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.feed(Input::MeasureFailed {
        step: 0,
        reason: "Throttling: Rate exceeded".into(),
    }));
    assert!(
        r.timeline()
            .iter()
            .any(|l| l.contains("CloudWatch could not be read (Throttling: Rate exceeded)")),
        "{:?}",
        r.timeline()
    );
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("inconclusive: CloudWatch could not be read")),
        "{:?}",
        r.d.phase
    );
    // Within a longer bake the read is tried again a period later.
    let mut r = analysed("canary:10:10m", "{}");
    shift_step(&mut r, 0, 5);
    r.at(240);
    assert!(r.timer(0));
    assert!(r.feed(Input::MeasureFailed {
        step: 0,
        reason: "ServiceUnavailable".into(),
    }));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(300)
        })
    );
    r.at(300);
    assert!(r.timer(0));
    assert_eq!(r.last_measure(), (0, t(0), t(180)));
}

#[test]
fn a_paused_bake_keeps_reading_and_rolls_back_a_bad_version() {
    let mut r = analysed("canary:10:10m", r#"{"max_error_rate": 5}"#);
    shift_step(&mut r, 0, 5);
    assert!(r.feed(Input::Pause));
    assert_eq!(r.d.bake_wake(), Some(t(180)));
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(100.0, 50.0)));
    assert!(matches!(r.d.phase, Phase::RollingBack { .. }));
}

#[test]
fn the_watch_after_promotion_rolls_back_a_version_that_goes_bad_at_100_percent() {
    let settings = r#"{"max_error_rate": 5, "watch_after_promotion_seconds": 600}"#;
    let mut r = analysed("AllAtOnce", settings);
    shift_step(&mut r, 0, 5);
    assert_eq!(r.alias, ("2".into(), None));
    assert_eq!(
        r.d.phase,
        Phase::Baking {
            step: 0,
            until: t(605)
        }
    );
    assert!(r.d.status_text().contains("100%, watched until"));
    assert!(
        !r.commands.contains(&Command::ReleaseLock),
        "the lock is held while watched"
    );
    r.at(240);
    assert!(r.timer(0));
    assert!(r.measured(counts(100.0, 0.0)));
    r.at(300);
    assert!(r.timer(0));
    assert!(r.measured(counts(200.0, 30.0)));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.starts_with("analysis failed at 100%"))
    );
    assert_eq!(r.alias, ("1".into(), None));

    // A version that stays healthy is promoted at the watch's end.
    let mut r = analysed("AllAtOnce", settings);
    shift_step(&mut r, 0, 5);
    let mut at = 240;
    while matches!(r.d.phase, Phase::Baking { .. }) {
        r.at(at);
        assert!(r.timer(0));
        if matches!(r.commands.last(), Some(Command::Measure { .. })) {
            assert!(r.measured(counts(at as f64, 0.0)));
        }
        at += 60;
    }
    assert_eq!(r.d.phase, Phase::Promoted);
    // At the first timer past the watch's end (11:00), after reading the minute published then.
    assert_eq!(r.d.updated_at, t(660));
    assert_eq!(r.last_measure(), (0, t(0), t(540)));
}

#[test]
fn analysis_with_no_bake_to_judge_in_is_refused() {
    let mut asked = spec("AllAtOnce");
    asked.analysis = Some(Default::default());
    let problems = asked.problems().join("; ");
    assert!(
        problems.contains("no bake is left to judge in"),
        "{problems}"
    );
    asked.analysis =
        Some(serde_json::from_str(r#"{"watch_after_promotion_seconds": 300}"#).unwrap());
    assert!(asked.problems().is_empty(), "{:?}", asked.problems());
}

// Asynchronous hooks: invoked with a single-use token, reported by it.

fn async_run(timeout: Option<u64>) -> Run {
    let mut asked = spec("canary:10:5m");
    asked.hook_invocation = HookInvocation::Async;
    asked.hook_timeout_seconds = timeout;
    let (d, commands) = Deployment::create("d-1", asked, t(0));
    let mut run = Run {
        d,
        now: t(0),
        commands: Vec::new(),
        alias: ("1".into(), None),
    };
    run.absorb(commands);
    run.prepared();
    run
}

impl Run {
    /// The worker's part of an asynchronous gate: mints `token`, and Lambda takes the event.
    fn hook_invoked(&mut self, gate: Gate, step: usize, token: &str) {
        assert!(self.feed(Input::HookStarted {
            gate,
            step,
            token: token.into(),
        }));
        assert!(
            matches!(self.commands.last(), Some(Command::InvokeHook { token: t, .. }) if t == token),
            "{:?}",
            self.commands.last()
        );
        assert!(self.feed(Input::HookInvoked {
            gate,
            step,
            token_sha256: token_digest(token),
        }));
    }

    fn report(&mut self, token: &str, passed: bool) -> bool {
        self.feed(Input::HookReported {
            token: token.into(),
            passed,
            reason: if passed { "suite green" } else { "suite red" }.into(),
        })
    }
}

#[test]
fn an_asynchronous_hook_gates_by_its_report_and_its_token_is_single_use() {
    let mut r = async_run(Some(600));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.secret-a");
    // Only the digest is saved, and the worker waits for nothing.
    let wait = r.d.hook_wait.clone().expect("a hook wait");
    assert_eq!(wait.token_sha256, token_digest("d-1.secret-a"));
    assert!(!serde_json::to_string(&r.d).unwrap().contains("secret-a"));
    assert_eq!(r.d.hook_deadline(), Some(t(600)));
    assert!(!r.d.needs_worker(t(599)));
    assert!(r.d.status_text().contains("waiting for pre's report until"));
    assert_eq!(
        pending(&r.d, t(1)),
        vec![Command::StartTimer {
            step: 0,
            at: t(600)
        }],
        "a repair waits, it does not invoke the hook again"
    );
    // A wrong token, or one for another gate, changes nothing.
    r.at(300);
    let before = r.d.clone();
    assert!(!r.report("d-1.guessed", true));
    assert!(!r.feed(Input::HookHeartbeat {
        token: "d-1.guessed".into()
    }));
    assert_eq!(r.d, before);
    // The report passes the gate; the alias moves.
    assert!(r.report("d-1.secret-a", true));
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    assert!(r.d.hook_wait.is_none());
    // Used: again, it changes nothing.
    let before = r.d.clone();
    assert!(!r.report("d-1.secret-a", false));
    assert_eq!(r.d, before);
    // The PostTraffic gate's hook gets a token of its own; a failed report rolls back.
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    }));
    r.hook_invoked(Gate::PostTraffic, 0, "d-1.secret-b");
    assert!(
        !r.report("d-1.secret-a", true),
        "the PreTraffic token is spent"
    );
    assert!(r.report("d-1.secret-b", false));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason == "PostTraffic gate failed at 10%: suite red"),
        "{:?}",
        r.d.phase
    );
}

#[test]
fn an_asynchronous_hook_fails_its_gate_at_its_deadline_unless_it_heartbeats() {
    // Silent: the gate fails at its deadline, and a late report changes nothing.
    let mut r = async_run(Some(60));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.s");
    r.at(30);
    assert!(r.timer(0), "early: re-armed");
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer { step: 0, at: t(60) })
    );
    r.at(61);
    let before = r.d.clone();
    assert!(!r.report("d-1.s", true), "a report after the deadline");
    assert_eq!(r.d, before);
    assert!(r.timer(0));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("pre neither reported nor heartbeat by its deadline")),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.alias, ("1".into(), None));

    // Heartbeats carry it past its first deadline, up to the hour in all.
    let mut r = async_run(Some(60));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.s");
    r.at(50);
    assert!(r.feed(Input::HookHeartbeat {
        token: "d-1.s".into()
    }));
    assert_eq!(r.d.hook_deadline(), Some(t(110)));
    assert_eq!(
        r.commands.last(),
        Some(&Command::StartTimer {
            step: 0,
            at: t(110)
        })
    );
    r.at(60);
    let before = r.d.clone();
    assert!(
        !r.feed(Input::TimerFired {
            step: 0,
            at: Some(t(60))
        }),
        "the first deadline's timer is stale: the heartbeat armed its own"
    );
    assert_eq!(r.d, before);
    assert!(matches!(r.d.phase, Phase::PreTraffic { step: 0 }));
    r.at(3590);
    let before = r.d.clone();
    assert!(
        !r.feed(Input::HookHeartbeat {
            token: "d-1.s".into()
        }),
        "past its deadline"
    );
    assert_eq!(r.d, before);
    let mut r = async_run(Some(600));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.s");
    for at in (500..3500).step_by(500) {
        r.at(at);
        assert!(r.feed(Input::HookHeartbeat {
            token: "d-1.s".into()
        }));
    }
    assert_eq!(r.d.hook_deadline(), Some(t(3600)), "an hour at most");
    r.at(3500);
    assert!(
        !r.feed(Input::HookHeartbeat {
            token: "d-1.s".into()
        }),
        "no further than the hour"
    );
    r.at(3550);
    assert!(r.report("d-1.s", true));
    assert!(matches!(r.d.phase, Phase::Shifting { step: 0 }));
}

#[test]
fn a_hook_not_known_to_be_invoked_is_started_again_under_a_new_token() {
    let mut r = async_run(None);
    assert!(r.feed(Input::HookStarted {
        gate: Gate::PreTraffic,
        step: 0,
        token: "d-1.first".into(),
    }));
    // The worker died before Lambda took the event: a repair runs the gate again.
    assert_eq!(
        pending(&r.d, t(1)),
        vec![Command::RunGate {
            gate: Gate::PreTraffic,
            step: 0,
            weight: 10.0
        }]
    );
    assert_eq!(
        r.d.hook_wait.as_ref().map(|w| w.deadline),
        Some(t(900)),
        "15 minutes by default"
    );
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.second");
    assert!(!r.report("d-1.first", true), "the first token was replaced");
    assert!(r.report("d-1.second", true));
    // A report before Lambda's acknowledgement is saved still counts.
    let mut r = async_run(None);
    assert!(r.feed(Input::HookStarted {
        gate: Gate::PreTraffic,
        step: 0,
        token: "d-1.quick".into(),
    }));
    assert!(r.report("d-1.quick", true));
    assert!(!r.feed(Input::HookInvoked {
        gate: Gate::PreTraffic,
        step: 0,
        token_sha256: token_digest("d-1.quick"),
    }));
}

#[test]
fn hook_settings_are_checked() {
    let mut asked = spec("canary:10:5m");
    asked.hook_timeout_seconds = Some(60);
    assert!(
        asked
            .problems()
            .join("; ")
            .contains("applies to asynchronous hooks only")
    );
    asked.hook_invocation = HookInvocation::Async;
    assert!(asked.problems().is_empty());
    asked.hook_timeout_seconds = Some(3601);
    assert!(
        asked
            .problems()
            .join("; ")
            .contains("must be from 1 to 3600")
    );
    let json = r#"{"function":"f","alias":"a","source":{"version":"2"},"config":"AllAtOnce","hook_invocation":"later"}"#;
    assert!(serde_json::from_str::<DeploymentSpec>(json).is_err());
}

/// The timers armed so far, in order.
fn timers(r: &Run) -> Vec<Time> {
    r.commands
        .iter()
        .filter_map(|c| match c {
            Command::StartTimer { at, .. } => Some(*at),
            _ => None,
        })
        .collect()
}

#[test]
fn every_move_of_a_wake_arms_one_timer_and_the_old_ones_go_stale() {
    let mut r = async_run(Some(60));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.s");
    assert_eq!(timers(&r), vec![t(60)], "the invocation arms the deadline");
    for at in [10, 20, 30] {
        r.at(at);
        assert!(r.feed(Input::HookHeartbeat {
            token: "d-1.s".into()
        }));
    }
    assert_eq!(timers(&r), vec![t(60), t(70), t(80), t(90)]);
    // Each timer fires; only the last deadline's acts, once.
    r.commands.clear();
    for at in [60, 70, 80] {
        r.at(at);
        let fired = Input::TimerFired {
            step: 0,
            at: Some(t(at)),
        };
        assert!(!r.feed(fired), "the timer for {at} s is stale");
    }
    assert!(r.commands.is_empty(), "{:?}", r.commands);
    // The sweep's timer, not due, changes nothing either.
    assert!(!r.feed(Input::TimerFired { step: 0, at: None }));
    r.at(90);
    assert!(r.timer(0));
    assert!(matches!(r.d.phase, Phase::RollingBack { .. }));

    // A hook that reports early leaves its deadline's timer behind: in the
    // bake that follows it is stale, so the bake's own chain is not doubled.
    let mut r = async_run(Some(60));
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.a");
    assert!(r.report("d-1.a", true));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    }));
    r.at(10);
    r.hook_invoked(Gate::PostTraffic, 0, "d-1.b");
    assert!(r.report("d-1.b", true));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, until } if until == t(300)));
    r.commands.clear();
    for at in [60, 70] {
        r.at(at);
        let leftover = Input::TimerFired {
            step: 0,
            at: Some(t(at)),
        };
        assert!(!r.feed(leftover), "the hook's timer for {at} s");
    }
    assert!(r.commands.is_empty(), "{:?}", r.commands);
    r.at(300);
    assert!(r.timer(0));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
}

#[test]
fn a_second_gate_run_does_not_invoke_a_hook_already_invoked() {
    let mut r = async_run(None);
    r.hook_invoked(Gate::PreTraffic, 0, "d-1.first");
    r.commands.clear();
    assert!(!r.feed(Input::HookStarted {
        gate: Gate::PreTraffic,
        step: 0,
        token: "d-1.racing".into(),
    }));
    assert!(r.commands.is_empty(), "{:?}", r.commands);
    assert!(r.report("d-1.first", true), "the first token still holds");
}

#[test]
fn a_gate_that_outlasts_the_bake_still_has_its_analysis_read_first() {
    let mut r = analysed("steps:10@1m,50@1m,100", r#"{"max_error_rate": 5}"#);
    r.at(10);
    shift_step(&mut r, 0, 5);
    for (at, through) in [(180, 60), (240, 120)] {
        r.at(at);
        assert!(r.timer(0));
        assert_eq!(r.last_measure(), (0, t(0), t(through)));
        assert!(r.measured(counts(100.0, 0.0)));
    }
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    assert!(r.gate(Gate::PreTraffic, 1, true));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(1),
        revision: None,
    }));
    // Shifted at 4:00, its bake extended to 7:00 for its minute; its
    // PostTraffic gate runs to 7:40: the periods published by then are
    // read before step 3, from where step 1 stopped reading (2:00).
    r.commands.clear();
    r.at(460);
    assert!(r.gate(Gate::PostTraffic, 1, true));
    assert!(
        matches!(r.d.phase, Phase::Baking { step: 1, until } if until == t(420)),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.last_measure(), (1, t(120), t(300)));
    assert!(r.measured(counts(100.0, 30.0)));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.starts_with("analysis failed at 50%")),
        "{:?}",
        r.d.phase
    );
}

#[test]
fn a_watch_entered_already_due_reads_at_once() {
    let settings = r#"{"max_error_rate": 5, "watch_after_promotion_seconds": 60}"#;
    let mut r = analysed("AllAtOnce", settings);
    assert!(r.d.has_bake_ahead(), "the watch is a bake a pause holds at");
    r.at(5);
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    }));
    assert!(r.d.has_bake_ahead());
    r.at(400);
    assert!(r.gate(Gate::PostTraffic, 0, true));
    assert!(matches!(r.d.phase, Phase::Baking { step: 0, .. }));
    assert_eq!(r.last_measure(), (0, t(0), t(240)));
    assert!(r.measured(counts(100.0, 0.0)));
    assert_eq!(r.d.phase, Phase::Promoted);
}

#[test]
fn a_deployment_with_a_deadline_arms_its_timer_with_its_first_command() {
    let mut r = Run::new("canary:10:1h");
    r.d.deadline = Some(t(600));
    assert_eq!(
        pending(&r.d, t(0)),
        vec![
            Command::Prepare,
            Command::StartTimer {
                step: 0,
                at: t(600)
            }
        ]
    );
}

#[test]
fn a_deployment_not_ended_by_its_deadline_is_aborted() {
    // Baking: rolled back at the deadline, though its bake ends later.
    let mut r = Run::new("canary:10:1h");
    r.d.deadline = Some(t(600));
    r.prepared();
    shift_step(&mut r, 0, 5);
    assert_eq!(r.d.wake(), Some((0, t(600))), "the deadline comes first");
    r.at(599);
    assert!(!r.feed(Input::TimerFired { step: 0, at: None }), "not yet");
    // Its own timer come early (SQS's longest delay is 15 minutes) changes
    // nothing: the engine sends it again without saving.
    r.commands.clear();
    assert!(!r.feed(Input::TimerFired {
        step: 0,
        at: Some(t(600))
    }));
    assert!(r.commands.is_empty());
    r.at(600);
    assert!(r.timer(0));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("had not ended by its deadline")),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.alias, ("1".into(), None));
    assert_eq!(
        r.d.wake(),
        None,
        "rolling back: the deadline no longer applies"
    );

    // Before its first shift (a gate still running): rolled back, and the gate's answer comes too late.
    let mut r = Run::new("canary:10:1h");
    r.d.deadline = Some(t(60));
    r.prepared();
    assert!(r.d.needs_worker(t(61)));
    r.at(61);
    assert!(r.feed(Input::TimerFired { step: 0, at: None }));
    assert!(
        matches!(
            r.d.phase,
            Phase::FailedToStart { .. } | Phase::RollingBack { .. }
        ),
        "{:?}",
        r.d.phase
    );
    assert!(
        !r.gate(Gate::PreTraffic, 0, true),
        "the gate's late answer changes nothing"
    );
}

#[test]
fn a_version_that_goes_bad_late_is_judged_on_its_newest_minutes_too() {
    let mut r = analysed(
        "canary:10:30m",
        r#"{"max_error_rate": 5, "baseline_margin": 5}"#,
    );
    shift_step(&mut r, 0, 5);
    // Three good minutes, then one that fails every call: 1.3% over the
    // window, 100% in the new minute.
    for (at, new) in [
        (180, counts(1000.0, 0.0)),
        (240, counts(2000.0, 0.0)),
        (300, counts(3000.0, 0.0)),
    ] {
        r.at(at);
        assert!(r.timer(0));
        assert!(r.measured(new));
        assert!(matches!(r.d.phase, Phase::Baking { .. }), "{:?}", r.d.phase);
    }
    r.at(360);
    assert!(r.timer(0));
    assert_eq!(r.last_measure(), (0, t(0), t(240)));
    assert!(r.measured(counts(3040.0, 40.0)));
    let Phase::RollingBack { reason } = &r.d.phase else {
        panic!("{:?}", r.d.phase)
    };
    assert!(
        reason.starts_with(
            "analysis failed at 10%: error rate 100.0% (40 of 40 calls, minute 08:03) > 5%"
        ),
        "{reason}"
    );
}

/// A linear rollout with the freeze policy, its first step shifted.
fn frozen_run(frozen_for: Option<u64>) -> Run {
    let mut r = Run::new("linear:10:10s");
    r.d.spec.rollback = RollbackPolicy::Freeze;
    r.d.spec.frozen_for_seconds = frozen_for;
    r.prepared();
    r.gate(Gate::PreTraffic, 0, true);
    r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    });
    r
}

#[test]
fn a_failed_gate_under_the_freeze_policy_holds_the_split_until_an_abort() {
    let mut r = frozen_run(None);
    let writes = |r: &Run| {
        r.commands
            .iter()
            .filter(|c| matches!(c, Command::SetAlias { .. }))
            .count()
    };
    let before = writes(&r);
    assert!(r.gate(Gate::PostTraffic, 0, false));
    let Phase::FrozenOnFailure {
        step,
        failed,
        until,
        ..
    } = r.d.phase.clone()
    else {
        panic!("{:?}", r.d.phase)
    };
    assert_eq!((step, failed), (0, FailedCheck::Gate(Gate::PostTraffic)));
    assert_eq!(until, t(DEFAULT_FROZEN_SECS as i64));
    assert_eq!(writes(&r), before, "the split is held: no alias write");
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    assert_eq!(r.d.wake(), Some((0, until)), "its wait's end is armed");
    assert!(
        r.commands
            .contains(&Command::StartTimer { step: 0, at: until })
    );
    assert!(
        r.d.status_text().contains("frozen at 10%"),
        "{}",
        r.d.status_text()
    );
    // Neither a pause nor a gate result nor a timer before its end moves it.
    r.at(60);
    assert!(!r.feed(Input::Pause));
    assert!(!r.gate(Gate::PostTraffic, 0, true));
    assert!(!r.feed(Input::TimerFired {
        step: 0,
        at: Some(t(30))
    }));
    // The wait's own timer come early (SQS's 15 minutes) is armed again.
    assert!(r.feed(Input::TimerFired {
        step: 0,
        at: Some(until)
    }));
    assert!(matches!(r.d.phase, Phase::FrozenOnFailure { .. }));
    assert!(r.feed(Input::Abort {
        reason: "ops".into()
    }));
    assert_eq!(r.alias, ("1".into(), None), "aborted: rolled back at once");
    assert!(matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("ops")));
}

#[test]
fn a_frozen_deployment_rolls_back_at_the_end_of_its_wait_or_on_an_alarm() {
    let mut r = frozen_run(Some(120));
    assert!(r.gate(Gate::PostTraffic, 0, false));
    r.at(119);
    r.timer(0);
    assert!(matches!(r.d.phase, Phase::FrozenOnFailure { .. }));
    r.at(120);
    assert!(r.timer(0));
    assert!(
        matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("no operator's word") && reason.contains("PostTraffic")),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.alias, ("1".into(), None));

    let mut r = frozen_run(Some(120));
    assert!(r.gate(Gate::PostTraffic, 0, false));
    r.at(5);
    assert!(r.feed(Input::AlarmRaised {
        alarm: "errors".into()
    }));
    assert!(matches!(&r.d.phase, Phase::RollingBack { reason } if reason.contains("errors")));
}

#[test]
fn a_resumed_or_promoted_frozen_deployment_runs_its_failed_gate_again() {
    // PostTraffic failed at 10%: resume runs it again at that step.
    let mut r = frozen_run(None);
    assert!(r.gate(Gate::PostTraffic, 0, false));
    r.at(30);
    assert!(r.feed(Input::Resume));
    assert_eq!(r.d.phase, Phase::PostTraffic { step: 0 });
    assert_eq!(r.gates_run().last(), Some(&(Gate::PostTraffic, 0)));
    assert!(!r.d.skip_waits);
    // It fails again: frozen again, with a new wait.
    assert!(r.gate(Gate::PostTraffic, 0, false));
    assert!(
        matches!(r.d.phase, Phase::FrozenOnFailure { until, .. } if until == t(30 + DEFAULT_FROZEN_SECS as i64))
    );
    // A promote skips the waits, and still runs the gate.
    assert!(r.feed(Input::Promote));
    assert!(r.d.skip_waits);
    assert_eq!(r.d.phase, Phase::PostTraffic { step: 0 });
    assert!(r.gate(Gate::PostTraffic, 0, true));
    assert_eq!(
        r.d.phase,
        Phase::PreTraffic { step: 1 },
        "no bake: waits skipped"
    );

    // A PreTraffic gate failed before 20%: the alias holds 10%, and resume
    // runs that gate again.
    let mut r = frozen_run(None);
    assert!(r.gate(Gate::PostTraffic, 0, true));
    r.at(10);
    assert!(r.timer(0));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
    assert!(r.gate(Gate::PreTraffic, 1, false));
    assert!(matches!(
        r.d.phase,
        Phase::FrozenOnFailure {
            step: 1,
            failed: FailedCheck::Gate(Gate::PreTraffic),
            ..
        }
    ));
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    assert!(r.feed(Input::Resume));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
}

#[test]
fn with_no_traffic_on_the_new_version_the_freeze_policy_rolls_back() {
    let mut r = Run::new("linear:10:10s");
    r.d.spec.rollback = RollbackPolicy::Freeze;
    r.prepared();
    assert!(r.gate(Gate::PreTraffic, 0, false));
    assert!(
        matches!(
            r.d.phase,
            Phase::RollingBack { .. } | Phase::RolledBack { .. }
        ),
        "{:?}",
        r.d.phase
    );
}

#[test]
fn the_freeze_policy_s_wait_is_checked_when_asked_for() {
    let mut asked = spec("linear:10:10s");
    asked.frozen_for_seconds = Some(60);
    assert_eq!(
        asked.problems(),
        vec!["frozen_for_seconds applies to rollback: freeze only".to_owned()]
    );
    asked.rollback = RollbackPolicy::Freeze;
    assert!(asked.problems().is_empty());
    for secs in [0, MAX_FROZEN_SECS + 1] {
        asked.frozen_for_seconds = Some(secs);
        assert_eq!(
            asked.problems(),
            vec![format!(
                "frozen_for_seconds: {secs} must be from 1 to {MAX_FROZEN_SECS} (a week)"
            )]
        );
    }
    let json = r#"{"function":"f","alias":"live","source":{"version":"2"},"config":"AllAtOnce","rollback":"frozen"}"#;
    let refused = serde_json::from_str::<DeploymentSpec>(json).unwrap_err();
    assert!(refused.to_string().contains("frozen"), "{refused}");
}

#[test]
fn a_failed_analysis_under_the_freeze_policy_holds_and_a_resume_after_its_bake_goes_on() {
    let mut r = analysed("steps:10@1m,50@1m,100", r#"{"max_error_rate": 5}"#);
    r.d.spec.rollback = RollbackPolicy::Freeze;
    r.at(10);
    shift_step(&mut r, 0, 5);
    r.at(180);
    assert!(r.timer(0));
    assert!(r.measured(counts(100.0, 30.0)));
    assert!(
        matches!(&r.d.phase, Phase::FrozenOnFailure { step: 0, failed: FailedCheck::Analysis { .. }, reason, .. } if reason.starts_with("analysis failed at 10%")),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    // Past the bake's end (4:00): the next step, its analysis waived.
    r.at(300);
    assert!(r.feed(Input::Resume));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });
}

#[test]
fn a_frozen_deployment_resumed_mid_bake_watches_the_rest_of_it_and_one_resumed_after_its_gate_bakes_anew()
 {
    // The analysis fails at its first read, 3 minutes into a 10-minute
    // bake: resumed, the step's analysis is waived and the bake waited out.
    let mut r = analysed("steps:10@10m,50@1m,100", r#"{"max_error_rate": 5}"#);
    r.d.spec.rollback = RollbackPolicy::Freeze;
    r.at(10);
    shift_step(&mut r, 0, 5);
    r.at(180);
    assert!(r.timer(0));
    assert!(r.measured(counts(100.0, 30.0)));
    let Phase::FrozenOnFailure {
        failed: FailedCheck::Analysis { bake_ends },
        ..
    } = r.d.phase.clone()
    else {
        panic!("{:?}", r.d.phase)
    };
    assert!(bake_ends > t(200), "{bake_ends}");
    r.at(200);
    assert!(r.feed(Input::Resume));
    assert_eq!(
        r.d.phase,
        Phase::Baking {
            step: 0,
            until: bake_ends
        }
    );
    assert!(r.d.analysis.is_none(), "waived for this step");
    r.at((bake_ends - t(0)).num_seconds());
    assert!(r.timer(0));
    assert_eq!(r.d.phase, Phase::PreTraffic { step: 1 });

    // A PostTraffic gate failed at t0 and run again on a resume at t30:
    // passed, its step's 10 s bake counts from the resume.
    let mut r = frozen_run(None);
    assert!(r.gate(Gate::PostTraffic, 0, false));
    r.at(30);
    assert!(r.feed(Input::Resume));
    assert!(r.gate(Gate::PostTraffic, 0, true));
    assert_eq!(
        r.d.phase,
        Phase::Baking {
            step: 0,
            until: t(40)
        }
    );
}

/// The alias writes a run made, as percents on the new version.
fn weights_written(r: &Run) -> Vec<f64> {
    r.commands
        .iter()
        .filter_map(|c| match c {
            Command::SetAlias { additional, .. } => {
                Some(additional.as_ref().map_or_else(|| 0.0, |(_, w)| *w))
            }
            _ => None,
        })
        .collect()
}

/// A `steps:10@30s,50@30s,100` rollout with the gradual policy, its second
/// step shifted (50%).
fn stepping_run() -> Run {
    let mut r = Run::new("steps:10@30s,50@30s,100");
    r.d.spec.rollback = RollbackPolicy::Gradual;
    r.prepared();
    for (step, at) in [(0, 0), (1, 30)] {
        r.at(at);
        if step > 0 {
            assert!(r.timer(step - 1));
        }
        assert!(r.gate(Gate::PreTraffic, step, true));
        assert!(r.feed(Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Step(step),
            revision: None,
        }));
        if step == 0 {
            assert!(r.gate(Gate::PostTraffic, 0, true));
        }
    }
    r
}

#[test]
fn a_gradual_rollback_walks_the_weights_down_each_judged_and_baked_and_ends_at_0() {
    let mut r = stepping_run();
    assert!(r.gate(Gate::PostTraffic, 1, false));
    assert!(
        matches!(
            &r.d.phase,
            Phase::SteppingBack {
                step: 0,
                stage: BackStage::Shifting,
                reason
            } if reason.contains("PostTraffic gate failed at 50%")
        ),
        "{:?}",
        r.d.phase
    );
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::StepBack(0),
        revision: None,
    }));
    assert_eq!(r.d.weight, 10.0);
    assert_eq!(r.alias, ("1".into(), Some(("2".into(), 10.0))));
    // The PostTraffic gate judges the old version at 10%, then its bake.
    assert_eq!(
        r.commands.last(),
        Some(&Command::RunGate {
            gate: Gate::PostTraffic,
            step: 0,
            weight: 10.0
        })
    );
    assert!(r.gate(Gate::PostTraffic, 0, true));
    let Phase::SteppingBack {
        stage: BackStage::Baking { until },
        ..
    } = r.d.phase.clone()
    else {
        panic!("{:?}", r.d.phase)
    };
    assert_eq!(until, t(60), "step 1's bake of 30 s");
    assert_eq!(r.d.wake(), Some((0, until)));
    r.at(45);
    assert!(!r.timer(1), "another step's timer is stale");
    r.at(60);
    assert!(r.timer(0));
    assert!(
        matches!(r.d.phase, Phase::RollingBack { .. }),
        "{:?}",
        r.d.phase
    );
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Rollback,
        revision: None,
    }));
    assert!(matches!(r.d.phase, Phase::RolledBack { .. }));
    assert_eq!(weights_written(&r), vec![10.0, 50.0, 10.0, 0.0]);
    assert_eq!(r.alias, ("1".into(), None));
}

#[test]
fn on_the_way_down_a_failed_gate_an_alarm_or_an_abort_go_to_0_at_once() {
    for input in [
        Input::GateResult {
            gate: Gate::PostTraffic,
            step: 0,
            passed: false,
            reason: "old version sick too".into(),
        },
        Input::AlarmRaised {
            alarm: "errors".into(),
        },
        Input::Abort {
            reason: "ops".into(),
        },
    ] {
        let mut r = stepping_run();
        assert!(r.gate(Gate::PostTraffic, 1, false));
        assert!(r.feed(Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::StepBack(0),
            revision: None,
        }));
        assert!(r.feed(input.clone()), "{input:?}");
        assert!(
            matches!(r.d.phase, Phase::RollingBack { .. }),
            "{input:?}: {:?}",
            r.d.phase
        );
        assert_eq!(r.alias, ("1".into(), None), "{input:?}");
    }
    // An alarm while the first step down is being written: at once too.
    let mut r = stepping_run();
    assert!(r.gate(Gate::PostTraffic, 1, false));
    assert!(r.feed(Input::AlarmRaised {
        alarm: "errors".into()
    }));
    assert_eq!(r.alias, ("1".into(), None));
}

#[test]
fn a_gradual_rollback_from_the_first_step_or_before_any_shift_goes_to_0() {
    let mut r = Run::new("steps:10@30s,50@30s,100");
    r.d.spec.rollback = RollbackPolicy::Gradual;
    r.prepared();
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::Step(0),
        revision: None,
    }));
    assert!(r.gate(Gate::PostTraffic, 0, false));
    assert!(
        matches!(r.d.phase, Phase::RollingBack { .. }),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.alias, ("1".into(), None));

    let mut r = Run::new("steps:10@30s,50@30s,100");
    r.d.spec.rollback = RollbackPolicy::Gradual;
    r.prepared();
    assert!(r.gate(Gate::PreTraffic, 0, false));
    assert!(matches!(
        r.d.phase,
        Phase::RollingBack { .. } | Phase::RolledBack { .. }
    ));
}

#[test]
fn a_gradual_rollback_needs_synchronous_hooks() {
    let mut asked = spec("linear:10:10s");
    asked.rollback = RollbackPolicy::Gradual;
    assert!(asked.problems().is_empty());
    asked.hook_invocation = HookInvocation::Async;
    assert_eq!(
        asked.problems(),
        vec!["rollback: gradual needs synchronous hooks (hook_invocation: sync): the gates on the way down answer at once".to_owned()]
    );
    asked.hook_invocation = HookInvocation::Sync;
    asked.frozen_for_seconds = Some(60);
    assert_eq!(
        asked.problems(),
        vec!["frozen_for_seconds applies to rollback: freeze only".to_owned()]
    );
}

#[test]
fn only_a_write_that_may_be_in_flight_counts_as_sluice_s_besides_the_last_one() {
    // Stepped back to 10% and baking: no write in flight; a person's 100%
    // (or any other step's weight) is theirs.
    let mut r = stepping_run();
    assert!(r.gate(Gate::PostTraffic, 1, false));
    assert!(r.feed(Input::AliasUpdated {
        member: 0,
        update: AliasUpdate::StepBack(0),
        revision: None,
    }));
    assert!(r.gate(Gate::PostTraffic, 0, true));
    let split = |w: f64| ("1".to_owned(), Some(("2".to_owned(), w)));
    assert_eq!(r.d.routings_left_by_sluice(0), vec![split(10.0)]);
    // Rolling back from 10%: the 50% shift or the 0% step may still land,
    // never the 100% of the last step.
    r.at(30);
    assert!(r.feed(Input::Abort {
        reason: "ops".into()
    }));
    let routings = r.d.routings_left_by_sluice(0);
    assert!(routings.contains(&split(10.0)) && routings.contains(&split(50.0)));
    assert!(!routings.contains(&("2".to_owned(), None)), "{routings:?}");
}

/// A release group: greeter (the deployment's own), worker and cron, each
/// from version 1 to 2, 10% then 100%.
fn group_run(config: &str) -> Run {
    let mut asked = spec(config);
    asked.group = ["worker", "cron"]
        .iter()
        .map(|function| MemberSpec {
            function: (*function).into(),
            alias: "live".into(),
            source: VersionSource::Version("2".into()),
        })
        .collect();
    let (d, commands) = Deployment::create("g-1", asked, t(0));
    let mut r = Run {
        d,
        now: t(0),
        commands: Vec::new(),
        alias: ("1".into(), None),
    };
    r.absorb(commands);
    let member = |from: &str| PreparedMember {
        from_version: from.into(),
        to_version: "2".into(),
        revision: Some(format!("r-{from}")),
        function_arn: None,
    };
    assert!(r.feed(Input::Prepared {
        from_version: "1".into(),
        to_version: "2".into(),
        revision: None,
        metric_timing: None,
        function_arn: None,
        group: vec![member("1"), member("1")],
    }));
    r
}

/// An alias write as issued: its member, its update and the new version's share.
type Write = (usize, AliasUpdate, Option<(String, f64)>);

/// The alias writes issued since `from` (an index into the run's commands).
fn writes_since(r: &Run, from: usize) -> Vec<Write> {
    r.commands[from..]
        .iter()
        .filter_map(|c| match c {
            Command::SetAlias {
                member,
                update,
                additional,
                ..
            } => Some((*member, *update, additional.clone())),
            _ => None,
        })
        .collect()
}

fn landed_on(r: &mut Run, member: usize, update: AliasUpdate) -> bool {
    r.feed(Input::AliasUpdated {
        update,
        revision: Some(format!("m{member}")),
        member,
    })
}

#[test]
fn a_group_shifts_every_member_in_the_same_step_and_gates_once_for_all() {
    let mut r = group_run("canary:10:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    let split = Some(("2".to_owned(), 10.0));
    assert_eq!(
        writes_since(&r, 0),
        (0..3)
            .map(|m| (m, AliasUpdate::Step(0), split.clone()))
            .collect::<Vec<_>>()
    );
    // Two of three landed: still shifting, nothing more issued, and the
    // sweep's repair writes only the third.
    let before = r.commands.len();
    assert!(landed_on(&mut r, 2, AliasUpdate::Step(0)));
    assert!(landed_on(&mut r, 0, AliasUpdate::Step(0)));
    assert!(
        !landed_on(&mut r, 0, AliasUpdate::Step(0)),
        "a repeat changes nothing"
    );
    assert_eq!(r.d.phase, Phase::Shifting { step: 0 });
    assert_eq!(r.commands.len(), before);
    assert_eq!(
        pending(&r.d, r.now),
        vec![Command::SetAlias {
            primary: "1".into(),
            additional: split.clone(),
            update: AliasUpdate::Step(0),
            member: 1,
        }]
    );
    assert_eq!(
        r.d.status_text(),
        "step 1/2: shifting, 2 of 3 members at 10%"
    );
    assert!(landed_on(&mut r, 1, AliasUpdate::Step(0)));
    assert_eq!(r.d.phase, Phase::PostTraffic { step: 0 });
    assert!((0..3).all(|m| r.d.member(m).weight == 10.0));
    assert_eq!(r.d.member(1).alias_revision.as_deref(), Some("m1"));
    let shifted = events_of(&r.commands)
        .into_iter()
        .find(|e| e.kind == EventKind::Shifted)
        .unwrap();
    assert_eq!(
        shifted.message,
        "10% on every member's new version: greeter:live 2, worker:live 2, cron:live 2"
    );
    // One gate per step for the whole group.
    assert!(r.gate(Gate::PostTraffic, 0, true));
    r.at(5);
    assert!(r.timer(0));
    assert!(r.gate(Gate::PreTraffic, 1, true));
    for m in [1, 0, 2] {
        assert!(landed_on(&mut r, m, AliasUpdate::Step(1)));
    }
    assert!(r.gate(Gate::PostTraffic, 1, true));
    assert_eq!(r.d.phase, Phase::Promoted);
    assert_eq!(
        r.gates_run(),
        vec![
            (Gate::PreTraffic, 0),
            (Gate::PostTraffic, 0),
            (Gate::PreTraffic, 1),
            (Gate::PostTraffic, 1)
        ]
    );
    // Each member's alias is left for the next deployment of it.
    assert_eq!(
        r.d.alias_left(2),
        Some(AliasLeft {
            version: "2".into(),
            revision: "m2".into(),
            function_arn: None
        })
    );
}

#[test]
fn a_failure_in_a_group_rolls_every_member_back_even_mid_shift() {
    // An abort with one member's shift landed and two not: every member is
    // written back, the rollback ends once all three have landed.
    let mut r = group_run("canary:10:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(landed_on(&mut r, 1, AliasUpdate::Step(0)));
    let from = r.commands.len();
    assert!(r.feed(Input::Abort { reason: "x".into() }));
    assert_eq!(
        writes_since(&r, from),
        (0..3)
            .map(|m| (m, AliasUpdate::Rollback, None))
            .collect::<Vec<_>>()
    );
    assert!(landed_on(&mut r, 0, AliasUpdate::Rollback));
    assert!(landed_on(&mut r, 2, AliasUpdate::Rollback));
    assert!(matches!(r.d.phase, Phase::RollingBack { .. }));
    assert!(landed_on(&mut r, 1, AliasUpdate::Rollback));
    assert!(matches!(r.d.phase, Phase::RolledBack { .. }));
    assert!((0..3).all(|m| r.d.member(m).weight == 0.0));
    let last = events_of(&r.commands).pop().unwrap();
    assert_eq!(
        last.message,
        "every member serves its old version again (greeter:live 1, worker:live 1, cron:live 1)"
    );

    // A PreTraffic gate failed at step 2 rolls all three back from 10%.
    let mut r = group_run("linear:50:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    for m in 0..3 {
        landed_on(&mut r, m, AliasUpdate::Step(0));
    }
    assert!(r.gate(Gate::PostTraffic, 0, true));
    r.at(5);
    assert!(r.timer(0));
    let from = r.commands.len();
    assert!(r.gate(Gate::PreTraffic, 1, false));
    assert_eq!(writes_since(&r, from).len(), 3);

    // A member's write that fails for good rolls the group back.
    let mut r = group_run("canary:10:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(landed_on(&mut r, 0, AliasUpdate::Step(0)));
    assert!(r.feed(Input::AliasWriteFailed {
        update: AliasUpdate::Step(0),
        member: 2,
        reason: "AccessDeniedException".into(),
    }));
    let Phase::RollingBack { reason } = &r.d.phase else {
        panic!("{:?}", r.d.phase)
    };
    assert_eq!(
        reason,
        "the shift of cron:live to 10% failed: AccessDeniedException"
    );
}

#[test]
fn a_member_changed_by_hand_is_left_as_found_and_the_others_roll_back() {
    let mut r = group_run("canary:10:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(landed_on(&mut r, 0, AliasUpdate::Step(0)));
    let from = r.commands.len();
    assert!(r.feed(Input::AliasChangedByHand {
        found: "version 3".into(),
        revision: Some("by-hand".into()),
        member: 1,
    }));
    // Member 1 is not written; 0 and 2 are rolled back.
    assert_eq!(
        writes_since(&r, from),
        vec![
            (0, AliasUpdate::Rollback, None),
            (2, AliasUpdate::Rollback, None)
        ]
    );
    assert!(!r.d.member(1).alias_routed_by_sluice);
    // Another change by hand during the rollback: left as found too.
    assert!(r.feed(Input::AliasChangedByHand {
        found: "version 4".into(),
        revision: Some("by-hand-2".into()),
        member: 2,
    }));
    assert!(landed_on(&mut r, 0, AliasUpdate::Rollback));
    assert!(matches!(r.d.phase, Phase::RolledBack { .. }));
    assert!(r.d.alias_left(0).is_some());
    assert_eq!(r.d.alias_left(1), None);
    assert_eq!(r.d.alias_left(2), None);
}

#[test]
fn a_group_s_analysis_judges_every_member_and_names_the_one_that_fails() {
    let mut r = group_run("canary:10:5m");
    r.d.spec.analysis = Some(serde_json::from_str("{}").unwrap());
    assert!(r.gate(Gate::PreTraffic, 0, true));
    for m in 0..3 {
        landed_on(&mut r, m, AliasUpdate::Step(0));
    }
    assert!(r.gate(Gate::PostTraffic, 0, true));
    let a = r.d.analysis.clone().expect("an analysis");
    let read = |errors: f64| Measurement {
        from: a.from,
        to: a.from + ChronoDuration::minutes(2),
        new: counts(100.0, errors),
        old: counts(900.0, 0.0),
    };
    r.at(400);
    // Not every member's numbers: stale.
    assert!(!r.feed(Input::Measured {
        step: 0,
        measurement: read(0.0),
        group: vec![read(0.0)],
    }));
    assert!(r.feed(Input::Measured {
        step: 0,
        measurement: read(0.0),
        group: vec![read(0.0), read(50.0)],
    }));
    let Phase::RollingBack { reason } = &r.d.phase else {
        panic!("{:?}", r.d.phase)
    };
    assert!(
        reason.starts_with("analysis failed at 10%: cron:live: "),
        "{reason}"
    );
}

#[test]
fn a_group_queues_behind_the_holder_of_any_member_s_alias() {
    let (mut d, _) = Deployment::create("g", group_run("canary:10:5s").d.spec, t(0));
    let (queued, _) = decide(
        &d,
        &Input::LockBusy {
            holder: "other".into(),
            member: 2,
        },
        t(1),
    );
    assert_eq!(
        queued.phase,
        Phase::Queued {
            holder: "other".into(),
            member: 2
        }
    );
    assert_eq!(
        queued.status_text(),
        "queued behind other, which holds cron:live"
    );
    // A member the deployment does not have: not applied.
    let (same, commands) = decide(
        &d,
        &Input::LockBusy {
            holder: "other".into(),
            member: 3,
        },
        t(1),
    );
    assert_eq!((same, commands.len()), (d.clone(), 0));
    // Prepared with fewer members than asked: it fails to start.
    d.phase = Phase::Created;
    let (failed, _) = decide(
        &d,
        &Input::Prepared {
            from_version: "1".into(),
            to_version: "2".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
            group: vec![],
        },
        t(1),
    );
    assert!(matches!(failed.phase, Phase::FailedToStart { .. }));
}

#[test]
fn a_member_already_on_its_new_version_is_left_alone() {
    let mut asked = group_run("canary:10:5s").d.spec;
    asked.group.truncate(1);
    let (d, _) = Deployment::create("g", asked, t(0));
    let (d, commands) = decide(
        &d,
        &Input::Prepared {
            from_version: "1".into(),
            to_version: "2".into(),
            revision: None,
            metric_timing: None,
            function_arn: None,
            group: vec![PreparedMember {
                from_version: "2".into(),
                to_version: "2".into(),
                revision: None,
                function_arn: None,
            }],
        },
        t(1),
    );
    assert_eq!(
        events_of(&commands)[0].message,
        "greeter:live 1 → 2, worker:live already on 2, left as it is"
    );
    let (d, commands) = decide(
        &d,
        &Input::GateResult {
            gate: Gate::PreTraffic,
            step: 0,
            passed: true,
            reason: "ok".into(),
        },
        t(2),
    );
    let writes: Vec<usize> = commands
        .iter()
        .filter_map(|c| match c {
            Command::SetAlias { member, .. } => Some(*member),
            _ => None,
        })
        .collect();
    assert_eq!(writes, vec![0]);
    let (d, _) = decide(
        &d,
        &Input::AliasUpdated {
            update: AliasUpdate::Step(0),
            revision: None,
            member: 0,
        },
        t(3),
    );
    assert_eq!(d.phase, Phase::PostTraffic { step: 0 });
}

#[test]
fn a_group_is_refused_with_each_problem_named() {
    let mut asked = group_run("canary:10:5s").d.spec;
    assert!(asked.problems().is_empty(), "{:?}", asked.problems());
    asked.group.push(MemberSpec {
        function: "greeter".into(),
        alias: "live".into(),
        source: VersionSource::Version("3".into()),
    });
    asked.group.push(MemberSpec {
        function: "bad name!".into(),
        alias: "".into(),
        source: VersionSource::Artifact {
            bucket: "".into(),
            key: "k".into(),
            object_version: None,
        },
    });
    asked.on_manual_change = OnManualChange::Freeze;
    let problems = asked.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("group[3].function: ")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"group[3].alias must not be empty".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"group[3].source.artifact needs a bucket and a key".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"group[2]: greeter:live is in the group twice".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("on_manual_change: freeze applies to one function")),
        "{problems:?}"
    );

    let mut asked = group_run("canary:10:5s").d.spec;
    asked.group = (0..MAX_GROUP_MEMBERS)
        .map(|i| MemberSpec {
            function: format!("f{i}"),
            alias: "live".into(),
            source: VersionSource::Version("2".into()),
        })
        .collect();
    assert_eq!(
        asked.problems(),
        vec![format!(
            "group: 21 functions with greeter, at most 20 in a group"
        )]
    );
    // Strict: a misspelled member field is refused by name.
    let typo = r#"{"function":"w","alias":"live","sorce":{"version":"2"}}"#;
    let err = serde_json::from_str::<MemberSpec>(typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `sorce`"), "{err}");
}

#[test]
fn a_rollback_refused_for_good_leaves_that_alias_to_a_person_and_ends_the_rest() {
    let mut r = group_run("canary:10:5s");
    assert!(r.gate(Gate::PreTraffic, 0, true));
    for m in 0..3 {
        landed_on(&mut r, m, AliasUpdate::Step(0));
    }
    assert!(r.feed(Input::Abort { reason: "x".into() }));
    assert!(r.feed(Input::AliasWriteFailed {
        update: AliasUpdate::Rollback,
        member: 0,
        reason: "ResourceNotFoundException".into(),
    }));
    assert!(
        matches!(r.d.phase, Phase::RollingBack { .. }),
        "the others still roll back"
    );
    assert!(landed_on(&mut r, 1, AliasUpdate::Rollback));
    assert!(landed_on(&mut r, 2, AliasUpdate::Rollback));
    assert!(
        matches!(r.d.phase, Phase::RolledBack { .. }),
        "{:?}",
        r.d.phase
    );
    assert_eq!(r.d.alias_left(0), None, "not Sluice's to hand on");
    let lines: Vec<String> = events_of(&r.commands)
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        lines.contains(&"the rollback of greeter:live was refused (ResourceNotFoundException): left for a person to put back".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            "the members Sluice still holds serve their old versions again (greeter:live 1, worker:live 1, cron:live 1); greeter:live left as found"
        )
    );
}

#[test]
fn a_member_left_on_its_version_is_not_judged_by_the_analysis() {
    let mut asked = group_run("canary:10:5m").d.spec;
    asked.group.truncate(1);
    asked.analysis = Some(serde_json::from_str("{}").unwrap());
    let (d, _) = Deployment::create("g", asked, t(0));
    let mut r = Run {
        d,
        now: t(0),
        commands: Vec::new(),
        alias: ("1".into(), None),
    };
    assert!(r.feed(Input::Prepared {
        from_version: "1".into(),
        to_version: "2".into(),
        revision: None,
        metric_timing: None,
        function_arn: None,
        group: vec![PreparedMember {
            from_version: "2".into(),
            to_version: "2".into(),
            revision: None,
            function_arn: None,
        }],
    }));
    assert!(r.gate(Gate::PreTraffic, 0, true));
    assert!(landed_on(&mut r, 0, AliasUpdate::Step(0)));
    assert!(r.gate(Gate::PostTraffic, 0, true));
    let a = r.d.analysis.clone().expect("an analysis");
    let read = |errors: f64| Measurement {
        from: a.from,
        to: a.from + ChronoDuration::minutes(2),
        new: counts(100.0, errors),
        old: counts(900.0, 0.0),
    };
    r.at(400);
    // The unmoved member's numbers (all failing) are not its new version's.
    assert!(r.feed(Input::Measured {
        step: 0,
        measurement: read(0.0),
        group: vec![read(100.0)],
    }));
    assert!(
        !matches!(r.d.phase, Phase::RollingBack { .. }),
        "{:?}",
        r.d.phase
    );
}

#[test]
fn one_function_named_two_ways_is_one_member_and_smoke_tests_name_members() {
    let mut asked = group_run("canary:10:5s").d.spec;
    asked.group[0].function = "arn:aws:lambda:eu-west-1:123456789012:function:greeter".into();
    assert_eq!(
        asked.problems(),
        vec!["group[0]: arn:aws:lambda:eu-west-1:123456789012:function:greeter:live is in the group twice".to_owned()]
    );
    let mut asked = group_run("canary:10:5s").d.spec;
    let test = |function: &str| -> crate::smoke::SmokeTest {
        serde_json::from_value(serde_json::json!({"name": "t", "function": function})).unwrap()
    };
    asked.smoke_tests = vec![test("worker"), test("mailer")];
    assert_eq!(
        asked.problems(),
        vec!["smoke_tests[1].function: mailer is not a function this deployment moves".to_owned()]
    );
}
