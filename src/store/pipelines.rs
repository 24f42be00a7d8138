//! Pipeline definitions and executions, in the same table as deployments
//! (their keys are in `keys`).
//!
//! - a definition, as JSON (one query lists them all);
//! - an execution's state item, versioned like a deployment, with its
//!   timeline; in `ActiveIndex` while it can still move;
//! - which execution a commit started, written in the same transaction as
//!   the execution, so a redelivered push starts nothing twice.

use super::keys::{DEFINITIONS_PK, EXECUTION_PK_PREFIX, Key, PK, SK};
use super::{ACTIVE, IN_FLIGHT_GRACE_SECS, Store, StoreError, n, s};
use crate::domain::deployment::Time;
use crate::domain::execution::{ActionState, Execution, ExecutionEvent, Status};
use crate::domain::pipeline::ActionKind;
use crate::domain::pipeline::PipelineDefinition;
use crate::ports::aws;
use crate::ports::{ExecutionStart, StoredExecution};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use std::collections::HashMap;

fn corrupt(key: Key, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key,
        detail: detail.to_string(),
    }
}

impl Store {
    /// Saves a definition (validated by the caller); returns the one it replaced.
    pub async fn put_definition(
        &self,
        definition: &PipelineDefinition,
        now: Time,
    ) -> Result<Option<PipelineDefinition>, StoreError> {
        let key = Key::Definition(definition.name.clone());
        let data = serde_json::to_string(definition).map_err(|e| corrupt(key.clone(), e))?;
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key.item_key()))
            .item("data", s(data))
            .item("updated_at", n(now.timestamp_millis()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| aws("PutItem", e))?;
        out.attributes
            .as_ref()
            .map(|item| definition_of(&definition.name, item))
            .transpose()
    }

    pub async fn definition(&self, name: &str) -> Result<Option<PipelineDefinition>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Key::Definition(name.to_owned()).item_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        out.item
            .as_ref()
            .map(|item| definition_of(name, item))
            .transpose()
    }

    /// Every definition, by name.
    pub async fn definitions(&self) -> Result<Vec<PipelineDefinition>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(DEFINITIONS_PK))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut definitions = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| aws("Query", e))?;
            let name = item
                .get(SK)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            definitions.push(definition_of(&name, &item)?);
        }
        Ok(definitions)
    }

    fn execution_item(
        &self,
        e: &Execution,
        version: u64,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let key = Key::Execution(e.id.clone());
        let data = serde_json::to_string(e).map_err(|err| corrupt(key.clone(), err))?;
        let mut item = key.item_key();
        item.extend([
            ("data".to_owned(), s(data)),
            ("version".to_owned(), n(version)),
            ("pipeline".to_owned(), s(&e.pipeline)),
            ("status".to_owned(), s(status_name(&e.status))),
        ]);
        match execution_due_at(e) {
            None => {
                item.insert(
                    "expires_at".into(),
                    n((e.updated_at + self.retention).timestamp()),
                );
            }
            Some(due) => {
                item.insert("active".into(), s(ACTIVE));
                item.insert(
                    "due_at".into(),
                    n(due.map_or(i64::MAX, |t| t.timestamp_millis())),
                );
            }
        }
        Ok(item)
    }

    /// The execution a commit started in a pipeline, if any.
    pub async fn execution_for_commit(
        &self,
        pipeline: &str,
        sha: &str,
    ) -> Result<Option<String>, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(
                Key::Commit {
                    pipeline: pipeline.to_owned(),
                    sha: sha.to_owned(),
                }
                .item_key(),
            ))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("GetItem", e))?;
        Ok(found
            .item
            .and_then(|i| i.get("execution").and_then(|v| v.as_s().ok()).cloned()))
    }

    /// An execution's timeline, oldest first.
    pub async fn execution_events(&self, id: &str) -> Result<Vec<ExecutionEvent>, StoreError> {
        self.timeline(&Key::Execution(id.to_owned())).await
    }

    /// Adds `event` to an execution's timeline unless a line has said the
    /// same already: what happened beside its state (a report that
    /// failed), which changes neither its state nor its version.
    pub async fn note_execution(&self, id: &str, event: &ExecutionEvent) -> Result<(), StoreError> {
        self.note_once(
            &Key::Execution(id.to_owned()),
            &event.message,
            &serde_json::to_string(event).expect("events serialise"),
        )
        .await
    }

    /// Ids of unfinished executions from `ActiveIndex`, oldest due first:
    /// all, those due by a time, or those of one pipeline in one status.
    async fn active_executions(
        &self,
        due_by: Option<chrono::DateTime<chrono::Utc>>,
        of: Option<(&str, &[Status])>,
    ) -> Result<Vec<String>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(super::ACTIVE_INDEX)
            .expression_attribute_values(":a", s(ACTIVE))
            .expression_attribute_values(":exec", s(EXECUTION_PK_PREFIX));
        query = match due_by {
            Some(now) => query
                .key_condition_expression("active = :a AND due_at <= :now")
                .expression_attribute_values(":now", n(now.timestamp_millis())),
            None => query.key_condition_expression("active = :a"),
        };
        let mut filter = "begins_with(pk, :exec)".to_owned();
        if let Some((pipeline, statuses)) = of {
            filter.push_str(" AND pipeline = :p AND #status IN (");
            let names: Vec<String> = (0..statuses.len()).map(|i| format!(":s{i}")).collect();
            filter.push_str(&names.join(", "));
            filter.push(')');
            query = query
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":p", s(pipeline));
            for (name, status) in names.iter().zip(statuses) {
                query = query.expression_attribute_values(name, s(status_name(status)));
            }
        }
        let mut pages = query
            .filter_expression(filter)
            .into_paginator()
            .items()
            .send();
        let mut ids = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| aws("Query", e))?;
            let key = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
            if let (Some(pk), Some(sk)) = (key(PK), key(SK))
                && let Some(Key::Execution(id)) = Key::state_of(pk, sk)
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// How long the sweep leaves an execution with an invoke action under way:
/// longer than a worker that runs one can live (the orchestrator's `Timeout`,
/// 900 s, Lambda's most), so a test suite of several minutes
/// is not started again while it runs.
pub const INVOKE_ACTION_GRACE_SECS: i64 = 960;

/// Whether an execution is listed in `ActiveIndex` (`None`: finished for
/// good), and when the sweep should look at it (`None` inside: never, as for
/// a failed one, which waits for a retry).
pub fn execution_due_at(e: &Execution) -> Option<Option<Time>> {
    match &e.status {
        // Ended, but an abandoned action's deployment or CodePipeline
        // execution is still to be told to stop: due, so the sweep tells it
        // if the orchestrator's hand-over was lost.
        status
            if status.is_final() && e.actions.iter().any(|a| a.state == ActionState::Abandoned) =>
        {
            Some(Some(
                e.updated_at + chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS),
            ))
        }
        status if status.is_final() => None,
        Status::Failed { .. } => Some(None),
        // After a grace: a worker that died mid-way. An invoke action runs
        // as long as its function does, inside the worker's invocation.
        _ => {
            let invoking = e.actions.iter().enumerate().any(|(i, a)| {
                matches!(a.state, ActionState::Running { .. })
                    && matches!(e.kind(e.stage, i), ActionKind::Invoke(_))
            });
            let grace = if invoking {
                INVOKE_ACTION_GRACE_SECS
            } else {
                IN_FLIGHT_GRACE_SECS
            };
            Some(Some(e.updated_at + chrono::Duration::seconds(grace)))
        }
    }
}

fn definition_of(
    name: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<PipelineDefinition, StoreError> {
    let data = item
        .get("data")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| corrupt(Key::Definition(name.to_owned()), "no data"))?;
    serde_json::from_str(data).map_err(|e| corrupt(Key::Definition(name.to_owned()), e))
}

/// The status as the state item (and the log) names it.
pub fn status_name(status: &Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::InProgress => "in_progress",
        Status::Succeeded => "succeeded",
        Status::Failed { .. } => "failed",
        Status::Stopped { .. } => "stopped",
        Status::Superseded { .. } => "superseded",
    }
}

impl crate::ports::Executions for Store {
    /// Records a new execution and its commit, unless the commit already started one.
    async fn start_execution(
        &self,
        e: &Execution,
        events: &[ExecutionEvent],
    ) -> Result<ExecutionStart, StoreError> {
        let mut item = self.execution_item(e, 1)?;
        item.insert(super::TIMELINE.into(), super::timeline_value(events));
        let mut commit = Key::Commit {
            pipeline: e.pipeline.clone(),
            sha: e.push.sha.clone(),
        }
        .item_key();
        commit.extend([
            ("execution".to_owned(), s(&e.id)),
            (
                "expires_at".to_owned(),
                n((e.created_at + self.retention).timestamp()),
            ),
        ]);
        let put = |item: HashMap<String, AttributeValue>| -> Result<TransactWriteItem, StoreError> {
            Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(|e| aws("building a TransactWriteItems Put", e))?,
                )
                .build())
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(commit)?)
            .transact_items(put(item)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ExecutionStart::Started),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                match self.execution_for_commit(&e.pipeline, &e.push.sha).await? {
                    Some(id) => Ok(ExecutionStart::AlreadyStarted(id)),
                    // The execution id was taken, not the commit: ids are random, so say so.
                    None => Err(StoreError::AlreadyExists(Key::Execution(e.id.clone()))),
                }
            }
            Err(err) => Err(aws("TransactWriteItems", err)),
        }
    }

    async fn load_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let key = Key::Execution(id.to_owned());
        let (data, version) = self.load_state(&key).await?;
        Ok(StoredExecution {
            execution: serde_json::from_str(&data).map_err(|e| corrupt(key, e))?,
            version,
        })
    }

    /// Saves `e` if the stored version is still `expected`, with its new timeline lines.
    async fn save_execution(
        &self,
        e: &Execution,
        expected: u64,
        events: &[ExecutionEvent],
    ) -> Result<StoredExecution, StoreError> {
        let item = self.execution_item(e, expected + 1)?;
        let key = Key::Execution(e.id.clone());
        self.update_state(item, expected, &super::timeline_value(events), &key)
            .await?;
        Ok(StoredExecution {
            execution: e.clone(),
            version: expected + 1,
        })
    }

    /// Unfinished executions the reconcile sweep should look at.
    async fn due_executions(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.active_executions(Some(now), None).await
    }

    /// A pipeline's executions in progress or not started yet.
    async fn live_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        self.active_executions(
            None,
            Some((pipeline, &[Status::Queued, Status::InProgress])),
        )
        .await
    }

    /// Every pipeline's executions that are not finished for good.
    async fn running_executions_all(&self) -> Result<Vec<String>, StoreError> {
        self.active_executions(None, None).await
    }

    /// A pipeline's queued executions, longest waiting first.
    async fn queued_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for id in self
            .active_executions(None, Some((pipeline, &[Status::Queued])))
            .await?
        {
            let e = self.load_execution(&id).await?.execution;
            ids.push((e.created_at, id));
        }
        ids.sort();
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::execution::{Input, StopMode, decide};
    use crate::domain::pipeline::{GitRef, Push};

    /// A stopped execution stays due until what its abandoned actions
    /// started was told to stop: a lost hand-over is the sweep's to repair.
    #[test]
    fn a_stop_is_due_until_its_abandoned_actions_are_told() {
        let definition = PipelineDefinition::parse(
            "name: app\nsource: { repository: acme/app }\nstages:\n  - name: live\n    actions:\n      - { name: deploy, kind: deploy, config: { function: app, alias: live, version: \"2\", config: AllAtOnce } }\n",
        )
        .unwrap();
        let push = Push {
            repository: "acme/app".into(),
            reference: GitRef::Branch("main".into()),
            sha: "9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4".into(),
            deleted: false,
            forced: false,
            changed_paths: None,
            message: None,
            author: None,
        };
        let now = chrono::Utc::now();
        let (e, _) = Execution::create("x-1", definition, push, now);
        let (e, _) = decide(&e, &Input::Start, now);
        let stop = Input::Stop {
            mode: StopMode::Abandon,
            reason: "wrong build".into(),
        };
        let (e, _) = decide(&e, &stop, now);
        assert!(e.status.is_final());
        let grace = chrono::Duration::seconds(IN_FLIGHT_GRACE_SECS);
        assert_eq!(execution_due_at(&e), Some(Some(e.updated_at + grace)));
        let at = crate::domain::execution::ActionRef {
            stage: 0,
            action: 0,
            attempt: 1,
        };
        let (e, _) = decide(&e, &Input::ActionStopped { at }, now);
        assert_eq!(execution_due_at(&e), None);
    }
}
