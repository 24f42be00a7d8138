//! The `source` function: commit events in, executions out. GitHub push
//! webhooks arrive through its Function URL; CodeCommit triggers and
//! EventBridge CodeCommit events invoke it directly. Each push that a
//! pipeline's source filter selects starts at most one execution of that
//! pipeline, however often it is delivered.

use crate::aws::send_to_queue;
use crate::clock::{Clock, SystemClock};
use crate::commits::{
    self, CommitEventError, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER,
    parse_codecommit_state_change, parse_codecommit_trigger, parse_github_push,
};
use crate::domain::deployment::Time;
use crate::domain::execution::Execution;
use crate::domain::pipeline::{PipelineDefinition, Push};
use crate::events::HandedOver;
use crate::function_url::{self, error_response, response};
use crate::metrics::{self, Metric};
use crate::ports::Executions;
use crate::settings::{SettingError, Settings};
use crate::store::{ExecutionStart, Store, StoreError};
use aws_lambda_events::event::code_commit::CodeCommitEvent;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// GitHub sends bodies up to 25 MB; a push Sluice acts on is far smaller.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;
/// As sent: form encoding makes the same event up to three times longer.
const MAX_WEBHOOK_SENT: usize = 3 * MAX_WEBHOOK_BODY;

/// How long the webhook secret is cached before it is read again.
const SECRET_TTL: Duration = Duration::from_secs(300);
/// The longest a new execution's hand-over to the orchestrator's queue may
/// hold the webhook's answer; the stream delivers it anyway.
const HAND_OVER_WITHIN: Duration = Duration::from_secs(1);
/// A signature that does not match re-reads the secret (it may have just
/// rotated), but not more often than this: bad requests cannot drive reads.
const SECRET_REFRESH_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the webhook secret cannot be read: {0}")]
    Secret(String),
    #[error("not an event the source function handles: {0}")]
    UnknownEvent(String),
    #[error(transparent)]
    Commit(#[from] CommitEventError),
}

/// The webhook secret from Secrets Manager: the current value, and the previous
/// one while a rotation has not reached GitHub yet.
pub struct WebhookSecret {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: Mutex<Option<CachedSecret>>,
}

struct CachedSecret {
    values: Vec<Vec<u8>>,
    read_at: Instant,
}

impl WebhookSecret {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        WebhookSecret {
            client,
            secret_id: secret_id.into(),
            cached: Mutex::new(None),
        }
    }

    async fn read_stage(&self, stage: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .secret_string()
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| out.secret_binary().map(|b| b.as_ref().to_vec()))),
            Err(e)
                if stage != "AWSCURRENT"
                    && e.as_service_error()
                        .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(SourceError::Secret(format!("{e:?}"))),
        }
    }

    /// The values a signature may be made with; `fresh` re-reads them unless
    /// they were read moments ago.
    async fn values(&self, fresh: bool) -> Result<Vec<Vec<u8>>, SourceError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let age = c.read_at.elapsed();
            if age < SECRET_TTL && (!fresh || age < SECRET_REFRESH_MIN) {
                return Ok(c.values.clone());
            }
        }
        let current = self
            .read_stage("AWSCURRENT")
            .await?
            .ok_or_else(|| SourceError::Secret("the secret has no value".into()))?;
        let mut values = vec![current];
        values.extend(self.read_stage("AWSPREVIOUS").await?);
        *cached = Some(CachedSecret {
            values: values.clone(),
            read_at: Instant::now(),
        });
        Ok(values)
    }

    /// Verifies a signature, re-reading the secret once if it does not match.
    pub async fn verify(&self, body: &[u8], signature: Option<&str>) -> Result<(), SourceError> {
        let check = |values: &[Vec<u8>]| {
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            commits::verify_signature(body, signature, &refs)
        };
        match check(&self.values(false).await?) {
            Err(CommitEventError::WrongSignature) => Ok(check(&self.values(true).await?)?),
            other => Ok(other?),
        }
    }
}

/// An execution a push started (or had already started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    pub pipeline: String,
    pub execution: String,
    /// False when this delivery was a repeat of one already handled.
    pub new: bool,
}

pub struct Source<K = SystemClock> {
    pub store: Store,
    pub webhook_secret: WebhookSecret,
    pub clock: K,
    pub sqs: aws_sdk_sqs::Client,
    /// The orchestrator's queue, where a new execution is handed at once.
    pub pipeline_queue_url: String,
}

/// An event the source function is invoked with.
pub enum SourceEvent {
    Webhook(Box<LambdaFunctionUrlRequest>),
    CodeCommitTrigger(CodeCommitEvent),
    CodeCommitStateChange(serde_json::Value),
}

/// Tells the three event shapes apart.
pub fn parse_source_event(payload: &serde_json::Value) -> Result<SourceEvent, SourceError> {
    let unknown = |why: &str| SourceError::UnknownEvent(why.to_owned());
    if payload.get("requestContext").is_some() && payload.get("rawPath").is_some() {
        return serde_json::from_value(payload.clone())
            .map(|r| SourceEvent::Webhook(Box::new(r)))
            .map_err(|e| unknown(&format!("a Function URL request that does not parse: {e}")));
    }
    if payload["Records"][0]["eventSource"] == "aws:codecommit" {
        return serde_json::from_value(payload.clone())
            .map(SourceEvent::CodeCommitTrigger)
            .map_err(|e| unknown(&format!("a CodeCommit trigger that does not parse: {e}")));
    }
    if payload["detail-type"] == "CodeCommit Repository State Change" {
        return Ok(SourceEvent::CodeCommitStateChange(
            payload["detail"].clone(),
        ));
    }
    Err(unknown(
        "expected a Function URL request, a CodeCommit trigger or a CodeCommit state change",
    ))
}

impl Source {
    /// The source over DynamoDB and Secrets Manager: the settings must name
    /// the webhook secret.
    pub fn from_settings(
        config: &aws_config::SdkConfig,
        settings: &Settings,
    ) -> Result<Self, SettingError> {
        Ok(Source {
            store: Store::from_settings(config, settings),
            webhook_secret: WebhookSecret::new(
                aws_sdk_secretsmanager::Client::new(config),
                settings.webhook_secret()?,
            ),
            clock: SystemClock,
            sqs: aws_sdk_sqs::Client::new(config),
            pipeline_queue_url: settings.pipeline_timer_queue_url.clone(),
        })
    }
}

impl<K: Clock> Source<K> {
    /// Handles any event of the function; a webhook gets an HTTP answer.
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, SourceError> {
        match parse_source_event(payload)? {
            SourceEvent::Webhook(request) => {
                let answer = self.webhook(&request).await;
                Ok(serde_json::to_value(answer).expect("responses serialise"))
            }
            SourceEvent::CodeCommitTrigger(event) => {
                let mut started = Vec::new();
                for push in parse_codecommit_trigger(&event) {
                    started.extend(self.pushed(&push).await?);
                }
                Ok(serde_json::json!({ "executions": started }))
            }
            SourceEvent::CodeCommitStateChange(detail) => {
                let started = match parse_codecommit_state_change(&detail)? {
                    Some(push) => self.pushed(&push).await?,
                    None => Vec::new(),
                };
                Ok(serde_json::json!({ "executions": started }))
            }
        }
    }

    /// A GitHub webhook delivery through the Function URL.
    pub async fn webhook(&self, request: &LambdaFunctionUrlRequest) -> LambdaFunctionUrlResponse {
        if function_url::method(request) != "POST" {
            return error_response(405, "webhooks are POSTed");
        }
        let body = match function_url::body(request) {
            Ok(body) => body,
            Err(why) => return error_response(400, why),
        };
        if body.len() > MAX_WEBHOOK_SENT {
            return error_response(413, format!("the body is over {MAX_WEBHOOK_SENT} bytes"));
        }
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let delivery = header(DELIVERY_HEADER).unwrap_or_default();
        match self
            .webhook_secret
            .verify(&body, header(SIGNATURE_HEADER).as_deref())
            .await
        {
            Ok(()) => {}
            Err(SourceError::Commit(e)) => {
                tracing::warn!(delivery, error = %e, "webhook refused");
                return error_response(401, e);
            }
            Err(e) => {
                tracing::error!(delivery, error = %e, "webhook not verified");
                return error_response(500, "the webhook secret cannot be read");
            }
        }
        let event = header(EVENT_HEADER).unwrap_or_default();
        let body = match commits::webhook_json(header("content-type").as_deref(), &body) {
            Ok(json) => json,
            Err(e @ CommitEventError::UnsupportedContentType(_)) => return error_response(415, e),
            Err(e) => return error_response(400, e),
        };
        if body.len() > MAX_WEBHOOK_BODY {
            return error_response(413, format!("the event is over {MAX_WEBHOOK_BODY} bytes"));
        }
        match event.as_str() {
            "ping" => return response(200, serde_json::json!({ "pong": true })),
            "push" => {}
            other => {
                return response(
                    202,
                    serde_json::json!({ "ignored": format!("{other:?} events start nothing") }),
                );
            }
        }
        let push = match parse_github_push(&body) {
            Ok(Some(push)) => push,
            Ok(None) => {
                return response(202, serde_json::json!({ "ignored": "not a branch or tag" }));
            }
            Err(e) => return error_response(400, e),
        };
        match self.pushed(&push).await {
            Ok(started) => {
                tracing::info!(delivery, repository = %push.repository, sha = %push.sha, executions = started.len(), "push handled");
                response(200, serde_json::json!({ "executions": started }))
            }
            Err(e) => {
                // GitHub shows the failure; a redelivery starts nothing twice.
                tracing::error!(delivery, error = %e, "push not handled");
                error_response(500, "the push could not be recorded; redeliver it")
            }
        }
    }

    /// Starts an execution of every pipeline the push selects, once per commit.
    pub async fn pushed(&self, push: &Push) -> Result<Vec<Started>, SourceError> {
        let definitions = self.store.definitions().await?;
        let random = || uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let started =
            start_executions(&self.store, definitions, push, self.clock.now(), random).await?;
        // Handed to the orchestrator's queue at once: the table's stream,
        // polled four times a second, would deliver them a poll later, and
        // still does if a hand-over is lost (the second arrival finds the
        // execution started).
        // At most a second each: GitHub waits 10 s for the answer.
        let handed = started.iter().filter(|s| s.new).map(|s| async move {
            let work = HandedOver::Arrived(s.execution.clone());
            let send = send_to_queue(&self.sqs, &self.pipeline_queue_url, &work, 0);
            match tokio::time::timeout(HAND_OVER_WITHIN, send).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(execution_id = %s.execution, error = ?e, "not handed over; the stream delivers it");
                }
                Err(_) => {
                    tracing::warn!(execution_id = %s.execution, "not handed over in time; the stream delivers it");
                }
            }
        });
        futures::future::join_all(handed).await;
        Ok(started)
    }
}

/// Starts an execution of each definition the push selects, unless its commit
/// already started one there. Ids are the short sha and `suffix()`.
pub async fn start_executions<T: Executions>(
    table: &T,
    definitions: Vec<PipelineDefinition>,
    push: &Push,
    now: Time,
    mut suffix: impl FnMut() -> String,
) -> Result<Vec<Started>, StoreError> {
    let mut started = Vec::new();
    for definition in definitions {
        if !definition.matches(push) {
            continue;
        }
        let id = format!("{}-{}", crate::domain::clip(&push.sha, 7), suffix());
        let pipeline = definition.name.clone();
        let (execution, commands) = Execution::create(&id, definition, push.clone(), now);
        let events = crate::domain::execution::events_of(&commands);
        match table.start_execution(&execution, &events).await? {
            ExecutionStart::Started => {
                metrics::emit(Metric::ExecutionsStarted, &pipeline);
                started.push(Started {
                    pipeline,
                    execution: id,
                    new: true,
                })
            }
            ExecutionStart::AlreadyStarted(existing) => started.push(Started {
                pipeline,
                execution: existing,
                new: false,
            }),
        }
    }
    Ok(started)
}
