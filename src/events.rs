//! Incoming events, parsed into what the engine and the orchestrator act on.
//! The shifter is fed by four sources (template.yaml): the timer queue, the
//! table's stream, the reconcile schedule and CloudWatch alarm state changes;
//! the orchestrator by its timer queue, the stream, the schedule and S3
//! "Object Created" events of the artifact bucket.

use crate::batch::Item;
use crate::domain::clip;
use crate::domain::deployment::{Deployment, Time};
use crate::domain::execution::{ActionRef, Execution, StopMode};
use crate::notices::{Report, deployment_reports, execution_reports};
use crate::store::keys::{Key, PK, SK};
use aws_lambda_events::cloudwatch_alarms::{CloudWatchAlarmData, CloudWatchAlarmStateValue};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of a timer message on the timer queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerMessage {
    pub deployment_id: String,
    pub step: usize,
    /// The wake it was armed for: once the wake has moved, it is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The body of a message on the pipeline timer queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTimer {
    pub execution_id: String,
    pub at: ActionRef,
    /// Look again (an artifact not there yet, a CodePipeline still running)
    /// rather than a deadline or a wait's end.
    #[serde(default)]
    pub recheck: bool,
    /// What the action started, to look at again (a CodePipeline execution id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Stop what the action started (`handle`), this way: a stop that failed
    /// for a passing reason, tried again. The execution has ended already,
    /// so nothing else would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopMode>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("unrecognised event: {0}")]
    Unrecognised(String),
    #[error("malformed {kind} event: {detail}")]
    Malformed { kind: &'static str, detail: String },
}

/// Work the table's stream hands to a worker's queue, to be done there. A
/// stream's shard is read one batch at a time
/// (<https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html>), so a
/// gate or an action run in a stream batch would hold back every record
/// behind it; an SQS queue is read by several batches at once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HandedOver {
    /// A deployment or an execution was just created.
    Arrived(String),
    /// A deployment ended: the orchestrator moves its execution on.
    DeploymentFinished(String),
    /// A deployment whose worker met a transient failure (throttled, out
    /// of budget, unanswered) with the deployment saved at `version`: taken
    /// up again after a delay, unless another worker has saved it since.
    Retry {
        id: String,
        version: u64,
        attempt: u32,
    },
    /// A deployment that an operator (or the orchestrator) moved on and
    /// saved at `version`, with the commands that decision issued: the
    /// shifter runs them, unless another worker has saved it since.
    SteeredDeployment {
        id: String,
        version: u64,
        commands: Vec<crate::domain::deployment::Command>,
    },
    /// The same for an execution, run by the orchestrator.
    SteeredExecution {
        id: String,
        version: u64,
        commands: Vec<crate::domain::execution::Command>,
    },
}

impl HandedOver {
    /// What it moves: the id its work is keyed by.
    pub fn id(&self) -> &str {
        match self {
            HandedOver::Arrived(id)
            | HandedOver::DeploymentFinished(id)
            | HandedOver::Retry { id, .. }
            | HandedOver::SteeredDeployment { id, .. }
            | HandedOver::SteeredExecution { id, .. } => id,
        }
    }
}

/// A queue batch as items to run: a timer keyed by what `timer_key` says it
/// moves, work handed over by its id, a body that could not be read by its
/// message alone.
pub fn queue_items<T>(
    messages: Messages<QueueMessage<T>>,
    timer_key: impl Fn(&T) -> String,
    work_key: impl Fn(&HandedOver) -> String,
) -> Vec<Item<Result<QueueMessage<T>, String>>> {
    messages
        .into_iter()
        .map(|(id, body)| Item {
            key: match &body {
                Ok(QueueMessage::Timer(timer)) => timer_key(timer),
                Ok(QueueMessage::HandedOver(work)) => work_key(work),
                Err(_) => id.clone(),
            },
            id,
            value: body,
        })
        .collect()
}

impl std::fmt::Display for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandedOver::Arrived(id) => write!(f, "the arrival of {id}"),
            HandedOver::DeploymentFinished(id) => write!(f, "the end of deployment {id}"),
            HandedOver::Retry { id, attempt, .. } => {
                write!(f, "retry {attempt} of deployment {id}")
            }
            HandedOver::SteeredDeployment { id, version, .. }
            | HandedOver::SteeredExecution { id, version, .. } => {
                write!(f, "{id} steered to version {version}")
            }
        }
    }
}

/// A message on a worker's queue: one of its timers, or work handed over.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueMessage<T> {
    Timer(T),
    HandedOver(HandedOver),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShifterEvent {
    /// Queue messages by SQS message id; a body that is not one is kept as its error.
    Queue(Messages<QueueMessage<TimerMessage>>),
    /// Deployments whose state item was just created.
    Created(Vec<StreamItem>),
    Reconcile,
    AlarmChanged {
        alarm: String,
        in_alarm: bool,
    },
}

/// An item of the table that a stream record asks a worker to look at: its
/// id, and the record's sequence number (what a partial batch answer names).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    pub sequence_number: String,
    pub id: String,
}

impl StreamItem {
    fn of(record: &aws_lambda_events::dynamodb::EventRecord, id: &str) -> Self {
        StreamItem {
            sequence_number: record.change.sequence_number.clone().unwrap_or_default(),
            id: id.to_owned(),
        }
    }
}

/// The state item (a deployment or an execution) a stream record's keys name.
fn state_key(keys: &impl serde::Serialize) -> Option<Key> {
    let keys = serde_json::to_value(keys).ok()?;
    let text = |name: &str| keys.get(name)?.get("S")?.as_str();
    Key::state_of(text(PK)?, text(SK)?)
}

/// Adds `item` unless its id is there already (a record delivered twice, or
/// two records of one item): the first record stands for both.
fn push_once(items: &mut Vec<StreamItem>, item: StreamItem) {
    if !items.iter().any(|i| i.id == item.id) {
        items.push(item);
    }
}

fn malformed(kind: &'static str) -> impl Fn(serde_json::Error) -> EventError {
    move |e| EventError::Malformed {
        kind,
        detail: e.to_string(),
    }
}

/// SQS messages by message id, each read as a `T` or kept as why it is not one.
pub type Messages<T> = Vec<(String, Result<T, String>)>;

/// An SQS batch's JSON bodies: work handed over (an object with one of its
/// names as only field), or else a timer `T`.
fn sqs_bodies<T: serde::de::DeserializeOwned>(
    payload: &Value,
    what: &str,
) -> Result<Messages<QueueMessage<T>>, EventError> {
    let event: SqsEvent = serde_json::from_value(payload.clone()).map_err(malformed("SQS"))?;
    Ok(event
        .records
        .into_iter()
        .map(|m| {
            let id = m.message_id.unwrap_or_default();
            let body = queue_message(m.body.as_deref().unwrap_or_default(), what);
            (id, body)
        })
        .collect())
}

/// One queue message's body: work handed over (an object of one field, the
/// kind of work, as `HandedOver` writes it; a timer has more), or a timer
/// (`what` names it in the error).
pub fn queue_message<T: serde::de::DeserializeOwned>(
    body: &str,
    what: &str,
) -> Result<QueueMessage<T>, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not {what}: {e}"))?;
    if value.as_object().is_some_and(|fields| fields.len() == 1) {
        serde_json::from_value(value)
            .map(QueueMessage::HandedOver)
            .map_err(|e| format!("not work handed over: {e}"))
    } else {
        serde_json::from_value(value)
            .map(QueueMessage::Timer)
            .map_err(|e| format!("not {what}: {e}"))
    }
}

/// Tells the shifter's event sources apart by their shape.
pub fn parse_shifter_event(payload: &Value) -> Result<ShifterEvent, EventError> {
    let first_source = payload
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str);
    match first_source {
        Some("aws:sqs") => {
            return Ok(ShifterEvent::Queue(sqs_bodies(payload, "a timer message")?));
        }
        Some("aws:dynamodb") => {
            let event: StreamEvent =
                serde_json::from_value(payload.clone()).map_err(malformed("DynamoDB stream"))?;
            let mut items = Vec::new();
            for record in event.records.iter().filter(|r| r.event_name == "INSERT") {
                if let Some(Key::Deployment(id)) = state_key(&record.change.keys) {
                    push_once(&mut items, StreamItem::of(record, &id));
                }
            }
            return Ok(ShifterEvent::Created(items));
        }
        _ => {}
    }
    match payload.get("detail-type").and_then(Value::as_str) {
        Some("Scheduled Event") => Ok(ShifterEvent::Reconcile),
        Some("CloudWatch Alarm State Change") => {
            let event: EventBridgeEvent<CloudWatchAlarmData<Value, Value>> =
                serde_json::from_value(payload.clone()).map_err(malformed("alarm state change"))?;
            let in_alarm = event
                .detail
                .state
                .is_some_and(|s| s.value == CloudWatchAlarmStateValue::Alarm);
            Ok(ShifterEvent::AlarmChanged {
                alarm: event.detail.alarm_name,
                in_alarm,
            })
        }
        _ => {
            let shown = payload.to_string();
            Err(EventError::Unrecognised(clip(&shown, 200).to_owned()))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrchestratorEvent {
    /// Queue messages by SQS message id; a body that is not one is kept as its error.
    Queue(Messages<QueueMessage<PipelineTimer>>),
    /// From the table's stream: executions just created, and deployments that just ended.
    Table {
        new_executions: Vec<StreamItem>,
        finished_deployments: Vec<StreamItem>,
        /// What each change is to tell (`notices`), by its record's sequence number.
        reports: Vec<(String, Report)>,
    },
    /// An S3 "Object Created" event (EventBridge).
    ObjectCreated {
        bucket: String,
        key: String,
    },
    Reconcile,
}

const FINISHED_PHASES: [&str; 3] = ["promoted", "rolled_back", "failed_to_start"];

/// What a state item's change is to tell, from its images' `data` (the
/// saved state as JSON): nothing for an item removed (its retention ended),
/// nor for one that cannot be read, which is logged and holds back no
/// other record.
fn reports_of(key: &Key, old: Option<&str>, new: Option<&str>) -> Vec<Report> {
    fn parsed<T: serde::de::DeserializeOwned>(key: &Key, data: &str) -> Option<T> {
        serde_json::from_str(data)
            .inspect_err(|e| tracing::warn!(item = %key, error = %e, "a stream image that is not a state: nothing reported"))
            .ok()
    }
    let Some(new) = new else {
        return Vec::new();
    };
    match key {
        Key::Deployment(_) => parsed::<Deployment>(key, new).map_or_else(Vec::new, |new| {
            let old = old.and_then(|o| parsed::<Deployment>(key, o));
            deployment_reports(old.as_ref(), &new)
        }),
        Key::Execution(_) => parsed::<Execution>(key, new).map_or_else(Vec::new, |new| {
            let old = old.and_then(|o| parsed::<Execution>(key, o));
            execution_reports(old.as_ref(), &new)
        }),
        _ => Vec::new(),
    }
}

/// Tells the orchestrator's event sources apart by their shape.
pub fn parse_orchestrator_event(payload: &Value) -> Result<OrchestratorEvent, EventError> {
    let first_source = payload
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str);
    match first_source {
        Some("aws:sqs") => {
            return Ok(OrchestratorEvent::Queue(sqs_bodies(
                payload,
                "a pipeline timer",
            )?));
        }
        Some("aws:dynamodb") => {
            let event: StreamEvent =
                serde_json::from_value(payload.clone()).map_err(malformed("DynamoDB stream"))?;
            let mut new_executions = Vec::new();
            let mut finished_deployments = Vec::new();
            let mut reports = Vec::new();
            for record in &event.records {
                let change = serde_json::to_value(&record.change).unwrap_or_default();
                let text = |pointer: &str| change.pointer(pointer).and_then(Value::as_str);
                let finished = |image: &str| {
                    text(&format!("/{image}/phase/S")).is_some_and(|p| FINISHED_PHASES.contains(&p))
                };
                if let Some(key) = state_key(&record.change.keys) {
                    let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
                    let told = reports_of(&key, text("/OldImage/data/S"), text("/NewImage/data/S"));
                    reports.extend(told.into_iter().map(|r| (sequence_number.clone(), r)));
                }
                match state_key(&record.change.keys) {
                    Some(Key::Execution(id)) if record.event_name == "INSERT" => {
                        push_once(&mut new_executions, StreamItem::of(record, &id));
                    }
                    Some(Key::Deployment(id)) if finished("NewImage") && !finished("OldImage") => {
                        push_once(&mut finished_deployments, StreamItem::of(record, &id));
                    }
                    _ => {}
                }
            }
            return Ok(OrchestratorEvent::Table {
                new_executions,
                finished_deployments,
                reports,
            });
        }
        _ => {}
    }
    match payload.get("detail-type").and_then(Value::as_str) {
        Some("Scheduled Event") => Ok(OrchestratorEvent::Reconcile),
        Some("Object Created") => {
            let text = |pointer: &str| {
                payload
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| EventError::Malformed {
                        kind: "Object Created",
                        detail: format!("no {pointer}"),
                    })
            };
            Ok(OrchestratorEvent::ObjectCreated {
                bucket: text("/detail/bucket/name")?,
                key: text("/detail/object/key")?,
            })
        }
        _ => {
            let shown = payload.to_string();
            Err(EventError::Unrecognised(clip(&shown, 200).to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Value {
        let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_sample_events_parse_into_what_the_shifter_does() {
        assert_eq!(
            parse_shifter_event(&sample("shifter-timer.json")),
            Ok(ShifterEvent::Queue(vec![(
                "059f36b4-87a3-44ab-83d2-661975830a7d".into(),
                Ok(QueueMessage::Timer(TimerMessage {
                    deployment_id: "d-4f1c".into(),
                    step: 0,
                    at: Some("2026-11-23T02:13:25Z".parse().unwrap()),
                }))
            )]))
        );
        assert_eq!(
            parse_shifter_event(&sample("shifter-stream.json")),
            Ok(ShifterEvent::Created(vec![StreamItem {
                sequence_number: "4421584500000000017450439091".into(),
                id: "d-4f1c".into()
            }])),
            "only state items count, timeline items do not"
        );
        assert_eq!(
            parse_shifter_event(&sample("shifter-schedule.json")),
            Ok(ShifterEvent::Reconcile)
        );
        assert_eq!(
            parse_shifter_event(&sample("shifter-alarm.json")),
            Ok(ShifterEvent::AlarmChanged {
                alarm: "greeter-errors".into(),
                in_alarm: true
            })
        );
    }

    #[test]
    fn bad_events_are_errors_not_panics() {
        let mut timer = sample("shifter-timer.json");
        timer["Records"][0]["body"] = json!("not json");
        let Ok(ShifterEvent::Queue(parsed)) = parse_shifter_event(&timer) else {
            panic!("a bad body is the message's error, not the batch's")
        };
        assert!(parsed[0].1.is_err());
        assert!(matches!(
            parse_shifter_event(&json!({"hello": 1})),
            Err(EventError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_shifter_event(
                &json!({"Records": [{"eventSource": "aws:dynamodb", "dynamodb": 7}]})
            ),
            Err(EventError::Malformed { .. })
        ));
        assert!(matches!(
            parse_shifter_event(
                &json!({"detail-type": "CloudWatch Alarm State Change", "detail": {}})
            ),
            Err(EventError::Malformed { .. })
        ));
    }

    #[test]
    fn the_orchestrator_samples_parse_into_what_it_does() {
        assert_eq!(
            parse_orchestrator_event(&sample("orchestrator-stream.json")),
            Ok(OrchestratorEvent::Table {
                new_executions: vec![StreamItem {
                    sequence_number: "4421584500000000017450439101".into(),
                    id: "9a1f3c2-0c1e2d3f".into()
                }],
                finished_deployments: vec![StreamItem {
                    sequence_number: "4421584500000000017450439102".into(),
                    id: "9a1f3c2-0c1e2d3f~1.0.1".into()
                }],
                reports: Vec::new(),
            })
        );
        let Ok(OrchestratorEvent::Queue(timers)) =
            parse_orchestrator_event(&sample("orchestrator-timer.json"))
        else {
            panic!("not timers")
        };
        let Ok(QueueMessage::Timer(timer)) = &timers[0].1 else {
            panic!("not a timer: {:?}", timers[0].1)
        };
        assert_eq!(timer.execution_id, "9a1f3c2-0c1e2d3f");
        assert!(
            timers[1]
                .1
                .as_ref()
                .unwrap_err()
                .starts_with("not a pipeline timer")
        );
        assert_eq!(
            parse_orchestrator_event(&sample("orchestrator-object-created.json")),
            Ok(OrchestratorEvent::ObjectCreated {
                bucket: "sluice-artifactbucket-1x2y3z".into(),
                key: "builds/acme/greeter/9a1f3c2e8b7d4a6f5e0c1b2a3d4e5f60718293a4/greeter.zip"
                    .into(),
            })
        );
        assert_eq!(
            parse_orchestrator_event(&sample("shifter-schedule.json")),
            Ok(OrchestratorEvent::Reconcile)
        );
        assert!(matches!(
            parse_orchestrator_event(&json!({"detail-type": "Object Created", "detail": {}})),
            Err(EventError::Malformed { .. })
        ));
        assert!(matches!(
            parse_orchestrator_event(&json!({"hello": 1})),
            Err(EventError::Unrecognised(_))
        ));
    }

    #[test]
    fn work_handed_over_is_told_from_timers_and_read_strictly() {
        let batch = |bodies: &[&str]| {
            json!({"Records": bodies.iter().enumerate().map(|(i, body)| json!({
                "eventSource": "aws:sqs", "messageId": format!("m{i}"), "body": body
            })).collect::<Vec<_>>()})
        };
        let sent = [
            HandedOver::Arrived("d-1".into()),
            HandedOver::DeploymentFinished("e-1~1.0.1".into()),
            HandedOver::Retry {
                id: "d-2".into(),
                version: 4,
                attempt: 1,
            },
        ]
        .map(|work| serde_json::to_string(&work).unwrap());
        assert_eq!(sent[0], r#"{"arrived":"d-1"}"#);
        let Ok(ShifterEvent::Queue(read)) = parse_shifter_event(&batch(&[
            &sent[0],
            &sent[1],
            r#"{"arrived":"d-1","step":2}"#,
            r#"{"arrived":7}"#,
            r#"{"deployment_id":"d-1","step":2,"stp":3}"#,
            &sent[2],
        ])) else {
            panic!("a queue batch")
        };
        assert_eq!(
            read[0].1,
            Ok(QueueMessage::HandedOver(HandedOver::Arrived("d-1".into())))
        );
        assert_eq!(
            read[1].1,
            Ok(QueueMessage::HandedOver(HandedOver::DeploymentFinished(
                "e-1~1.0.1".into()
            )))
        );
        let refused = |i: usize| read[i].1.clone().unwrap_err();
        assert!(
            refused(2).contains("unknown field `arrived`"),
            "{}",
            refused(2)
        );
        assert!(
            refused(3).starts_with("not work handed over"),
            "{}",
            refused(3)
        );
        assert!(refused(4).contains("unknown field `stp`"), "{}", refused(4));
        // Every kind of work handed over is read as such, a retry included.
        assert_eq!(
            read[5].1,
            Ok(QueueMessage::HandedOver(HandedOver::Retry {
                id: "d-2".into(),
                version: 4,
                attempt: 1
            }))
        );
    }
}
