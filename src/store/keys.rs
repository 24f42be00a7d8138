//! The table's key schema, in one place: every item Sluice keeps in its one
//! DynamoDB table is named here, built into its `pk`/`sk` here, and read back
//! from a stream record's or a query's keys here (DESIGN.md, "State").
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a deployment | `DEPLOY#<id>` | `STATE` |
//! | an execution | `EXEC#<id>` | `STATE` |
//! | a pipeline definition | `PIPELINES` | `<name>` |
//! | the execution a commit started | `COMMIT#<pipeline>#<sha>` | `COMMIT` |
//! | one deployment per alias | `LOCK#<function>#<alias>` | `LOCK` |
//! | how the alias's last deployment left it | `LOCK#<function>#<alias>` | `LEFT` |
//! | a queued pipeline's turn | `TURN#<pipeline>` | `LOCK` |
//! | the Lambda control-plane budget | `BUDGET#lambda-control-plane` | `BUDGET` |
//! | who waits for a deployment's end | `DEPLOY#<id>` | `WAITER#<name>` |
//!
//! A function name, an alias and a pipeline name hold no `#` (their patterns
//! refuse it), so no two items share keys.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// The attribute names of the table's partition and sort keys.
pub const PK: &str = "pk";
pub const SK: &str = "sk";

const DEPLOY: &str = "DEPLOY#";
const EXEC: &str = "EXEC#";
const STATE: &str = "STATE";
/// The sort-key prefix of a deployment's waiters.
pub const WAITER: &str = "WAITER#";

/// What holds a lock item: an alias (one deployment at a time), or a
/// queued pipeline's turn (one execution at a time). Each has its own key
/// space, so a function named like a pipeline cannot take its turn.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lock {
    Alias { function: String, alias: String },
    PipelineTurn(String),
}

impl Lock {
    pub fn alias(function: &str, alias: &str) -> Self {
        Lock::Alias {
            function: function.to_owned(),
            alias: alias.to_owned(),
        }
    }

    pub fn pipeline_turn(pipeline: &str) -> Self {
        Lock::PipelineTurn(pipeline.to_owned())
    }
}

/// An item of the table, by what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Deployment(String),
    Execution(String),
    Definition(String),
    Commit {
        pipeline: String,
        sha: String,
    },
    Lock(Lock),
    /// How the last deployment of an alias left it, beside its lock.
    AliasLeft {
        function: String,
        alias: String,
    },
    ControlPlaneBudget,
    Waiter {
        deployment: String,
        name: String,
    },
}

impl Key {
    /// The item beside an alias's lock that says how its last deployment
    /// left it; a pipeline's turn has none.
    pub fn left_of(lock: &Lock) -> Option<Key> {
        match lock {
            Lock::Alias { function, alias } => Some(Key::AliasLeft {
                function: function.clone(),
                alias: alias.clone(),
            }),
            Lock::PipelineTurn(_) => None,
        }
    }

    pub fn pk(&self) -> String {
        match self {
            Key::Deployment(id) | Key::Waiter { deployment: id, .. } => format!("{DEPLOY}{id}"),
            Key::Execution(id) => format!("{EXEC}{id}"),
            Key::Definition(_) => DEFINITIONS_PK.to_owned(),
            Key::Commit { pipeline, sha } => format!("COMMIT#{pipeline}#{sha}"),
            Key::Lock(Lock::Alias { function, alias }) | Key::AliasLeft { function, alias } => {
                format!("LOCK#{function}#{alias}")
            }
            Key::Lock(Lock::PipelineTurn(pipeline)) => format!("TURN#{pipeline}"),
            Key::ControlPlaneBudget => "BUDGET#lambda-control-plane".to_owned(),
        }
    }

    pub fn sk(&self) -> String {
        match self {
            Key::Deployment(_) | Key::Execution(_) => STATE.to_owned(),
            Key::Definition(name) => name.clone(),
            Key::Commit { .. } => "COMMIT".to_owned(),
            Key::Lock(_) => "LOCK".to_owned(),
            Key::AliasLeft { .. } => "LEFT".to_owned(),
            Key::ControlPlaneBudget => "BUDGET".to_owned(),
            Key::Waiter { name, .. } => format!("{WAITER}{name}"),
        }
    }

    /// The item's key, as `GetItem`, `UpdateItem` and `DeleteItem` take it.
    pub fn item_key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_owned(), AttributeValue::S(self.pk())),
            (SK.to_owned(), AttributeValue::S(self.sk())),
        ])
    }

    /// The state item (a deployment or an execution) that `pk` and `sk`
    /// name, if they name one: how stream records and index queries are read.
    pub fn state_of(pk: &str, sk: &str) -> Option<Key> {
        if sk != STATE {
            return None;
        }
        if let Some(id) = pk.strip_prefix(DEPLOY) {
            return Some(Key::Deployment(id.to_owned()));
        }
        pk.strip_prefix(EXEC)
            .map(|id| Key::Execution(id.to_owned()))
    }
}

/// What the item is, as messages name it ("deployment d-1").
impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Deployment(id) => write!(f, "deployment {id}"),
            Key::Execution(id) => write!(f, "execution {id}"),
            Key::Definition(name) => write!(f, "pipeline {name}"),
            Key::Commit { pipeline, sha } => write!(f, "commit {sha} of pipeline {pipeline}"),
            Key::Lock(Lock::Alias { function, alias }) => {
                write!(f, "the lock of {function}:{alias}")
            }
            Key::Lock(Lock::PipelineTurn(pipeline)) => write!(f, "the turn of pipeline {pipeline}"),
            Key::AliasLeft { function, alias } => {
                write!(f, "how {function}:{alias} was left")
            }
            Key::ControlPlaneBudget => write!(f, "the control-plane budget"),
            Key::Waiter { deployment, name } => {
                write!(f, "{name}, waiting for deployment {deployment}")
            }
        }
    }
}

/// The partition of every pipeline definition: one query lists them all.
pub const DEFINITIONS_PK: &str = "PIPELINES";

/// The partition-key prefix every execution's state item has (for a scan's filter).
pub const EXECUTION_PK_PREFIX: &str = EXEC;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_has_keys_of_its_own_and_state_keys_read_back() {
        let keys = [
            Key::Deployment("d-1".into()),
            Key::Execution("d-1".into()),
            Key::Definition("shop".into()),
            Key::Commit {
                pipeline: "shop".into(),
                sha: "abc".into(),
            },
            Key::Lock(Lock::alias("PIPELINE", "shop")),
            Key::Lock(Lock::pipeline_turn("shop")),
            Key::AliasLeft {
                function: "PIPELINE".into(),
                alias: "shop".into(),
            },
            Key::ControlPlaneBudget,
            Key::Waiter {
                deployment: "d-1".into(),
                name: "r-1".into(),
            },
        ];
        let pairs: std::collections::HashSet<_> = keys.iter().map(|k| (k.pk(), k.sk())).collect();
        assert_eq!(pairs.len(), keys.len(), "two items share keys: {pairs:?}");
        // The turn lock no longer collides with a function named PIPELINE.
        assert_ne!(
            Key::Lock(Lock::alias("PIPELINE", "shop")).pk(),
            Key::Lock(Lock::pipeline_turn("shop")).pk()
        );
        for key in &keys {
            let read = Key::state_of(&key.pk(), &key.sk());
            match key {
                Key::Deployment(_) | Key::Execution(_) => assert_eq!(read.as_ref(), Some(key)),
                _ => assert_eq!(read, None, "{key:?} is not a state item"),
            }
        }
        assert_eq!(Key::Deployment("d-1".into()).pk(), "DEPLOY#d-1");
        assert_eq!(Key::Lock(Lock::alias("f", "live")).pk(), "LOCK#f#live");
        assert_eq!(
            Key::Deployment("x".into()).item_key()["sk"],
            AttributeValue::S("STATE".into())
        );
    }
}
