//! The outside world of pipeline actions through the AWS SDK: Lambda for
//! invoke actions, S3 for artifacts, CodePipeline, the orchestrator's queue.

use super::cloud::AwsCloud;
use super::config::{refused_for_good, send_to_queue, service_message};
use super::invoke::invoke;
use crate::events::{HandedOver, PipelineTimer};
use crate::ports::{Actions, Invocation, OrchestratorError, PipelineRun, aws};
use aws_sdk_codepipeline::types::{
    PipelineExecutionStatus, SourceRevisionOverride, SourceRevisionType,
};

/// Pipeline actions through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsActions {
    pub lambda: aws_sdk_lambda::Client,
    pub s3: aws_sdk_s3::Client,
    pub codepipeline: aws_sdk_codepipeline::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub timer_queue_url: String,
    /// The reporter's queue, if the stack has one.
    pub report_queue_url: Option<String>,
    /// For presigned URLs (CloudFormation's answers).
    pub https: reqwest::Client,
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
    pub fn new(cloud: &AwsCloud, config: &aws_config::SdkConfig, timer_queue_url: String) -> Self {
        AwsActions {
            lambda: cloud.lambda.clone(),
            s3: aws_sdk_s3::Client::new(config),
            codepipeline: aws_sdk_codepipeline::Client::new(config),
            sqs: cloud.sqs.clone(),
            timer_queue_url,
            report_queue_url: None,
            https: super::config::lambda_https_client(),
        }
    }
}

/// What a CodePipeline execution's status means for the action.
fn pipeline_run(status: &PipelineExecutionStatus) -> PipelineRun {
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
                    .map_err(|err| aws::<OrchestratorError>("SourceRevisionOverride", err))?,
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
        send_to_queue(&self.sqs, &self.timer_queue_url, timer, delay_secs)
            .await
            .map_err(|err| aws("SendMessage (pipeline timer)", err))
    }

    async fn hand_over(&self, work: &HandedOver) -> Result<(), OrchestratorError> {
        send_to_queue(&self.sqs, &self.timer_queue_url, work, 0)
            .await
            .map_err(|err| aws("SendMessage (work handed over)", err))
    }

    async fn report(&self, report: &crate::notices::Report) -> Result<(), OrchestratorError> {
        let Some(queue) = &self.report_queue_url else {
            return Ok(());
        };
        send_to_queue(&self.sqs, queue, report, 0)
            .await
            .map_err(|err| aws("SendMessage (report)", err))
    }

    async fn answer_cloudformation(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(), OrchestratorError> {
        let patience = crate::custom_resource::ORCHESTRATOR_PATIENCE;
        crate::custom_resource::put_answer(&self.https, url, body, patience)
            .await
            .map_err(OrchestratorError::Aws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codepipeline_statuses_end_the_action_or_keep_it_running() {
        use aws_sdk_codepipeline::types::PipelineExecutionStatus;
        assert_eq!(
            pipeline_run(&PipelineExecutionStatus::Succeeded),
            PipelineRun::Succeeded
        );
        for ended in ["Failed", "Stopped", "Superseded", "Cancelled"] {
            assert_eq!(
                pipeline_run(&PipelineExecutionStatus::from(ended)),
                PipelineRun::Ended(ended.to_owned())
            );
        }
        for running in ["InProgress", "Stopping"] {
            assert_eq!(
                pipeline_run(&PipelineExecutionStatus::from(running)),
                PipelineRun::Running
            );
        }
    }
}
