//! Deployments in the single DynamoDB table (DESIGN.md, "State"); every
//! item's keys are in `keys`.
//!
//! - a deployment's state item: the deployment as JSON in `data`, its `version`
//!   for optimistic locking, and, while it is not finished, `active` and
//!   `due_at` (epoch ms), which put it in the sparse `ActiveIndex` that the
//!   reconcile sweep reads; while queued behind an alias's lock, also
//!   `queued_on` (the lock's key), which puts it in the sparse
//!   `QueuedIndex`, so a release finds the next in line without reading
//!   every active deployment. Its `timeline` list is appended by the same
//!   conditional write that saves the state it explains: one request per save
//!   (a transaction would cost twice the write units and another request).
//! - a lock item: at most one deployment per alias, one execution per
//!   queued pipeline; beside an alias's lock, how its last deployment left
//!   the alias (`LEFT`, written by a holder's release only).
//!
//! Every write of state, locks and budget is conditional, so two workers
//! racing on one item cannot both win; the `LEFT` item is not, and need not
//! be: the revision it names is checked by Lambda at the next write.

pub mod keys;
pub mod pipelines;

pub use crate::domain::deployment::IN_FLIGHT_GRACE_SECS;
use crate::domain::deployment::{AliasLeft, BackStage, Deployment, Event, Phase, Time};
use crate::ports::aws;
pub use crate::ports::{ExecutionStart, LockOutcome, StoreError, Stored, StoredExecution};
use crate::settings::Settings;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use keys::{Key, Lock, PK, SK};
use std::collections::HashMap;

pub const ACTIVE_INDEX: &str = "ActiveIndex";
const ACTIVE: &str = "1";
/// Deployments queued behind an alias's lock, by its key, oldest due first.
pub const QUEUED_INDEX: &str = "QueuedIndex";
const QUEUED_ON: &str = "queued_on";
/// The state item's list of timeline events (JSON strings), appended by each save.
const TIMELINE: &str = "timeline";
/// Digests of the messages noted in the timeline beside the state (`note_once`).
const NOTED: &str = "noted";
/// Attributes a state item has only in some phases.
const OPTIONAL_ATTRIBUTES: [&str; 4] = ["active", "due_at", "expires_at", QUEUED_ON];

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    /// How long finished deployments are kept (TTL).
    retention: chrono::Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// When the reconcile sweep should look at a deployment: at the end of a
/// bake; for a phase in flight, after `grace` (a worker that died mid-phase).
pub fn due_at(d: &Deployment, grace: chrono::Duration) -> Option<Time> {
    let due = match &d.phase {
        p if p.is_terminal() => None,
        // Its next read or its end; paused with nothing to read, only an operator moves it.
        Phase::Baking { .. } => d.bake_wake(),
        Phase::Frozen { .. } => None,
        // Owned, waiting for an operator: due when its wait ends.
        Phase::FrozenOnFailure { until, .. } => Some(*until),
        Phase::SteppingBack {
            stage: BackStage::Baking { until },
            ..
        } => Some(*until),
        // An invoked asynchronous hook is waited for until its deadline.
        _ => d.hook_deadline().or(Some(d.updated_at + grace)),
    };
    // A deployment with a deadline is aborted then, if a timer has not.
    match (due, d.abort_at()) {
        (Some(due), Some(deadline)) => Some(due.min(deadline)),
        (due, deadline) => due.or(deadline),
    }
}

/// How long past due a deployment must be to count as stuck: by then the
/// sweep has tried it several times.
pub const STUCK_AFTER_SECS: i64 = 300;

/// Whether a deployment the sweep has not moved is stuck at `now`. Waiting
/// its turn behind another deployment is not being stuck.
pub fn is_stuck(d: &Deployment, now: Time) -> bool {
    !matches!(d.phase, Phase::Queued { .. })
        && due_at(d, chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS))
            .is_some_and(|due| due + chrono::Duration::seconds(STUCK_AFTER_SECS) <= now)
}

impl Store {
    /// The table of the settings, keeping finished work for their retention.
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Store::new(
            Client::new(config),
            settings.table.clone(),
            settings.history_retention,
        )
    }

    pub fn new(client: Client, table: impl Into<String>, retention: chrono::Duration) -> Self {
        Store {
            client,
            table: table.into(),
            retention,
        }
    }

    fn state_item(
        &self,
        d: &Deployment,
        version: u64,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let key = Key::Deployment(d.id.clone());
        let data = serde_json::to_string(d).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        let mut item = key.item_key();
        item.extend([
            ("data".to_owned(), s(data)),
            ("version".to_owned(), n(version)),
            ("function".to_owned(), s(&d.spec.function)),
            ("alias".to_owned(), s(&d.spec.alias)),
            ("phase".to_owned(), s(phase_name(&d.phase))),
        ]);
        if let Phase::Queued { member, .. } = d.phase {
            // The alias whose holder it waits for (a group's member's).
            let (function, alias) = d.target(member);
            let lock = Key::Lock(Lock::alias(function, alias));
            item.insert(QUEUED_ON.into(), s(lock.pk()));
        }
        match due_at(d, chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS)) {
            Some(due) => {
                item.insert("active".into(), s(ACTIVE));
                item.insert("due_at".into(), n(due.timestamp_millis()));
            }
            None if !d.phase.is_terminal() => {
                // Paused: still active (listed), but never due.
                item.insert("active".into(), s(ACTIVE));
                item.insert("due_at".into(), n(i64::MAX));
            }
            None => {
                item.insert(
                    "expires_at".into(),
                    n((d.updated_at + self.retention).timestamp()),
                );
            }
        }
        Ok(item)
    }

    /// Replaces a state item's attributes if its version is still `expected`,
    /// and appends `lines` (a list) to its timeline, in one conditional write.
    async fn update_state(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: u64,
        lines: &AttributeValue,
        key: &Key,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .condition_expression("#version = :expected")
            .expression_attribute_values(":expected", n(expected));
        let mut sets = Vec::new();
        for (name, value) in item {
            if name == PK || name == SK {
                update = update.key(name, value);
                continue;
            }
            sets.push(format!("#{name} = :{name}"));
            update = update
                .expression_attribute_names(format!("#{name}"), &name)
                .expression_attribute_values(format!(":{name}"), value);
        }
        if lines.as_l().is_ok_and(|l| !l.is_empty()) {
            sets.push(format!(
                "#{TIMELINE} = list_append(if_not_exists(#{TIMELINE}, :none), :lines)"
            ));
            update = update
                .expression_attribute_names(format!("#{TIMELINE}"), TIMELINE)
                .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":lines", lines.clone());
        }
        // What the new state does not have (an active item has no expiry...).
        let mut removes = Vec::new();
        for name in OPTIONAL_ATTRIBUTES {
            if !sets.iter().any(|set| set.starts_with(&format!("#{name} "))) {
                removes.push(format!("#{name}"));
                update = update.expression_attribute_names(format!("#{name}"), name);
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(key.clone()))
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// A state item's data and version, without its timeline (which only grows).
    async fn load_state(&self, key: &Key) -> Result<(String, u64), StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.item_key()))
            .projection_expression("#d, #v")
            .expression_attribute_names("#d", "data")
            .expression_attribute_names("#v", "version")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        let item = out.item.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        data_and_version(key, &item)
    }

    /// The deployment's timeline, oldest first.
    pub async fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        self.timeline(&Key::Deployment(id.to_owned())).await
    }

    /// Appends `line` to a state item's timeline, if the item is there and
    /// no line saying `message` was noted before: the item keeps a digest
    /// of each message noted, so two workers noting at once note it once.
    async fn note_once(&self, key: &Key, message: &str, line: &str) -> Result<(), StoreError> {
        use sha2::Digest;
        let digest = hex::encode(&sha2::Sha256::digest(message.as_bytes())[..12]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.item_key()))
            .update_expression(
                "SET #t = list_append(if_not_exists(#t, :none), :line) ADD #n :digests",
            )
            .condition_expression("attribute_exists(pk) AND NOT contains(#n, :digest)")
            .expression_attribute_names("#t", TIMELINE)
            .expression_attribute_names("#n", NOTED)
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":line", AttributeValue::L(vec![s(line)]))
            .expression_attribute_values(":digests", AttributeValue::Ss(vec![digest.clone()]))
            .expression_attribute_values(":digest", s(digest))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Noted already, or the item is gone (its retention ended).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws("UpdateItem", e)),
        }
    }

    /// A state item's timeline, oldest first.
    async fn timeline<T: serde::de::DeserializeOwned>(
        &self,
        key: &Key,
    ) -> Result<Vec<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.item_key()))
            .projection_expression("#t")
            .expression_attribute_names("#t", TIMELINE)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        let item = out.item.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let lines = match item.get(TIMELINE) {
            Some(AttributeValue::L(lines)) => lines.as_slice(),
            _ => &[],
        };
        lines
            .iter()
            .map(|line| {
                let text = line.as_s().map_err(|_| StoreError::Corrupt {
                    key: key.clone(),
                    detail: "a timeline line is not a string".into(),
                })?;
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                    key: key.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Reads `ActiveIndex` (ordered by due time): all of it, or what is due
    /// by a time.
    async fn active_ids(&self, due_by: Option<Time>) -> Result<Vec<String>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ACTIVE_INDEX)
            .expression_attribute_values(":a", s(ACTIVE));
        let query = match due_by {
            Some(now) => query
                .key_condition_expression("active = :a AND due_at <= :now")
                .expression_attribute_values(":now", n(now.timestamp_millis())),
            None => query.key_condition_expression("active = :a"),
        };
        Self::deployment_ids(query).await
    }

    /// The deployments a query's pages list, in their order.
    async fn deployment_ids(
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut pages = query.into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| aws("Query", e))?;
            let key = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
            if let (Some(pk), Some(sk)) = (key(PK), key(SK))
                && let Some(Key::Deployment(id)) = Key::state_of(pk, sk)
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Deletes `key`'s item, if there is one.
    async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key.item_key()))
            .send()
            .await
            .map_err(|e| aws("DeleteItem", e))?;
        Ok(())
    }

    /// How the last deployment of `lock`'s alias left it, if it said.
    async fn alias_left(&self, lock: &Lock) -> Result<Option<AliasLeft>, StoreError> {
        let Some(key) = Key::left_of(lock) else {
            return Ok(None);
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.item_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let (Some(version), Some(revision)) = (text("version"), text("revision")) else {
            // Not knowing it only costs a read of the alias.
            tracing::warn!(item = %key, "no version or revision: the alias is read");
            return Ok(None);
        };
        Ok(Some(AliasLeft {
            version,
            revision,
            function_arn: text("function_arn"),
        }))
    }
}

/// Timeline lines as a DynamoDB list of JSON strings.
fn timeline_value<T: serde::Serialize>(events: &[T]) -> AttributeValue {
    AttributeValue::L(
        events
            .iter()
            .map(|e| s(serde_json::to_string(e).expect("events serialise")))
            .collect(),
    )
}

/// The phase as the state item (and the log) names it.
pub fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Created => "created",
        Phase::Queued { .. } => "queued",
        Phase::PreTraffic { .. } => "pre_traffic",
        Phase::Shifting { .. } => "shifting",
        Phase::PostTraffic { .. } => "post_traffic",
        Phase::Baking { .. } => "baking",
        Phase::Frozen { .. } => "frozen",
        Phase::FrozenOnFailure { .. } => "frozen_on_failure",
        Phase::SteppingBack { .. } => "stepping_back",
        Phase::RollingBack { .. } => "rolling_back",
        Phase::Promoted => "promoted",
        Phase::RolledBack { .. } => "rolled_back",
        Phase::FailedToStart { .. } => "failed_to_start",
    }
}

impl crate::ports::Deployments for Store {
    /// Saves a new deployment; fails if the id is taken.
    async fn create(&self, d: &Deployment, events: &[Event]) -> Result<Stored, StoreError> {
        let mut item = self.state_item(d, 1)?;
        item.insert(TIMELINE.into(), timeline_value(events));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Stored {
                deployment: d.clone(),
                version: 1,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::AlreadyExists(Key::Deployment(d.id.clone())))
            }
            Err(e) => Err(aws("PutItem", e)),
        }
    }

    /// Saves `d` if the stored version is still `expected`, appending `events`
    /// to its timeline in the same write; returns the new version.
    async fn save(
        &self,
        d: &Deployment,
        expected: u64,
        events: &[Event],
    ) -> Result<Stored, StoreError> {
        let item = self.state_item(d, expected + 1)?;
        let key = Key::Deployment(d.id.clone());
        self.update_state(item, expected, &timeline_value(events), &key)
            .await?;
        Ok(Stored {
            deployment: d.clone(),
            version: expected + 1,
        })
    }

    async fn load(&self, id: &str) -> Result<Stored, StoreError> {
        let key = Key::Deployment(id.to_owned());
        let (data, version) = self.load_state(&key).await?;
        let deployment = serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
            key,
            detail: e.to_string(),
        })?;
        Ok(Stored {
            deployment,
            version,
        })
    }

    /// Ids of every unfinished deployment.
    async fn active(&self) -> Result<Vec<String>, StoreError> {
        self.active_ids(None).await
    }

    /// One `Query` of the active index, which projects each item's state:
    /// no read per deployment.
    async fn watching(&self, alarm: &str) -> Result<Vec<Stored>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ACTIVE_INDEX)
            .key_condition_expression("active = :a")
            .expression_attribute_values(":a", s(ACTIVE))
            .projection_expression("#pk, #sk, #d, #v")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#d", "data")
            .expression_attribute_names("#v", "version");
        let mut watching = Vec::new();
        let mut pages = query.into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| aws("Query", e))?;
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
            let (Some(pk), Some(sk)) = (text(PK), text(SK)) else {
                continue;
            };
            let Some(key @ Key::Deployment(_)) = Key::state_of(pk, sk) else {
                continue;
            };
            let (data, version) = data_and_version(&key, &item)?;
            let deployment: Deployment =
                serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
                    key: key.clone(),
                    detail: e.to_string(),
                })?;
            if deployment.spec.alarms.iter().any(|a| a == alarm) {
                watching.push(Stored {
                    deployment,
                    version,
                });
            }
        }
        Ok(watching)
    }

    /// Ids of unfinished deployments due by `now` (the reconcile sweep's work).
    async fn due(&self, now: Time) -> Result<Vec<String>, StoreError> {
        self.active_ids(Some(now)).await
    }

    /// Deployments stuck at `now` (see `is_stuck`).
    async fn stuck(&self, now: Time) -> Result<Vec<String>, StoreError> {
        let overdue = self
            .due(now - chrono::Duration::seconds(STUCK_AFTER_SECS))
            .await?;
        let mut stuck = Vec::new();
        for id in overdue {
            if is_stuck(&self.load(&id).await?.deployment, now) {
                stuck.push(id);
            }
        }
        Ok(stuck)
    }

    /// Deployments queued for an alias, longest waiting first.
    async fn queued_for(&self, function: &str, alias: &str) -> Result<Vec<String>, StoreError> {
        let lock = Key::Lock(Lock::alias(function, alias));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(QUEUED_INDEX)
            .key_condition_expression("#q = :lock")
            .expression_attribute_names("#q", QUEUED_ON)
            .expression_attribute_values(":lock", s(lock.pk()));
        Self::deployment_ids(query).await
    }

    /// Takes `lock` for `id`; taking it again as its holder succeeds. An
    /// alias's lock is given with how its last deployment left the alias
    /// (its own item beside the lock, read once the lock is taken).
    async fn acquire_lock(
        &self,
        lock: &Lock,
        id: &str,
        now: Time,
    ) -> Result<LockOutcome, StoreError> {
        for _ in 0..LOCK_ATTEMPTS {
            // A lock item without a holder is free too (kept by code of
            // before the `LEFT` item).
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Key::Lock(lock.clone()).item_key()))
                .item("holder", s(id))
                .item("acquired_at", n(now.timestamp_millis()))
                .condition_expression("attribute_not_exists(holder) OR holder = :me")
                .expression_attribute_values(":me", s(id))
                .send()
                .await;
            return match result {
                Ok(_) => Ok(LockOutcome::Acquired {
                    left: self.alias_left(lock).await?,
                }),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    match self.lock_holder(lock).await? {
                        Some(holder) if !holder.is_empty() => Ok(LockOutcome::Busy { holder }),
                        // Released between the two calls: try again.
                        _ => continue,
                    }
                }
                Err(e) => Err(aws("PutItem", e)),
            };
        }
        Err(StoreError::Aws(format!(
            "{}: taken and released under each of {LOCK_ATTEMPTS} attempts",
            Key::Lock(lock.clone())
        )))
    }

    async fn lock_holder(&self, lock: &Lock) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Key::Lock(lock.clone()).item_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        Ok(out
            .item
            .and_then(|i| i.get("holder").and_then(|h| h.as_s().ok()).cloned()))
    }

    async fn add_waiter(
        &self,
        id: &str,
        waiter: &str,
        data: &str,
        until: Time,
    ) -> Result<(), StoreError> {
        let key = Key::Waiter {
            deployment: id.to_owned(),
            name: waiter.to_owned(),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key.item_key()))
            .item("data", s(data))
            .item("expires_at", n(until.timestamp()))
            .send()
            .await
            .map_err(|e| aws("PutItem", e))?;
        Ok(())
    }

    async fn waiters(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :waiter)")
            .expression_attribute_values(":pk", s(Key::Deployment(id.to_owned()).pk()))
            .expression_attribute_values(":waiter", s(keys::WAITER))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("Query", e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|item| {
                let name = item
                    .get(keys::SK)?
                    .as_s()
                    .ok()?
                    .strip_prefix(keys::WAITER)?;
                let data = item.get("data")?.as_s().ok()?;
                Some((name.to_owned(), data.clone()))
            })
            .collect())
    }

    async fn remove_waiter(&self, id: &str, waiter: &str) -> Result<(), StoreError> {
        self.delete(&Key::Waiter {
            deployment: id.to_owned(),
            name: waiter.to_owned(),
        })
        .await
    }

    /// Releases `lock` if `id` holds it; releasing what one does not hold
    /// is a no-op. Then, for an alias, keeps `left` for the next holder
    /// (`None` removes what an earlier one kept): only a holder's release
    /// writes it. Lost between the two writes, it is an earlier holder's
    /// or none, and either is safe: the next deployment's first write names
    /// its revision, which Lambda refuses if the alias changed since.
    async fn release_lock(
        &self,
        lock: &Lock,
        id: &str,
        left: Option<&AliasLeft>,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Key::Lock(lock.clone()).item_key()))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", s(id))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(aws("DeleteItem", e)),
        }
        let Some(key) = Key::left_of(lock) else {
            return Ok(());
        };
        match left {
            Some(left) => {
                let mut put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(key.item_key()))
                    .item("version", s(&left.version))
                    .item("revision", s(&left.revision));
                if let Some(arn) = &left.function_arn {
                    put = put.item("function_arn", s(arn));
                }
                put.send().await.map_err(|e| aws("PutItem", e))?;
            }
            None => self.delete(&key).await?,
        }
        Ok(())
    }
}

/// A state item's `data` and `version`.
fn data_and_version(
    key: &Key,
    item: &HashMap<String, AttributeValue>,
) -> Result<(String, u64), StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        key: key.clone(),
        detail: detail.to_owned(),
    };
    let data = item
        .get("data")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| corrupt("no data"))?;
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("no version"))?;
    Ok((data.clone(), version))
}

/// Takes of a lock that found it released between its write and its read
/// before giving up (a lock taken and freed that fast, again and again).
const LOCK_ATTEMPTS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deployment::{DeploymentSpec, OnBusy, VersionSource};

    #[test]
    fn only_overdue_deployments_that_are_not_waiting_their_turn_are_stuck() {
        let spec = DeploymentSpec {
            on_busy: OnBusy::Queue,
            ..DeploymentSpec::new(
                "greeter",
                "live",
                VersionSource::Version("2".into()),
                "canary:10:5m".parse().unwrap(),
            )
        };
        let t0 = chrono::Utc::now();
        let (mut d, _) = Deployment::create("d", spec, t0);
        let late = t0 + chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS + STUCK_AFTER_SECS);
        assert!(!is_stuck(&d, late - chrono::Duration::seconds(1)));
        assert!(is_stuck(&d, late));
        d.phase = Phase::Queued {
            holder: "other".into(),
            member: 0,
        };
        assert!(!is_stuck(&d, late));
        let until = t0 + chrono::Duration::minutes(5);
        d.phase = Phase::Baking { step: 0, until };
        assert!(is_stuck(
            &d,
            until + chrono::Duration::seconds(STUCK_AFTER_SECS)
        ));
        d.paused = true;
        assert!(!is_stuck(&d, until + chrono::Duration::days(1)));
        // A deadline makes even a paused bake due: the sweep aborts it then.
        let grace = chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS);
        d.deadline = Some(until + chrono::Duration::hours(1));
        assert_eq!(due_at(&d, grace), d.deadline);
        d.paused = false;
        assert_eq!(due_at(&d, grace), Some(until), "the bake's end comes first");
        d.phase = Phase::Promoted;
        assert!(!is_stuck(&d, until + chrono::Duration::days(1)));
        assert_eq!(
            due_at(&d, grace),
            None,
            "ended: the deadline no longer applies"
        );
    }
}
