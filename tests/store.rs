//! The deployment store on the local stack's DynamoDB, stood up from template.yaml.

mod support;

use anyhow::Result;
use chrono::{TimeZone, Utc};
use sluice::budget::{Budget, BudgetError};
use sluice::domain::deployment::{
    AliasLeft, AliasUpdate, Deployment, DeploymentSpec, Input, OnBusy, VersionSource, decide,
    events_of,
};
use sluice::ports::Deployments as _;
use sluice::store::keys::Lock;
use sluice::store::{IN_FLIGHT_GRACE_SECS, LockOutcome, STUCK_AFTER_SECS, StoreError};
use support::*;

fn spec() -> DeploymentSpec {
    DeploymentSpec {
        on_busy: OnBusy::Queue,
        ..DeploymentSpec::new(
            "greeter",
            "live",
            VersionSource::Version("2".into()),
            "canary:10:5m".parse().unwrap(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_save_conditionally_keep_a_timeline_and_lock_their_alias() -> Result<()> {
    // The store alone: the shifter would act on these deployments.
    let stack = start_stack_without(Some("template.yaml"), &[], 1.0, &["ShifterFunction"])?;
    let store = template_store(&stack).await;
    let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();

    let (d, commands) = Deployment::create("d-1", spec(), t0);
    let stored = store.create(&d, &events_of(&commands)).await?;
    assert_eq!(stored.version, 1);
    assert!(matches!(
        store.create(&d, &[]).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.load("nope").await,
        Err(StoreError::NotFound(_))
    ));

    // A fresh deployment is due for the sweep once its grace has passed, not before.
    assert!(store.due(t0).await?.is_empty());
    assert_eq!(
        store
            .due(t0 + chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS + 1))
            .await?,
        vec!["d-1".to_owned()]
    );

    // Overdue past the grace is not yet stuck; overdue for STUCK_AFTER_SECS more is.
    let grace = chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS);
    let stuck_after = chrono::Duration::seconds(STUCK_AFTER_SECS);
    assert!(store.stuck(t0 + grace + stuck_after / 2).await?.is_empty());
    assert_eq!(
        store.stuck(t0 + grace + stuck_after).await?,
        vec!["d-1".to_owned()]
    );

    let t1 = t0 + chrono::Duration::seconds(1);
    let input = Input::Prepared {
        group: vec![],
        from_version: "1".into(),
        to_version: "2".into(),
        revision: None,
        metric_timing: None,
        function_arn: None,
    };
    let (next, commands) = decide(&stored.deployment, &input, t1);
    let saved = store
        .save(&next, stored.version, &events_of(&commands))
        .await?;
    assert_eq!(saved.version, 2);
    // A second worker that decided from the same old version loses, and its events with it.
    let stale = store
        .save(&next, stored.version, &events_of(&commands))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let loaded = store.load("d-1").await?;
    assert_eq!(loaded, saved);

    let timeline: Vec<String> = store
        .events("d-1")
        .await?
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(timeline.len(), 2, "{timeline:?}");
    assert!(timeline[0].contains("deploy version 2 to greeter:live"));
    assert!(timeline[1].contains("1 → 2"));

    // A finished deployment leaves the sweep's index; each save appends its events.
    let mut current = saved.clone();
    let mut lines = 2;
    for input in [
        Input::Abort {
            reason: "test".into(),
        },
        Input::AliasUpdated {
            member: 0,
            update: AliasUpdate::Rollback,
            revision: None,
        },
    ] {
        let (next, commands) = decide(&current.deployment, &input, t1);
        lines += events_of(&commands).len();
        current = store
            .save(&next, current.version, &events_of(&commands))
            .await?;
    }
    assert!(
        current.deployment.phase.is_terminal(),
        "{:?}",
        current.deployment.phase
    );
    assert!(store.active().await?.is_empty());
    assert!(store.due(t0 + chrono::Duration::days(1)).await?.is_empty());
    assert_eq!(store.events("d-1").await?.len(), lines);

    // One deployment per alias; the holder may take it again; only the holder releases it.
    assert_eq!(
        store
            .acquire_lock(&Lock::alias("greeter", "live"), "d-1", t1)
            .await?,
        LockOutcome::Acquired { left: None }
    );
    assert_eq!(
        store
            .acquire_lock(&Lock::alias("greeter", "live"), "d-1", t1)
            .await?,
        LockOutcome::Acquired { left: None }
    );
    assert_eq!(
        store
            .acquire_lock(&Lock::alias("greeter", "live"), "d-2", t1)
            .await?,
        LockOutcome::Busy {
            holder: "d-1".into()
        }
    );
    store
        .release_lock(&Lock::alias("greeter", "live"), "d-2", None)
        .await?;
    assert_eq!(
        store
            .lock_holder(&Lock::alias("greeter", "live"))
            .await?
            .as_deref(),
        Some("d-1")
    );
    // The holder keeps how it left the alias for the next one.
    let left = AliasLeft {
        version: "7".into(),
        revision: "0c1d".into(),
        function_arn: Some("arn:aws:lambda:us-east-1:123456789012:function:greeter".into()),
    };
    store
        .release_lock(&Lock::alias("greeter", "live"), "d-1", Some(&left))
        .await?;
    assert_eq!(
        store.lock_holder(&Lock::alias("greeter", "live")).await?,
        None
    );
    assert_eq!(
        store
            .acquire_lock(&Lock::alias("greeter", "live"), "d-2", t1)
            .await?,
        LockOutcome::Acquired {
            left: Some(left.clone())
        }
    );
    // One that does not know clears it.
    store
        .release_lock(&Lock::alias("greeter", "live"), "d-2", None)
        .await?;
    assert_eq!(
        store
            .acquire_lock(&Lock::alias("greeter", "live"), "d-3", t1)
            .await?,
        LockOutcome::Acquired { left: None }
    );
    Ok(())
}

/// The control-plane budget on the table: each slot given once, in the
/// order asked, one interval apart, by any number of workers; a budget
/// spoken for beyond the longest wait refused without losing its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_budget_gives_each_slot_once_in_the_order_asked() -> Result<()> {
    let stack = start_stack_without(Some("template.yaml"), &[], 1.0, &["ShifterFunction"])?;
    let table = stack.var("SLUICE_RESOURCE_STATE_TABLE").to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk_config().await);
    // Two workers' budgets over the one item, 10 calls a second, waits up to 1 s.
    let worker = || {
        Budget::new(
            dynamodb.clone(),
            table.clone(),
            10,
            std::time::Duration::from_secs(1),
        )
    };
    let (a, b) = (worker(), worker());
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();

    // Idle: the first call goes at once, the next wait their turn.
    let mut waits = Vec::new();
    for budget in [&a, &b, &a, &b] {
        waits.push(ms(budget.reserve(t0).await?));
    }
    assert_eq!(waits, vec![0, 100, 200, 300]);

    // Later, asked 0.25 s on: the queue has moved, and so has the clock.
    let t1 = t0 + chrono::Duration::milliseconds(250);
    assert_eq!(ms(a.reserve(t1).await?), 150);

    // Idle again, two seconds on: at once again.
    let t2 = t0 + chrono::Duration::seconds(2);
    assert_eq!(ms(b.reserve(t2).await?), 0);

    // Up to a second of queue, then refused with how far the budget is
    // spoken for; the refusal takes no slot.
    let t3 = t0 + chrono::Duration::seconds(10);
    let mut waits = Vec::new();
    for _ in 0..11 {
        waits.push(ms(a.reserve(t3).await?));
    }
    assert_eq!(waits, (0..11).map(|k| k * 100).collect::<Vec<_>>());
    match b.reserve(t3).await {
        Err(BudgetError::Short(ahead)) => assert_eq!(ms(ahead), 1100),
        other => panic!("a budget spoken for 1.1 s ahead gave {other:?}"),
    }
    let later = t3 + chrono::Duration::milliseconds(200);
    assert_eq!(ms(b.reserve(later).await?), 900, "the refusal took a slot");

    // Twenty calls at once from two workers: twenty distinct slots, none skipped.
    let t4 = t0 + chrono::Duration::seconds(20);
    let (a, b) = (
        Budget::new(
            dynamodb.clone(),
            table.clone(),
            10,
            std::time::Duration::from_secs(5),
        ),
        Budget::new(
            dynamodb.clone(),
            table.clone(),
            10,
            std::time::Duration::from_secs(5),
        ),
    );
    let calls = (0..20).map(|i| {
        let budget = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { budget.reserve(t4).await })
    });
    let mut waits = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        waits.push(ms(call.await??));
    }
    waits.sort();
    assert_eq!(waits, (0..20).map(|k| k * 100).collect::<Vec<_>>());
    Ok(())
}
