//! What the engine and fleet benches share: the template's stack without its
//! functions (the engine runs in the bench itself), an engine whose SDK calls
//! are recorded, and a role for the functions a bench creates.

use anyhow::{Context, Result};
use aws_sdk_sqs::types::Message;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use sluice::aws::AwsCloud;
use sluice::budget::Budget;
use sluice::clock::SystemClock;
use sluice::domain::deployment::{Deployment, DeploymentSpec};
use sluice::engine::Engine;
use sluice::events::TimerMessage;
use sluice::events::{QueueMessage, queue_message};
use sluice::store::Store;
use sluice_local::launcher::{LocalStack, StackOptions, build_dir};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The template's resources on a local stack of its own under `work`.
pub fn template_stack(root: &Path, work: &Path) -> Result<LocalStack> {
    let mut opts = StackOptions::for_checkout(root, &build_dir(), &work.join("stack"));
    opts.template = Some(root.join("template.yaml"));
    // The benches deploy the function `app`.
    opts.parameters
        .push(("ManagedFunctions".into(), "app".into()));
    let template = sluice_local::template::Template::load(&root.join("template.yaml"))?;
    opts.skip_functions = template
        .resources
        .iter()
        .filter(|(_, r)| r.kind == "AWS::Serverless::Function")
        .map(|(id, _)| id.clone())
        .collect();
    LocalStack::start(&opts)
}

/// A role for the bench's functions (the local stack checks none).
/// Waits, as a script must on Lambda, until `name` is `Active` and its last
/// update has finished.
pub async fn wait_ready(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<()> {
    use aws_sdk_lambda::client::Waiters;
    let limit = Duration::from_secs(60);
    lambda
        .wait_until_function_active_v2()
        .function_name(name)
        .wait(limit)
        .await
        .with_context(|| format!("{name} to be active"))?;
    lambda
        .wait_until_function_updated_v2()
        .function_name(name)
        .wait(limit)
        .await
        .with_context(|| format!("{name}'s update to finish"))?;
    Ok(())
}

pub async fn role(sdk: &aws_config::SdkConfig, name: &str) -> Result<String> {
    Ok(aws_sdk_iam::Client::new(sdk)
        .create_role()
        .role_name(name)
        .assume_role_policy_document("{}")
        .send()
        .await?
        .role
        .context("role")?
        .arn)
}

/// One SDK call: its service and operation, when it finished, how long it took.
#[derive(Debug, Clone)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub finished: Instant,
    pub took: Duration,
}

/// Records every SDK call of the clients it is an interceptor of.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "bench-calls"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_default();
        let finished = Instant::now();
        let took = cfg
            .load::<Started>()
            .map(|s| finished - s.0)
            .unwrap_or_default();
        self.0.lock().expect("calls").push(Call {
            service,
            operation,
            finished,
            took,
        });
        Ok(())
    }
}

impl Calls {
    /// The calls that finished at `start` or later, in order.
    pub fn since(&self, start: Instant) -> Vec<Call> {
        self.0
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.finished >= start)
            .cloned()
            .collect()
    }

    /// How many calls of each service's operation (`"DynamoDB GetItem"`)
    /// finished from `start` on, and their time in all.
    pub fn totals(&self, start: Instant) -> BTreeMap<String, (usize, Duration)> {
        self.since(start)
            .into_iter()
            .fold(BTreeMap::new(), |mut totals, call| {
                let entry: &mut (usize, Duration) = totals
                    .entry(format!("{} {}", call.service, call.operation))
                    .or_default();
                entry.0 += 1;
                entry.1 += call.took;
                totals
            })
    }
}

/// An engine on the stack's template resources, with every SDK client
/// recorded by `calls`; the Lambda client goes through sluice-local.
pub fn recorded_engine(
    stack: &LocalStack,
    sdk: &aws_config::SdkConfig,
    calls: &Calls,
    hook_timeout: Duration,
) -> Engine {
    Engine::new(
        Store::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk)
                    .interceptor(calls.clone())
                    .build(),
            ),
            stack.var("SLUICE_RESOURCE_STATE_TABLE"),
            chrono::Duration::days(1),
        ),
        AwsCloud {
            lambda: aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(sdk)
                    .endpoint_url(stack.var("AWS_ENDPOINT_URL_LAMBDA"))
                    .interceptor(calls.clone())
                    .build(),
            ),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(sdk)
                    .interceptor(calls.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .interceptor(calls.clone())
                    .build(),
            ),
            timer_queue_url: stack.var("SLUICE_RESOURCE_TIMER_QUEUE").to_owned(),
            // Its writes go through the recorder: they are part of the cost.
            budget: Budget::new(
                aws_sdk_dynamodb::Client::from_conf(
                    aws_sdk_dynamodb::config::Builder::from(sdk)
                        .interceptor(calls.clone())
                        .build(),
                ),
                stack.var("SLUICE_RESOURCE_STATE_TABLE").to_owned(),
                sluice::budget::DEFAULT_PER_SECOND,
                sluice::budget::LONGEST_WAIT,
            ),
            reserved: Default::default(),
        },
        SystemClock,
        hook_timeout,
    )
}

/// Runs a deployment to its end, playing the shifter's timer handler: its
/// timers taken from the queue as the shifter takes them, others dropped.
/// Returns it, and the time the engine spent on it.
pub async fn run_with_timers(
    engine: &Engine,
    id: &str,
    spec: DeploymentSpec,
    within: Duration,
) -> Result<(Deployment, Duration)> {
    let started = Instant::now();
    let mut d = engine.start(id, spec).await?;
    let mut busy = started.elapsed();
    let deadline = started + within;
    while !d.phase.is_terminal() {
        anyhow::ensure!(Instant::now() < deadline, "{id} is still {:?}", d.phase);
        let received = engine
            .cloud()
            .sqs
            .receive_message()
            .queue_url(&engine.cloud().timer_queue_url)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in received.messages() {
            let message = queued(m.body().unwrap_or_default())?;
            if queued_id(&message) == id {
                let since = Instant::now();
                d = engine.run_queued(&message).await?;
                busy += since.elapsed();
            }
            delete_timer(engine, m).await?;
        }
    }
    Ok((d, busy))
}

/// A message of the shifter's queue, read as the shifter reads it.
pub fn queued(body: &str) -> Result<QueueMessage<TimerMessage>> {
    queue_message(body, "a timer message").map_err(anyhow::Error::msg)
}

/// The deployment a message of the shifter's queue moves.
pub fn queued_id(message: &QueueMessage<TimerMessage>) -> &str {
    match message {
        QueueMessage::Timer(timer) => &timer.deployment_id,
        QueueMessage::HandedOver(work) => work.id(),
    }
}

/// Deletes timer messages the shifter has handled, in one request, as
/// its poller does.
pub async fn delete_timers(engine: &Engine, messages: &[&Message]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    engine
        .cloud()
        .sqs
        .delete_message_batch()
        .queue_url(&engine.cloud().timer_queue_url)
        .set_entries(Some(entries))
        .send()
        .await?;
    Ok(())
}

/// Deletes one timer message the shifter has handled.
pub async fn delete_timer(engine: &Engine, message: &Message) -> Result<()> {
    delete_timers(engine, &[message]).await
}
