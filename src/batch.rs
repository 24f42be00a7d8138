//! How a worker takes the items of a batch from an event source: one after
//! another, a failure reported for its own item only, and no new item taken
//! once too little time is left to finish it. Lambda then delivers again just
//! the items named (SQS: those messages; a stream: from the lowest sequence
//! number named), as the event source mappings' `ReportBatchItemFailures`
//! documents (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>,
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html>).

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};

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

/// Runs `run` on each item in turn; returns the ids of the items to deliver
/// again: those that failed, and those not started for lack of time. The
/// first item always runs, so a batch always makes progress.
pub async fn run_items<T, E, F, Fut>(
    items: Vec<(String, T)>,
    deadline: Option<Deadline>,
    mut run: F,
) -> Vec<String>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut again = Vec::new();
    let mut items = items.into_iter();
    let mut first = true;
    for (id, item) in items.by_ref() {
        let out_of_time =
            !first && deadline.is_some_and(|d| !d.room_for_another(SystemTime::now()));
        if out_of_time {
            tracing::warn!(item = %id, "too little time left for the rest of the batch; it is delivered again");
            again.push(id);
            break;
        }
        first = false;
        if let Err(e) = run(item).await {
            tracing::warn!(item = %id, error = %e, "item not handled; it is delivered again");
            again.push(id);
        }
    }
    again.extend(items.map(|(id, _)| id));
    again
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

    fn items(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("m{i}"), i)).collect()
    }

    #[tokio::test]
    async fn failures_are_reported_per_item_and_the_rest_still_runs() {
        let mut ran = Vec::new();
        let again = run_items(items(4), None, |i| {
            ran.push(i);
            async move { if i == 1 { Err("refused") } else { Ok(()) } }
        })
        .await;
        assert_eq!(ran, vec![0, 1, 2, 3]);
        assert_eq!(again, vec!["m1".to_owned()]);
    }

    #[tokio::test]
    async fn no_item_is_started_without_the_time_to_finish_it() {
        let now = SystemTime::now();
        let tight = Deadline {
            at: now + Duration::from_secs(5),
            per_item: Duration::from_secs(60),
        };
        let mut ran = Vec::new();
        let again = run_items(items(3), Some(tight), |i| {
            ran.push(i);
            async { Ok::<_, String>(()) }
        })
        .await;
        assert_eq!(ran, vec![0], "the first item runs: a batch always moves");
        assert_eq!(again, vec!["m1".to_owned(), "m2".to_owned()]);

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
