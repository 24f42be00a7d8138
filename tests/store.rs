//! The deployment store on the local stack's DynamoDB, stood up from template.yaml.

mod support;

use anyhow::Result;
use chrono::{TimeZone, Utc};
use sluice::domain::deployment::{
    AliasUpdate, Deployment, DeploymentSpec, Input, OnBusy, VersionSource, decide, events_of,
};
use sluice::store::{IN_FLIGHT_GRACE_SECS, LockOutcome, STUCK_AFTER_SECS, StoreError};
use support::*;

fn spec() -> DeploymentSpec {
    DeploymentSpec {
        function: "greeter".into(),
        alias: "live".into(),
        source: VersionSource::Version("2".into()),
        config: "canary:10:5m".parse().unwrap(),
        pre_traffic_hook: None,
        post_traffic_hook: None,
        alarms: vec![],
        on_manual_change: Default::default(),
        on_busy: OnBusy::Queue,
        smoke_tests: vec![],
        smoke_tests_from: None,
        analysis: None,
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
        from_version: "1".into(),
        to_version: "2".into(),
        revision: None,
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
        store.acquire_lock("greeter", "live", "d-1", t1).await?,
        LockOutcome::Acquired
    );
    assert_eq!(
        store.acquire_lock("greeter", "live", "d-1", t1).await?,
        LockOutcome::Acquired
    );
    assert_eq!(
        store.acquire_lock("greeter", "live", "d-2", t1).await?,
        LockOutcome::Busy {
            holder: "d-1".into()
        }
    );
    store.release_lock("greeter", "live", "d-2").await?;
    assert_eq!(
        store.lock_holder("greeter", "live").await?.as_deref(),
        Some("d-1")
    );
    store.release_lock("greeter", "live", "d-1").await?;
    assert_eq!(
        store.acquire_lock("greeter", "live", "d-2", t1).await?,
        LockOutcome::Acquired
    );
    Ok(())
}
