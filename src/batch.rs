//! How a worker takes the items of a batch from an event source: items of
//! one deployment or execution in order, different ones side by side (so a
//! slow gate holds back only its own item), a failure reported for its own
//! item only, and no new item taken once too little time is left to finish
//! it. Lambda then delivers again just the items named (SQS: those messages;
//! a stream: from the lowest sequence number named), as the event source
//! mappings' `ReportBatchItemFailures` documents
//! (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>,
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html>).

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// How many items of a batch run at once: an SQS batch holds at most ten.
pub const ITEMS_AT_ONCE: usize = 10;

/// When the invocation must have answered (Lambda's deadline), and how much
/// time an item may need: a worker starts no item with less than that left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: SystemTime,
    pub per_item: Duration,
}

impl Deadline {
    /// Whether another item can be started now and still finish.
    pub fn room_for_another(&self, now: SystemTime) -> bool {
        self.at
            .duration_since(now)
            .is_ok_and(|left| left >= self.per_item)
    }
}

/// One item of a batch: the id its failure is reported by, the key of what
/// it moves (items of one key run in order), and the item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub id: String,
    pub key: String,
    pub value: T,
}

/// Runs `run` on every item, those of one key in turn and different keys
/// side by side; returns the ids of the items to deliver again: those that
/// failed, and those not started for lack of time. The first item started
/// always runs, so a batch always makes progress.
pub async fn run_items<T, E, F, Fut>(
    items: Vec<Item<T>>,
    deadline: Option<Deadline>,
    run: F,
) -> Vec<String>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut by_key: Vec<(String, Vec<(String, T)>)> = Vec::new();
    for item in items {
        match by_key.iter_mut().find(|(key, _)| *key == item.key) {
            Some((_, queue)) => queue.push((item.id, item.value)),
            None => by_key.push((item.key, vec![(item.id, item.value)])),
        }
    }
    let started_any = AtomicBool::new(false);
    let (run, started_any) = (&run, &started_any);
    futures::stream::iter(by_key)
        .map(|(_, queue)| async move {
            let mut again = Vec::new();
            let mut queue = queue.into_iter();
            for (id, value) in queue.by_ref() {
                let first = !started_any.swap(true, Ordering::SeqCst);
                let out_of_time =
                    !first && deadline.is_some_and(|d| !d.room_for_another(SystemTime::now()));
                if out_of_time {
                    tracing::warn!(item = %id, "too little time left for the rest of the batch; it is delivered again");
                    again.push(id);
                    break;
                }
                if let Err(e) = run(value).await {
                    tracing::warn!(item = %id, error = %e, "item not handled; it is delivered again");
                    again.push(id);
                    // What follows in this key must not overtake what failed.
                    break;
                }
            }
            again.extend(queue.map(|(id, _)| id));
            again
        })
        .buffer_unordered(ITEMS_AT_ONCE)
        .concat()
        .await
}

/// The answer to an SQS batch naming the messages to deliver again.
pub fn sqs_response(again: Vec<String>) -> serde_json::Value {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = again
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    serde_json::to_value(response).expect("batch responses serialise")
}

/// The answer to a stream batch naming the records (by sequence number) to
/// deliver again.
pub fn stream_response(again: Vec<String>) -> serde_json::Value {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = again
        .into_iter()
        .map(|sequence_number| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            failure
        })
        .collect();
    serde_json::to_value(response).expect("batch responses serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// `n` items, each its own key.
    fn items(n: usize) -> Vec<Item<usize>> {
        (0..n)
            .map(|i| Item {
                id: format!("m{i}"),
                key: format!("k{i}"),
                value: i,
            })
            .collect()
    }

    #[tokio::test]
    async fn failures_are_reported_per_item_and_the_rest_still_runs() {
        let ran = Mutex::new(Vec::new());
        let again = run_items(items(4), None, |i| {
            ran.lock().unwrap().push(i);
            async move { if i == 1 { Err("refused") } else { Ok(()) } }
        })
        .await;
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, vec![0, 1, 2, 3]);
        assert_eq!(again, vec!["m1".to_owned()]);
    }

    #[tokio::test]
    async fn a_slow_item_holds_back_only_the_items_of_its_own_key() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Mutex::new(Some(released));
        let finished = Mutex::new(Vec::new());
        let mut batch = items(3);
        batch.insert(
            1,
            Item {
                id: "m0-later".into(),
                key: "k0".into(),
                value: 10,
            },
        );
        let run = |i: usize| {
            let wait = (i == 0).then(|| released.lock().unwrap().take().unwrap());
            let finished = &finished;
            async move {
                if let Some(wait) = wait {
                    wait.await.unwrap();
                }
                finished.lock().unwrap().push(i);
                Ok::<_, String>(())
            }
        };
        let batch = run_items(batch, None, run);
        let release_when_the_others_are_done = async {
            loop {
                if finished.lock().unwrap().len() == 2 {
                    release.send(()).unwrap();
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        let (again, ()) = tokio::join!(batch, release_when_the_others_are_done);
        assert!(again.is_empty());
        assert_eq!(
            finished.into_inner().unwrap(),
            vec![1, 2, 0, 10],
            "the other keys finish while the slow item waits; its key's next item waits for it"
        );
    }

    #[tokio::test]
    async fn after_a_failure_the_rest_of_its_key_is_delivered_again() {
        let mut batch = items(2);
        batch.push(Item {
            id: "m0-later".into(),
            key: "k0".into(),
            value: 10,
        });
        let ran = Mutex::new(Vec::new());
        let again = run_items(batch, None, |i| {
            ran.lock().unwrap().push(i);
            async move { if i == 0 { Err("refused") } else { Ok(()) } }
        })
        .await;
        assert!(!ran.into_inner().unwrap().contains(&10));
        assert_eq!(again, vec!["m0".to_owned(), "m0-later".to_owned()]);
    }

    #[tokio::test]
    async fn no_item_is_started_without_the_time_to_finish_it() {
        let now = SystemTime::now();
        let tight = Deadline {
            at: now + Duration::from_secs(5),
            per_item: Duration::from_secs(60),
        };
        let ran = Mutex::new(Vec::new());
        let mut again = run_items(items(3), Some(tight), |i| {
            ran.lock().unwrap().push(i);
            async { Ok::<_, String>(()) }
        })
        .await;
        let ran = ran.into_inner().unwrap();
        assert_eq!(ran.len(), 1, "one item runs: a batch always moves");
        again.sort();
        let not_run: Vec<String> = (0..3)
            .filter(|i| !ran.contains(i))
            .map(|i| format!("m{i}"))
            .collect();
        assert_eq!(again, not_run, "the others are delivered again");

        let roomy = Deadline {
            at: now + Duration::from_secs(600),
            per_item: Duration::from_secs(60),
        };
        let again = run_items(items(3), Some(roomy), |_| async { Ok::<_, String>(()) }).await;
        assert!(again.is_empty());
        assert!(
            !tight.room_for_another(now + Duration::from_secs(10)),
            "past it"
        );
    }

    #[test]
    fn responses_have_lambdas_shape() {
        assert_eq!(
            sqs_response(vec!["m1".into()]),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
        );
        assert_eq!(
            stream_response(vec!["42".into()]),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "42"}]})
        );
        assert_eq!(
            stream_response(vec![]),
            serde_json::json!({"batchItemFailures": []})
        );
    }
}
