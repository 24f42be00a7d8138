//! What the orchestrator needs beyond the engine's ports: the table's
//! execution items, and the outside world its actions touch (Lambda for
//! invoke actions, S3 for artifacts, CodePipeline, its timer queue). The
//! functions plug in DynamoDB and the AWS SDK; the deterministic simulation
//! plugs in in-memory models.

use super::{OrchestratorError, aws};
use crate::aws::{refused_for_good, service_message};
use crate::domain::deployment::Time;
use crate::domain::execution::{Execution, ExecutionEvent};
use crate::engine::{Deployments, Invocation, invoke};
use crate::events::HandedOver;
use crate::events::PipelineTimer;
use crate::store::{ExecutionStart, Store, StoreError, StoredExecution};
use aws_sdk_codepipeline::types::{
    PipelineExecutionStatus, SourceRevisionOverride, SourceRevisionType,
};
use std::future::Future;

/// Execution items, next to the deployments. Every write is conditional, as
/// for deployments; `start_execution` also claims the (pipeline, commit).
pub trait Executions: Deployments {
    /// Records a new execution, unless its commit already started one.
    fn start_execution(
        &self,
        e: &Execution,
        events: &[ExecutionEvent],
    ) -> impl Future<Output = Result<ExecutionStart, StoreError>> + Send;
    fn load_execution(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;
    fn save_execution(
        &self,
        e: &Execution,
        expected: u64,
        events: &[ExecutionEvent],
    ) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;
    fn due_executions(
        &self,
        now: Time,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// A pipeline's executions in progress or not started yet.
    fn live_executions(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Every execution not finished for good.
    fn running_executions_all(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// A pipeline's queued executions, longest waiting first.
    fn queued_executions(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

impl Executions for Store {
    async fn start_execution(
        &self,
        e: &Execution,
        events: &[ExecutionEvent],
    ) -> Result<ExecutionStart, StoreError> {
        Store::start_execution(self, e, events).await
    }
    async fn load_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        Store::load_execution(self, id).await
    }
    async fn save_execution(
        &self,
        e: &Execution,
        expected: u64,
        events: &[ExecutionEvent],
    ) -> Result<StoredExecution, StoreError> {
        Store::save_execution(self, e, expected, events).await
    }
    async fn due_executions(&self, now: Time) -> Result<Vec<String>, StoreError> {
        Store::due_executions(self, now).await
    }
    async fn live_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        Store::live_executions(self, pipeline).await
    }
    async fn running_executions_all(&self) -> Result<Vec<String>, StoreError> {
        Store::running_executions_all(self).await
    }
    async fn queued_executions(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        Store::queued_executions(self, pipeline).await
    }
}

/// A CodePipeline execution as an action sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineRun {
    Running,
    Succeeded,
    /// Failed, stopped, superseded or cancelled: the status.
    Ended(String),
    /// CodePipeline refuses to say, for good (access denied, no such execution).
    Refused(String),
}

/// The outside world of pipeline actions.
pub trait Actions: Send + Sync {
    fn invoke(
        &self,
        function: &str,
        event: &serde_json::Value,
    ) -> impl Future<Output = Result<Invocation, OrchestratorError>> + Send;
    /// `None` if the object is not there (yet); else its version id, if any.
    fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Option<String>>, OrchestratorError>> + Send;
    /// Starts a CodePipeline execution (`token` makes a repeat start nothing
    /// new), optionally at a commit of one source action: its id, or why
    /// CodePipeline refuses it for good (no such pipeline, access denied).
    fn start_pipeline(
        &self,
        pipeline: &str,
        token: &str,
        source: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<Result<String, String>, OrchestratorError>> + Send;
    fn pipeline_run(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> impl Future<Output = Result<PipelineRun, OrchestratorError>> + Send;
    /// Stops a CodePipeline execution: at once if `abandon`, else once its
    /// actions in progress finish. One that has ended already, or is being
    /// stopped, is left as it is.
    fn stop_pipeline(
        &self,
        pipeline: &str,
        execution_id: &str,
        abandon: bool,
        reason: &str,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// Has `timer` delivered back to the orchestrator after `delay_secs`.
    fn send_timer(
        &self,
        timer: &PipelineTimer,
        delay_secs: i32,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
    /// Puts `work` on the orchestrator's queue, to be done by a worker of its own.
    fn hand_over(
        &self,
        work: &HandedOver,
    ) -> impl Future<Output = Result<(), OrchestratorError>> + Send;
}

/// Pipeline actions through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsActions {
    pub lambda: aws_sdk_lambda::Client,
    pub s3: aws_sdk_s3::Client,
    pub codepipeline: aws_sdk_codepipeline::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub timer_queue_url: String,
}

impl AwsActions {
    /// Whether `version` of the object is there (HeadObject with its version
    /// id): a deployment request naming one is checked with it.
    pub async fn has_object_version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<bool, OrchestratorError> {
        let head = self
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .version_id(version);
        match head.send().await {
            Ok(_) => Ok(true),
            // S3 answers a version id it never gave with 400, one it no longer has with 404.
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 400 | 404)) =>
            {
                Ok(false)
            }
            Err(err) => Err(aws("HeadObject (version)", err)),
        }
    }

    /// The engine's Lambda and SQS clients serve the actions too: invoke
    /// actions go where the engine's Lambda calls go, and each client built
    /// is init time.
    pub fn new(
        cloud: &crate::engine::AwsCloud,
        config: &aws_config::SdkConfig,
        timer_queue_url: String,
    ) -> Self {
        AwsActions {
            lambda: cloud.lambda.clone(),
            s3: aws_sdk_s3::Client::new(config),
            codepipeline: aws_sdk_codepipeline::Client::new(config),
            sqs: cloud.sqs.clone(),
            timer_queue_url,
        }
    }
}

/// What a CodePipeline execution's status means for the action.
pub(super) fn pipeline_run(status: &PipelineExecutionStatus) -> PipelineRun {
    match status {
        PipelineExecutionStatus::Succeeded => PipelineRun::Succeeded,
        PipelineExecutionStatus::Failed
        | PipelineExecutionStatus::Stopped
        | PipelineExecutionStatus::Superseded
        | PipelineExecutionStatus::Cancelled => PipelineRun::Ended(status.as_str().to_owned()),
        _ => PipelineRun::Running,
    }
}

impl Actions for AwsActions {
    async fn invoke(
        &self,
        function: &str,
        event: &serde_json::Value,
    ) -> Result<Invocation, OrchestratorError> {
        let payload = serde_json::to_vec(event).expect("events serialise");
        invoke(&self.lambda, function, payload, None)
            .await
            .map_err(|err| aws("Invoke (throttled)", err))
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Option<String>>, OrchestratorError> {
        match self.s3.head_object().bucket(bucket).key(key).send().await {
            Ok(object) => Ok(Some(object.version_id().map(str::to_owned))),
            Err(err) if err.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(err) => Err(aws("HeadObject", err)),
        }
    }

    async fn start_pipeline(
        &self,
        pipeline: &str,
        token: &str,
        source: Option<(&str, &str)>,
    ) -> Result<Result<String, String>, OrchestratorError> {
        let mut start = self
            .codepipeline
            .start_pipeline_execution()
            .name(pipeline)
            .client_request_token(token);
        if let Some((action, sha)) = source {
            start = start.source_revisions(
                SourceRevisionOverride::builder()
                    .action_name(action)
                    .revision_type(SourceRevisionType::CommitId)
                    .revision_value(sha)
                    .build()
                    .map_err(|err| aws("SourceRevisionOverride", err))?,
            );
        }
        match start.send().await {
            Ok(out) => Ok(Ok(out
                .pipeline_execution_id()
                .unwrap_or_default()
                .to_owned())),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|se| se.is_pipeline_not_found_exception()) =>
            {
                Ok(Err(format!("CodePipeline {pipeline} does not exist")))
            }
            Err(err) if refused_for_good(&err) => Ok(Err(format!(
                "CodePipeline {pipeline} could not be started: {}",
                service_message(&err)
            ))),
            Err(err) => Err(aws("StartPipelineExecution", err)),
        }
    }

    async fn pipeline_run(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> Result<PipelineRun, OrchestratorError> {
        let out = match self
            .codepipeline
            .get_pipeline_execution()
            .pipeline_name(pipeline)
            .pipeline_execution_id(execution_id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if refused_for_good(&err) => {
                return Ok(PipelineRun::Refused(service_message(&err)));
            }
            Err(err) => return Err(aws("GetPipelineExecution", err)),
        };
        let status = out
            .pipeline_execution()
            .and_then(|p| p.status())
            .cloned()
            .unwrap_or(PipelineExecutionStatus::InProgress);
        Ok(pipeline_run(&status))
    }

    async fn stop_pipeline(
        &self,
        pipeline: &str,
        execution_id: &str,
        abandon: bool,
        reason: &str,
    ) -> Result<(), OrchestratorError> {
        let stopped = self
            .codepipeline
            .stop_pipeline_execution()
            .pipeline_name(pipeline)
            .pipeline_execution_id(execution_id)
            .abandon(abandon)
            .reason(reason)
            .send()
            .await;
        match stopped {
            Ok(_) => Ok(()),
            // Ended already, or a stop under way (a repeat): nothing to do.
            Err(err)
                if err.as_service_error().is_some_and(|se| {
                    se.is_pipeline_execution_not_stoppable_exception()
                        || se.is_duplicated_stop_request_exception()
                }) =>
            {
                Ok(())
            }
            Err(err) if refused_for_good(&err) => {
                tracing::error!(pipeline, execution_id, error = %service_message(&err), "the CodePipeline execution could not be stopped");
                Ok(())
            }
            Err(err) => Err(aws("StopPipelineExecution", err)),
        }
    }

    async fn send_timer(
        &self,
        timer: &PipelineTimer,
        delay_secs: i32,
    ) -> Result<(), OrchestratorError> {
        let body = serde_json::to_string(timer).expect("timers serialise");
        self.sqs
            .send_message()
            .queue_url(&self.timer_queue_url)
            .message_body(body)
            .delay_seconds(delay_secs)
            .send()
            .await
            .map_err(|err| aws("SendMessage (pipeline timer)", err))?;
        Ok(())
    }

    async fn hand_over(&self, work: &HandedOver) -> Result<(), OrchestratorError> {
        work.send(&self.sqs, &self.timer_queue_url, 0)
            .await
            .map_err(|err| aws("SendMessage (work handed over)", err))
    }
}
