//! Sends what the stream tells (`notices`): notices to the SNS topic and
//! the EventBridge bus, commit statuses to GitHub. The reporter function
//! is a thin `main` over this; it reads the queue the orchestrator fills.
//!
//! Reporting never fails a rollout: it runs after the fact, on its own
//! queue. A notice SNS or EventBridge refuses is delivered again (and ends
//! in the dead-letter queue, which alarms). A commit status GitHub cannot
//! take now (5xx, rate limits, no answer) is tried again later, for about
//! two hours (`STATUS_ATTEMPTS`); one it refuses (a wrong token, no access,
//! a refused status) is given up at once. Either way the execution's
//! timeline says so, once.

use crate::batch::{Deadline, Item, run_items, sqs_response};
use crate::domain::clip;
use crate::domain::execution::ExecutionEvent;
use crate::notices::{
    Notice, Report, StatusLine, StatusReport, StatusSubject, deployment_status, github_repository,
    stage_status, status_context,
};
use crate::orchestrator::deployment_origin;
use crate::ports::{AwsFailure, Deployments, Executions, StoreError, aws};
use crate::settings::{Reporting, Settings};
use crate::store::Store;
use aws_lambda_events::sqs::SqsEvent;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How many times a commit status is tried before it is given up: with
/// `retry_delay`, about two hours, longer than most GitHub incidents and
/// than its primary rate limit's hour.
pub const STATUS_ATTEMPTS: u32 = 12;

/// The longest delay SQS gives a message.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// How long before the next try of a status GitHub could not take, after
/// `attempts_made` tries: at least what GitHub asked for (`asked`), at
/// most SQS's longest delay.
fn retry_delay(attempts_made: u32, asked: Option<Duration>) -> Duration {
    let scheduled = Duration::from_secs(match attempts_made {
        0 | 1 => 10,
        2 => 30,
        3 => 90,
        4 => 270,
        _ => 900,
    });
    asked.map_or(scheduled, |a| a.max(scheduled)).min(MAX_DELAY)
}

/// How long GitHub may take to answer one post: a stuck connection must
/// not hold the item past its time.
const GITHUB_TIMEOUT: Duration = Duration::from_secs(10);

/// How many posts one report makes while the state it shows keeps moving,
/// before it is handed on (`StatusReport` with no line, a few seconds on).
const POSTS_AT_ONCE: usize = 5;

/// What one item may take in all before it is handed on: its posts, the
/// reads around them and a message (the function's timeout is 120 s).
const ITEM_LIMIT: Duration = Duration::from_secs(75);

/// How long a token read from Secrets Manager is used before it is read
/// again: a token put in the secret is taken up within this.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// The time an item of a batch is given: `ITEM_LIMIT` and the answer's.
const ITEM_TIME: Duration = Duration::from_secs(80);

/// What the secret holds until a token is put in it (template.yaml).
const NO_TOKEN: &str = "unset";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("unrecognised event: {0}")]
    Event(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Aws(String),
}

impl AwsFailure for ReportError {
    fn aws_failure(text: String) -> Self {
        ReportError::Aws(text)
    }
}

/// What became of a commit status sent to GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Done,
    /// It may be taken later (GitHub down or limiting, no answer); `after`
    /// is how long GitHub asked to wait, if it said.
    Later {
        why: String,
        after: Option<Duration>,
    },
    /// GitHub refused the token (401): it may have been replaced since.
    BadToken(String),
    /// It will not be taken as it is (access, the status itself).
    Refused(String),
}

impl Posted {
    fn later(why: impl Into<String>) -> Self {
        Posted::Later {
            why: why.into(),
            after: None,
        }
    }
}

/// GitHub's REST API for commit statuses
/// (<https://docs.github.com/en/rest/commits/statuses#create-a-commit-status>).
#[derive(Clone, Debug)]
pub struct GitHubApi {
    /// Built at the first post: loading the system's trust store takes
    /// milliseconds of every cold start, and most batches post no status.
    http: Arc<OnceLock<reqwest::Client>>,
    make_http: fn() -> reqwest::Client,
    /// `https://api.github.com`, or a GitHub Enterprise Server's `/api/v3`.
    pub url: String,
}

impl GitHubApi {
    /// GitHub at `url`, through `http`.
    pub fn new(url: String, http: reqwest::Client) -> Self {
        GitHubApi {
            http: Arc::new(OnceLock::from(http)),
            make_http: || unreachable!("the client is given"),
            url,
        }
    }

    /// GitHub at `url`, through a client `make_http` builds when first needed.
    pub fn lazy(url: String, make_http: fn() -> reqwest::Client) -> Self {
        GitHubApi {
            http: Arc::default(),
            make_http,
            url,
        }
    }

    /// Posts `status` under `context` on commit `sha` of `owner/repo`.
    pub async fn post_status(
        &self,
        token: &str,
        (owner, repo): (&str, &str),
        sha: &str,
        context: &str,
        status: &StatusLine,
        target_url: Option<&str>,
    ) -> Posted {
        let mut body = serde_json::json!({
            "state": status.state,
            "description": status.description,
            "context": context,
        });
        if let Some(url) = target_url {
            body["target_url"] = url.into();
        }
        let sent = self
            .http
            .get_or_init(self.make_http)
            .post(format!("{}/repos/{owner}/{repo}/statuses/{sha}", self.url))
            .timeout(GITHUB_TIMEOUT)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            // GitHub refuses a request without one.
            .header("user-agent", "sluice")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => return Posted::later(format!("GitHub did not answer: {e}")),
        };
        let code = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // A rate limit is a 429, or a 403 that says so: by its headers or
        // its message. GitHub asks to wait `retry-after` seconds, or until
        // `x-ratelimit-reset`, or else a minute
        // (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>).
        let seconds = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
        let asked = seconds("retry-after")
            .or_else(|| {
                (header("x-ratelimit-remaining").as_deref() == Some("0"))
                    .then(|| {
                        seconds("x-ratelimit-reset").map(|at| at - chrono::Utc::now().timestamp())
                    })
                    .flatten()
            })
            .map(|s| Duration::from_secs(s.max(1) as u64));
        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
        let text = answer.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| clip(&text, 200).to_owned());
        let limited = code == 429
            || (code == 403
                && (asked.is_some() || exhausted || message.to_lowercase().contains("rate limit")));
        let repository = format!("{owner}/{repo}");
        match code {
            200..=299 => Posted::Done,
            _ if limited => Posted::Later {
                why: format!("GitHub's rate limit ({code}): {message}"),
                after: Some(asked.unwrap_or(Duration::from_secs(60))),
            },
            401 => Posted::BadToken(format!(
                "GitHub refused the token (401 {message}): put a valid one in the token secret"
            )),
            403 => Posted::Refused(format!(
                "the token may not post statuses to {repository} (403 {message}): it needs \
                 commit statuses: write"
            )),
            404 => Posted::Refused(format!(
                "GitHub knows no {repository} that the token can see (404 {message})"
            )),
            422 => Posted::Refused(format!("GitHub refused the status (422 {message})")),
            500.. => Posted::later(format!("GitHub answered {code}: {message}")),
            _ => Posted::Refused(format!("GitHub answered {code}: {message}")),
        }
    }
}

struct CachedToken {
    token: String,
    read_at: Instant,
}

/// Sends reports: the reporter function's work.
pub struct Reporter {
    pub store: Store,
    pub sns: aws_sdk_sns::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub github: GitHubApi,
    pub settings: Reporting,
    /// The stack's name, in every notice (one account may run several).
    pub stack_name: String,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl Reporter {
    pub fn new(
        store: Store,
        config: &aws_config::SdkConfig,
        github: GitHubApi,
        settings: Reporting,
        stack_name: String,
    ) -> Self {
        Reporter {
            store,
            sns: aws_sdk_sns::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            github,
            settings,
            stack_name,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The reporter inside Lambda: GitHub is reached with the system's
    /// trust store (api.github.com is not signed by Amazon's CAs; a GitHub
    /// Enterprise Server's CA is added with `SSL_CERT_FILE`).
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Reporter::new(
            Store::from_settings(config, settings),
            config,
            GitHubApi::lazy(settings.reporting.github_api_url.clone(), || {
                crate::aws::https_client(crate::aws::Trust::System)
            }),
            settings.reporting.clone(),
            settings.stack_name.clone(),
        )
    }

    /// Handles a batch of the reporter's queue; answers with the messages
    /// to deliver again.
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<serde_json::Value, ReportError> {
        let event: SqsEvent = serde_json::from_value(payload.clone())
            .map_err(|e| ReportError::Event(format!("not an SQS batch: {e}")))?;
        let items = event
            .records
            .into_iter()
            .map(|m| {
                let id = m.message_id.unwrap_or_default();
                let report = serde_json::from_str::<Report>(m.body.as_deref().unwrap_or_default())
                    .map_err(|e| format!("not a report: {e}"));
                Item {
                    key: report
                        .as_ref()
                        .map_or_else(|_| id.clone(), |r| r.subject_id().to_owned()),
                    id,
                    value: report,
                }
            })
            .collect();
        let deadline = deadline.map(|at| Deadline {
            at,
            per_item: ITEM_TIME,
        });
        let again = run_items(items, deadline, |report| async move {
            match report {
                Ok(Report::Notice(notice)) => self.notify(&notice).await,
                Ok(Report::CommitStatus(status)) => self.commit_status(&status).await,
                Err(why) => Err(ReportError::Event(why)),
            }
        })
        .await;
        Ok(sqs_response(again))
    }

    /// Publishes a notice to the topic (if the stack has one) and the bus.
    pub async fn notify(&self, notice: &Notice) -> Result<(), ReportError> {
        let mut detail = serde_json::to_value(notice).expect("notices serialise");
        detail["stack"] = self.stack_name.clone().into();
        if let Some(topic) = &self.settings.topic_arn {
            let attribute = |value: &str| {
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .expect("a string attribute")
            };
            self.sns
                .publish()
                .topic_arn(topic)
                .subject(notice.subject())
                .message(format!("{}\n\n{detail}", notice.text()))
                // What a subscription's filter policy can match.
                .message_attributes("event", attribute(notice.event()))
                .message_attributes("stack", attribute(&self.stack_name))
                .send()
                .await
                .map_err(|e| aws::<ReportError>("Publish", e))?;
        }
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.settings.event_bus)
            .source("sluice")
            .detail_type(notice.detail_type())
            .detail(detail.to_string())
            .build();
        let put = self
            .events
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| aws::<ReportError>("PutEvents", e))?;
        // PutEvents answers 200 with the entries it failed.
        if put.failed_entry_count() > 0 {
            let why = put
                .entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ReportError::Aws(format!("PutEvents failed: {why}")));
        }
        Ok(())
    }

    /// The token in the secret; `Ok(None)` while the secret holds none.
    async fn token(&self, secret: &str) -> Result<Option<String>, Posted> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.read_at.elapsed() < TOKEN_TTL) {
            return Ok(Some(c.token.clone()));
        }
        let read = self
            .secrets
            .get_secret_value()
            .secret_id(secret)
            .send()
            .await;
        let value = match read {
            Ok(out) => out.secret_string().unwrap_or_default().trim().to_owned(),
            Err(e) => {
                let denied_or_gone = e.as_service_error().is_some_and(|se| {
                    se.is_resource_not_found_exception()
                        || se.meta().code() == Some("AccessDeniedException")
                });
                let why = format!(
                    "the GitHub token secret {secret} cannot be read: {}",
                    crate::aws::service_message(&e)
                );
                return Err(if denied_or_gone {
                    Posted::Refused(why)
                } else {
                    Posted::later(why)
                });
            }
        };
        // No token is not kept: one put in the secret is used at once.
        let token = (!value.is_empty() && value != NO_TOKEN).then_some(value);
        *cached = token.clone().map(|token| CachedToken {
            token,
            read_at: Instant::now(),
        });
        Ok(token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// The status a report names, as its execution and deployment are now:
    /// `None` if there is none to post (not from GitHub, not reached, or a
    /// deploy action's attempt that a later one has replaced: the context
    /// is the later one's).
    async fn current_status(
        &self,
        report: &StatusReport,
    ) -> Result<Option<(crate::domain::execution::Execution, String, StatusLine)>, ReportError>
    {
        let e = self
            .store
            .load_execution(&report.execution)
            .await?
            .execution;
        if github_repository(&e.push).is_none() {
            return Ok(None);
        }
        let found = match &report.subject {
            StatusSubject::Stage(stage) => e.definition.stages.get(*stage).and_then(|s| {
                stage_status(&e, *stage)
                    .map(|line| (status_context(&e.pipeline, &s.name, None), line))
            }),
            StatusSubject::Deployment(id) => {
                let action = deployment_origin(id).and_then(|(_, at)| {
                    let stage = e.definition.stages.get(at.stage)?;
                    let action = stage.actions.get(at.action)?;
                    is_current_attempt(&e, id, &action.name, at)
                        .then(|| status_context(&e.pipeline, &stage.name, Some(&action.name)))
                });
                match action {
                    Some(context) => {
                        let d = self.store.load(id).await?.deployment;
                        Some((context, deployment_status(&d)))
                    }
                    None => None,
                }
            }
        };
        Ok(found.map(|(context, line)| (e, context, line)))
    }

    /// Posts the status a report carries, then the status as it is now
    /// while that differs from the last posted: however late, repeated or
    /// out of order reports are read, and however many reporters post one
    /// context at once, each one's last post is the newest state it saw
    /// after posting. A state still moving after `POSTS_AT_ONCE` posts is
    /// handed on, to be posted as it is then.
    pub async fn commit_status(&self, report: &StatusReport) -> Result<(), ReportError> {
        if self.settings.github_token_secret.is_none() {
            return Ok(());
        }
        match tokio::time::timeout(ITEM_LIMIT, self.post_until_settled(report)).await {
            Ok(done) => done,
            Err(_) => {
                let why = format!("posting took over {} s", ITEM_LIMIT.as_secs());
                self.later(report, &report.execution, why, None).await
            }
        }
    }

    async fn post_until_settled(&self, report: &StatusReport) -> Result<(), ReportError> {
        let secret = self
            .settings
            .github_token_secret
            .clone()
            .unwrap_or_default();
        let mut posted: Option<StatusLine> = None;
        let mut carried = report.line.clone();
        // A token GitHub refused: read again once, as it may have been replaced.
        let mut refused_token: Option<String> = None;
        for _ in 0..POSTS_AT_ONCE {
            let current = match self.current_status(report).await {
                Err(ReportError::Store(StoreError::NotFound(_))) => return Ok(()),
                other => other?,
            };
            let Some((execution, context, now)) = current else {
                return Ok(());
            };
            let line = carried.take().unwrap_or(now);
            if posted.as_ref() == Some(&line) {
                return Ok(());
            }
            let token = match self.token(&secret).await {
                Ok(Some(token)) => token,
                Ok(None) => {
                    let why = format!(
                        "secret {secret} holds no GitHub token (put one there to post them)"
                    );
                    return self.not_posted(&execution.id, &why).await;
                }
                Err(Posted::Later { why, after }) => {
                    return self.later(report, &execution.id, why, after).await;
                }
                Err(other) => return self.not_posted(&execution.id, &given_up(other)).await,
            };
            let repository = github_repository(&execution.push).expect("checked");
            let outcome = self
                .github
                .post_status(
                    &token,
                    repository,
                    &execution.push.sha,
                    &context,
                    &line,
                    self.settings.dashboard_url.as_deref(),
                )
                .await;
            match outcome {
                Posted::Done => {
                    tracing::info!(
                        execution_id = %execution.id,
                        context = %context,
                        state = ?line.state,
                        description = %line.description,
                        "commit status posted"
                    );
                    posted = Some(line);
                }
                Posted::BadToken(why) => {
                    self.forget_token().await;
                    if refused_token.as_ref() == Some(&token) {
                        return self.not_posted(&execution.id, &why).await;
                    }
                    refused_token = Some(token);
                    carried = Some(line);
                }
                Posted::Later { why, after } => {
                    return self.later(report, &execution.id, why, after).await;
                }
                Posted::Refused(why) => return self.not_posted(&execution.id, &why).await,
            }
        }
        // Still moving: posted again as it is in a few seconds.
        self.send_again(
            StatusReport {
                line: None,
                ..report.clone()
            },
            Duration::from_secs(5),
        )
        .await
    }

    /// Tries a status again later, or gives it up after `STATUS_ATTEMPTS`.
    async fn later(
        &self,
        report: &StatusReport,
        execution: &str,
        why: String,
        asked: Option<Duration>,
    ) -> Result<(), ReportError> {
        let attempts = report.attempt + 1;
        if attempts >= STATUS_ATTEMPTS || self.settings.queue_url.is_none() {
            let why = format!("given up after {attempts} attempts: {why}");
            return self.not_posted(execution, &why).await;
        }
        tracing::warn!(execution_id = %execution, attempt = attempts, reason = %why, "commit status to be tried again");
        // Tried again as the state will be then.
        let again = StatusReport {
            line: None,
            attempt: attempts,
            ..report.clone()
        };
        self.send_again(again, retry_delay(attempts, asked)).await
    }

    async fn send_again(&self, report: StatusReport, after: Duration) -> Result<(), ReportError> {
        let Some(queue) = &self.settings.queue_url else {
            return Ok(());
        };
        let delay = after.min(MAX_DELAY).as_secs() as i32;
        crate::aws::send_to_queue(&self.sqs, queue, &Report::CommitStatus(report), delay)
            .await
            .map_err(|e| aws("SendMessage (report)", e))
    }

    /// Says in the execution's timeline, once, that statuses are not posted.
    async fn not_posted(&self, execution: &str, why: &str) -> Result<(), ReportError> {
        tracing::warn!(execution_id = %execution, reason = %why, "commit status not posted");
        let event = ExecutionEvent {
            at: chrono::Utc::now(),
            message: format!("commit status not posted to GitHub: {why}"),
        };
        Ok(self.store.note_execution(execution, &event).await?)
    }
}

/// Why a status is given up, from what refused it.
fn given_up(posted: Posted) -> String {
    match posted {
        Posted::Refused(why) | Posted::BadToken(why) | Posted::Later { why, .. } => why,
        Posted::Done => "posted".to_owned(),
    }
}

/// Whether deployment `id` is its deploy action's current attempt: a stage
/// retried starts another, whose status the context shows from then on.
fn is_current_attempt(
    e: &crate::domain::execution::Execution,
    id: &str,
    action: &str,
    at: crate::domain::execution::ActionRef,
) -> bool {
    if let Some(done) = e.outputs.get(action).and_then(|o| o.get("deployment")) {
        return done == id;
    }
    e.stage != at.stage
        || e.actions
            .get(at.action)
            .is_none_or(|run| run.attempt == at.attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deploy_actions_current_attempt_has_its_status_posted() {
        use crate::domain::execution::{ActionRef, ActionRun, ActionState, Execution};
        use crate::domain::pipeline::{GitRef, PipelineDefinition, Push};
        let definition = PipelineDefinition::parse(
            "name: p\nsource: {repository: acme/app}\nstages:\n  - name: live\n    actions: [{name: deploy, kind: deploy, config: {function: app, alias: live, version: '2', config: AllAtOnce}}]\n",
        )
        .unwrap();
        let push = Push {
            repository: "acme/app".into(),
            reference: GitRef::Branch("main".into()),
            sha: "a1b2c3d4".into(),
            deleted: false,
            forced: false,
            changed_paths: None,
            message: None,
            author: None,
        };
        let (mut e, _) = Execution::create("e", definition, push, chrono::Utc::now());
        let at = |attempt| ActionRef {
            stage: 0,
            action: 0,
            attempt,
        };
        // The stage retried: its action's second attempt runs.
        e.actions = vec![ActionRun {
            name: "deploy".into(),
            run_order: 1,
            state: ActionState::Running {
                since: chrono::Utc::now(),
            },
            attempt: 2,
            run: None,
        }];
        assert!(!is_current_attempt(&e, "e~0.0.1", "deploy", at(1)));
        assert!(is_current_attempt(&e, "e~0.0.2", "deploy", at(2)));
        // Done: the output names the attempt that counts.
        e.outputs.insert(
            "deploy".into(),
            [("deployment".to_owned(), "e~0.0.2".to_owned())].into(),
        );
        assert!(!is_current_attempt(&e, "e~0.0.1", "deploy", at(1)));
        assert!(is_current_attempt(&e, "e~0.0.2", "deploy", at(2)));
    }

    #[test]
    fn statuses_are_tried_again_later_and_later_for_about_two_hours() {
        let delays: Vec<u64> = (1..STATUS_ATTEMPTS)
            .map(|n| retry_delay(n, None).as_secs())
            .collect();
        assert_eq!(delays[..5], [10, 30, 90, 270, 900]);
        let total: u64 = delays.iter().sum();
        assert!((6000..=8000).contains(&total), "{total} s");
        // GitHub's ask is kept, within what SQS allows.
        assert_eq!(retry_delay(1, Some(Duration::from_secs(60))).as_secs(), 60);
        assert_eq!(retry_delay(1, Some(Duration::from_secs(3000))), MAX_DELAY);
    }
}
