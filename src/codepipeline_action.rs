//! The `codepipeline-action` function: lets a stage of an existing AWS
//! CodePipeline run a Sluice deployment, as a Lambda invoke action.
//!
//! The first invocation of a job reads the input artifacts (with the job's
//! artifact credentials), copies them to Sluice's artifact bucket, checks
//! the request against AWS as the API checks one (each member's function,
//! alias and version, each hook: a job that cannot deploy fails at once,
//! every problem named, no deployment written), creates the deployment (the
//! shifter runs it) and answers `PutJobSuccessResult` with a continuation
//! token. A check or a start that meets a passing failure (throttled, out
//! of budget, no answer) answers the same way with why, and the next
//! invocation starts it again: the job waits, never fails or hangs on it.
//! CodePipeline invokes again with that token until the
//! deployment ends: promoted is success with output variables, anything else
//! is `PutJobFailureResult` with the reason. The event holds credentials: it is
//! never logged.

use crate::aws::service_message;
use crate::domain::analysis::AnalysisSettings;
use crate::domain::config::DeploymentConfig;
use crate::domain::deployment::{
    DeploymentSpec, HookInvocation, MemberSpec, OnBusy, OnManualChange, Phase, RollbackPolicy,
    VersionSource,
};
use crate::domain::smoke::{S3Uri, SmokeTest};
use crate::operations::{OperationError, Operations};
use crate::ports::Deployments;
use crate::ports::{AwsFailure, aws};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use aws_sdk_codepipeline::types::{CurrentRevision, ExecutionDetails, FailureDetails, FailureType};
use serde::Deserialize;

/// CodePipeline's limit on a failure message.
const MAX_FAILURE_MESSAGE: usize = 5000;
/// CodePipeline's limit on an execution summary.
const MAX_SUMMARY: usize = 2048;

/// The deployment a job runs (and its continuation token).
fn deployment_id(job_id: &str) -> String {
    format!("codepipeline-{job_id}")
}

/// The action's `UserParameters`, a JSON object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParameters {
    pub function: String,
    pub alias: String,
    #[serde(default = "UserParameters::all_at_once")]
    pub config: DeploymentConfig,
    #[serde(default)]
    pub pre_traffic_hook: Option<String>,
    #[serde(default)]
    pub post_traffic_hook: Option<String>,
    #[serde(default)]
    pub alarms: Vec<String>,
    #[serde(default)]
    pub on_busy: OnBusy,
    #[serde(default)]
    pub on_manual_change: OnManualChange,
    #[serde(default)]
    pub smoke_tests: Vec<SmokeTest>,
    #[serde(default)]
    pub smoke_tests_from: Option<S3Uri>,
    #[serde(default)]
    pub analysis: Option<AnalysisSettings>,
    #[serde(default)]
    pub hook_invocation: HookInvocation,
    #[serde(default)]
    pub hook_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub rollback: RollbackPolicy,
    #[serde(default)]
    pub frozen_for_seconds: Option<u64>,
    /// More functions moved in lockstep with `function` (a release group).
    #[serde(default)]
    pub group: Vec<GroupMember>,
}

/// One more function of the action's release group: a version already
/// published, or the zip of another of the action's input artifacts (by
/// its name), published as the first one is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    pub function: String,
    pub alias: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub input_artifact: Option<String>,
}

impl UserParameters {
    fn all_at_once() -> DeploymentConfig {
        "AllAtOnce".parse().expect("a known config")
    }

    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        let text =
            text.ok_or("UserParameters are missing: give a JSON object with function and alias")?;
        serde_json::from_str(text).map_err(|e| format!("UserParameters: {e}"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// CodePipeline or S3 could not be reached: the invocation fails and is retried.
    #[error("{0}")]
    Aws(String),
    #[error("not a CodePipeline job event: {0}")]
    Event(String),
}

impl AwsFailure for ActionError {
    fn aws_failure(text: String) -> Self {
        ActionError::Aws(text)
    }
}

/// What the function answered CodePipeline, for its caller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAnswer {
    /// Still running: CodePipeline invokes again with this token.
    Continue(String),
    /// Not started yet, for a passing reason: the next invocation (with
    /// `deployment` as its token) starts it.
    StartLater {
        deployment: String,
        reason: String,
    },
    Succeeded,
    Failed(String),
}

pub struct CodePipelineAction {
    /// Checks and starts a job's deployment as the API does.
    pub operations: Operations,
    pub codepipeline: aws_sdk_codepipeline::Client,
    /// Sluice's own S3 access, for the copy of the input artifact.
    pub s3: aws_sdk_s3::Client,
    pub artifact_bucket: String,
    /// For the S3 client made with each job's artifact credentials.
    pub config: aws_config::SdkConfig,
}

impl CodePipelineAction {
    /// The action over DynamoDB, CodePipeline and S3.
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        CodePipelineAction {
            operations: Operations::from_settings(config, settings),
            codepipeline: aws_sdk_codepipeline::Client::new(config),
            s3: aws_sdk_s3::Client::new(config),
            artifact_bucket: settings.artifact_bucket.clone(),
            config: config.clone(),
        }
    }

    fn store(&self) -> &Store {
        self.operations.store()
    }

    /// Handles one invocation by CodePipeline.
    pub async fn handle(&self, payload: &serde_json::Value) -> Result<JobAnswer, ActionError> {
        // Parsed without echoing the event back: it holds credentials.
        let event: CodePipelineJobEvent = serde_json::from_value(payload.clone())
            .map_err(|e| ActionError::Event(format!("line {} column {}", e.line(), e.column())))?;
        let job = &event.code_pipeline_job;
        let job_id = job
            .id
            .clone()
            .ok_or_else(|| ActionError::Event("the job has no id".into()))?;
        let checked = match job.data.continuation_token.as_deref() {
            Some(token) => self.check(token).await?,
            None => None,
        };
        let answer = match checked {
            Some(answer) => answer,
            // A first call, or one after a start that met a passing failure
            // (its token names a deployment not written yet): started now.
            None => self.start(&job_id, &event).await?,
        };
        self.answer(&job_id, &answer).await?;
        tracing::info!(job_id, answer = ?answer, "job answered");
        Ok(answer)
    }

    async fn start(
        &self,
        job_id: &str,
        event: &CodePipelineJobEvent,
    ) -> Result<JobAnswer, ActionError> {
        let data = &event.code_pipeline_job.data;
        let params = match UserParameters::parse(
            data.action_configuration
                .configuration
                .user_parameters
                .as_deref(),
        ) {
            Ok(p) => p,
            Err(reason) => return Ok(JobAnswer::Failed(reason)),
        };
        let Some(input) = data.input_artifacts.first() else {
            return Ok(JobAnswer::Failed(
                "the action needs one input artifact: the function's zip".into(),
            ));
        };
        let location = &input.location.s3_location;
        let (Some(bucket), Some(key)) = (&location.bucket_name, &location.object_key) else {
            return Ok(JobAnswer::Failed("the input artifact is not in S3".into()));
        };
        let deployment_id = deployment_id(job_id);
        let copy_key = format!("codepipeline/{job_id}.zip");
        // Each member's source; its zip, if any, copied with the first one's.
        let mut group = Vec::new();
        let mut copies = vec![(bucket.clone(), key.clone(), copy_key.clone())];
        let mut problems = Vec::new();
        for (i, member) in params.group.iter().enumerate() {
            let location = |name: &str| {
                let found = data
                    .input_artifacts
                    .iter()
                    .find(|a| a.name.as_deref() == Some(name))?;
                let l = &found.location.s3_location;
                Some((l.bucket_name.clone()?, l.object_key.clone()?))
            };
            // A member refused here stays in place (never deployed: the job
            // fails), so the spec's problems name the others by their index.
            let refused = VersionSource::Version("1".into());
            let source = match (&member.version, &member.input_artifact) {
                (Some(version), None) => VersionSource::Version(version.clone()),
                (None, Some(name)) => match location(name) {
                    Some((bucket, key)) => {
                        let member_key = format!("codepipeline/{job_id}-{}.zip", i + 1);
                        copies.push((bucket, key, member_key.clone()));
                        VersionSource::Artifact {
                            bucket: self.artifact_bucket.clone(),
                            key: member_key,
                            object_version: None,
                        }
                    }
                    None => {
                        problems.push(format!(
                            "group[{i}].input_artifact: {name:?} is not an input artifact of the action in S3"
                        ));
                        refused
                    }
                },
                _ => {
                    problems.push(format!(
                        "group[{i}]: give exactly one of version or input_artifact"
                    ));
                    refused
                }
            };
            group.push(MemberSpec {
                function: member.function.clone(),
                alias: member.alias.clone(),
                source,
            });
        }
        let spec = DeploymentSpec {
            function: params.function,
            alias: params.alias,
            source: VersionSource::Artifact {
                bucket: self.artifact_bucket.clone(),
                key: copy_key.clone(),
                object_version: None,
            },
            config: params.config,
            pre_traffic_hook: params.pre_traffic_hook,
            post_traffic_hook: params.post_traffic_hook,
            alarms: params.alarms,
            on_busy: params.on_busy,
            on_manual_change: params.on_manual_change,
            smoke_tests: params.smoke_tests,
            smoke_tests_from: params.smoke_tests_from,
            analysis: params.analysis,
            hook_invocation: params.hook_invocation,
            hook_timeout_seconds: params.hook_timeout_seconds,
            rollback: params.rollback,
            frozen_for_seconds: params.frozen_for_seconds,
            group,
        };
        problems.extend(spec.problems());
        if !problems.is_empty() {
            return Ok(JobAnswer::Failed(format!(
                "UserParameters: {}",
                problems.join("; ")
            )));
        }
        for (bucket, key, copy_key) in &copies {
            if let Err(reason) = self.copy_artifact(event, bucket, key, copy_key).await {
                return Ok(JobAnswer::Failed(reason));
            }
        }
        // A redelivered job finds its deployment created: it goes on.
        if self.created(&deployment_id).await? {
            return Ok(JobAnswer::Continue(deployment_id));
        }
        // The shifter runs it from the stream.
        match self.operations.start(&deployment_id, spec, None).await {
            Ok(_) | Err(OperationError::Store(StoreError::AlreadyExists(_))) => {
                Ok(JobAnswer::Continue(deployment_id))
            }
            Err(OperationError::Invalid(why) | OperationError::Conflict(why)) => {
                // Refused because a delivery beside this one created it.
                if self.created(&deployment_id).await? {
                    return Ok(JobAnswer::Continue(deployment_id));
                }
                Ok(JobAnswer::Failed(why))
            }
            // Passing (Lambda throttled, the budget spent, no answer):
            // CodePipeline's next invocation tries again.
            Err(e) => {
                tracing::warn!(deployment_id, error = %e, "not started yet");
                Ok(JobAnswer::StartLater {
                    deployment: deployment_id,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Reads the artifact with the job's credentials and keeps a copy Sluice can publish from.
    async fn copy_artifact(
        &self,
        event: &CodePipelineJobEvent,
        bucket: &str,
        key: &str,
        copy_key: &str,
    ) -> Result<(), String> {
        let creds = &event.code_pipeline_job.data.artifact_credentials;
        let (Some(id), Some(secret)) = (&creds.access_key_id, &creds.secret_access_key) else {
            return Err("the job carries no artifact credentials".into());
        };
        let credentials = aws_sdk_s3::config::Credentials::new(
            id,
            secret,
            creds.session_token.clone(),
            None,
            "codepipeline-job",
        );
        let artifacts = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.config)
                .credentials_provider(credentials)
                .build(),
        );
        let object = artifacts
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the input artifact s3://{bucket}/{key} cannot be read: {}",
                    service_message(&e)
                )
            })?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| format!("reading the input artifact: {e}"))?
            .into_bytes();
        // The upload takes as long as the artifact's size needs; the
        // function's own timeout bounds it.
        self.s3
            .put_object()
            .bucket(&self.artifact_bucket)
            .key(copy_key)
            .body(body.into())
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .timeout_config(crate::aws::work_timeouts(None)),
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the artifact cannot be copied to s3://{}/{copy_key}: {}",
                    self.artifact_bucket,
                    service_message(&e)
                )
            })?;
        Ok(())
    }

    /// Whether deployment `id` exists.
    async fn created(&self, id: &str) -> Result<bool, ActionError> {
        match self.store().load(id).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// How deployment `deployment_id` stands for its job; `None` if it
    /// was not written.
    async fn check(&self, deployment_id: &str) -> Result<Option<JobAnswer>, ActionError> {
        let d = match self.store().load(deployment_id).await {
            Ok(stored) => stored.deployment,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(match &d.phase {
            Phase::Promoted => JobAnswer::Succeeded,
            Phase::RolledBack { reason } | Phase::FailedToStart { reason } => {
                JobAnswer::Failed(format!("deployment {deployment_id}: {reason}"))
            }
            _ => JobAnswer::Continue(deployment_id.to_owned()),
        }))
    }

    /// Keeps the job open: CodePipeline invokes again with `deployment_id`
    /// as its continuation token. A summary is at most 2,048 characters
    /// (<https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_ExecutionDetails.html>).
    async fn keep_open(
        &self,
        job_id: &str,
        deployment_id: &str,
        summary: String,
    ) -> Result<(), ActionError> {
        self.codepipeline
            .put_job_success_result()
            .job_id(job_id)
            .continuation_token(deployment_id)
            .execution_details(
                ExecutionDetails::builder()
                    .summary(crate::domain::clip(&summary, MAX_SUMMARY))
                    .external_execution_id(deployment_id)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws::<ActionError>("PutJobSuccessResult", e))?;
        Ok(())
    }

    async fn answer(&self, job_id: &str, answer: &JobAnswer) -> Result<(), ActionError> {
        match answer {
            JobAnswer::Continue(deployment_id) => {
                self.keep_open(
                    job_id,
                    deployment_id,
                    format!("deployment {deployment_id} is running"),
                )
                .await?;
            }
            JobAnswer::StartLater { deployment, reason } => {
                let summary = format!(
                    "deployment {deployment} not started yet, tried again at the next call: {reason}"
                );
                self.keep_open(job_id, deployment, summary).await?;
            }
            JobAnswer::Succeeded => {
                // The token of the last invocation names the deployment.
                let deployment_id = deployment_id(job_id);
                let d = self.store().load(&deployment_id).await?.deployment;
                let version = d.to_version.clone().unwrap_or_default();
                self.codepipeline
                    .put_job_success_result()
                    .job_id(job_id)
                    .current_revision(
                        CurrentRevision::builder()
                            .revision(&version)
                            .change_identifier(&deployment_id)
                            .build()
                            .map_err(|e| aws::<ActionError>("CurrentRevision", e))?,
                    )
                    .execution_details(
                        ExecutionDetails::builder()
                            .summary(format!(
                                "{}:{} serves version {version}",
                                d.spec.function, d.spec.alias
                            ))
                            .external_execution_id(&deployment_id)
                            .build(),
                    )
                    .output_variables("DeploymentId", &deployment_id)
                    .output_variables("FunctionName", &d.spec.function)
                    .output_variables("Alias", &d.spec.alias)
                    .output_variables("Version", version)
                    .send()
                    .await
                    .map_err(|e| aws::<ActionError>("PutJobSuccessResult", e))?;
            }
            JobAnswer::Failed(reason) => {
                let message = crate::domain::clip(reason, MAX_FAILURE_MESSAGE);
                self.codepipeline
                    .put_job_failure_result()
                    .job_id(job_id)
                    .failure_details(
                        FailureDetails::builder()
                            .r#type(FailureType::JobFailed)
                            .message(message)
                            .build()
                            .map_err(|e| aws::<ActionError>("FailureDetails", e))?,
                    )
                    .send()
                    .await
                    .map_err(|e| aws::<ActionError>("PutJobFailureResult", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parameters_say_what_is_wrong() {
        let p = UserParameters::parse(Some(r#"{"function": "greeter", "alias": "live"}"#)).unwrap();
        assert_eq!(p.config.to_string(), "AllAtOnce");
        assert!(UserParameters::parse(None).unwrap_err().contains("missing"));
        assert!(
            UserParameters::parse(Some("greeter"))
                .unwrap_err()
                .starts_with("UserParameters:")
        );
        assert!(
            UserParameters::parse(Some(
                r#"{"function": "f", "alias": "a", "config": "canary:200:5s"}"#
            ))
            .unwrap_err()
            .contains("percent")
        );
        assert!(
            UserParameters::parse(Some(r#"{"function": "f", "alias": "a", "colour": 1}"#))
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
