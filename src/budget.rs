//! The share of the account's Lambda control-plane quota that Sluice's
//! workers, together, keep to.
//!
//! Lambda's control-plane calls (GetAlias, UpdateAlias, PublishVersion,
//! UpdateFunctionCode, ...; not Invoke, GetFunction or GetPolicy) share one
//! quota of 15 requests per second per account and Region, which cannot be
//! raised (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>,
//! "API requests"). CloudFormation, CI and people draw on it too, so Sluice
//! keeps to a budget below it (`ControlPlaneBudget`, 10 a second by default)
//! however many of its workers run at once.
//!
//! The budget is one item of the table, a generic cell rate algorithm
//! (GCRA): it holds the time of the next free slot (`tat`, epoch µs). A call
//! reserves a slot by moving that time on by one interval (1 s / budget) in
//! one conditional `UpdateItem`, then waits until its slot. Slots go in the
//! order they are asked for, so under a short budget the step that fell due
//! first goes first. No call reserves a slot further ahead than
//! `longest_wait`: it is refused with how far ahead the budget is spoken
//! for, and the engine hands the deployment back to its queue until then.
//!
//! Cost: one DynamoDB write (one write unit) a control-plane call, two when
//! the budget has sat idle since this worker last looked; no read, no lock.

use crate::clock::{Clock, SystemClock};
use crate::domain::deployment::Time;
use crate::settings::Settings;
pub use crate::settings::{DEFAULT_PER_SECOND, LAMBDA_CONTROL_PLANE_QUOTA};
use crate::store::keys::Key;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The longest a call waits in its worker for a slot; past that it is
/// refused and its step retried later (a worker must not sleep out a queue).
pub const LONGEST_WAIT: Duration = Duration::from_secs(10);
/// Conditional writes lost to other workers before a call gives up.
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    #[error(
        "the Lambda control-plane budget is spoken for: its next free slot is {} ms away",
        .0.as_millis()
    )]
    Short(Duration),
    #[error("control-plane budget: DynamoDB: {0}")]
    Aws(String),
}

#[derive(Clone, Debug)]
pub struct Budget {
    client: Client,
    table: String,
    interval_us: i64,
    longest_wait_us: i64,
    /// The slot time this worker last saw: which of the two writes to try first.
    last_seen: Arc<AtomicI64>,
}

impl Budget {
    /// `per_second` calls a second at most, for every worker of the table together.
    pub fn new(client: Client, table: String, per_second: u64, longest_wait: Duration) -> Self {
        Budget {
            client,
            table,
            interval_us: 1_000_000 / per_second.max(1) as i64,
            longest_wait_us: longest_wait.as_micros() as i64,
            last_seen: Arc::default(),
        }
    }

    /// The table's budget of `settings.control_plane_budget` calls a second.
    pub fn from_settings(config: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Budget::new(
            Client::new(config),
            settings.table.clone(),
            settings.control_plane_budget,
            LONGEST_WAIT,
        )
    }

    /// Waits for a slot of the budget, then returns: call just after.
    pub async fn admit(&self) -> Result<(), BudgetError> {
        let wait = self.reserve(SystemClock.now()).await?;
        if !wait.is_zero() {
            SystemClock.sleep(wait).await;
        }
        Ok(())
    }

    /// Reserves the next free slot as of `now`; returns how long until it.
    pub async fn reserve(&self, now: Time) -> Result<Duration, BudgetError> {
        let now = now.timestamp_micros();
        for _ in 0..ATTEMPTS {
            let outcome = if self.last_seen.load(Ordering::Relaxed) >= now {
                self.take_after_queue(now).await?
            } else {
                self.take_idle(now).await?
            };
            match outcome {
                Taken::Wait(us) => return Ok(Duration::from_micros(us.max(0) as u64)),
                Taken::Seen(Some(tat)) if tat > now + self.longest_wait_us => {
                    self.last_seen.store(tat, Ordering::Relaxed);
                    return Err(BudgetError::Short(Duration::from_micros(
                        (tat - now) as u64,
                    )));
                }
                Taken::Seen(tat) => self.last_seen.store(tat.unwrap_or(0), Ordering::Relaxed),
            }
        }
        Err(BudgetError::Short(Duration::from_micros(
            self.interval_us as u64,
        )))
    }

    /// The budget is in use: the slot at the end of the queue, if it is no
    /// further than `longest_wait` away.
    async fn take_after_queue(&self, now: i64) -> Result<Taken, BudgetError> {
        let written = self
            .update()
            .update_expression("SET #tat = #tat + :interval")
            .condition_expression("#tat >= :now AND #tat <= :latest")
            .expression_attribute_values(":interval", n(self.interval_us))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":latest", n(now + self.longest_wait_us))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match written {
            Ok(out) => {
                let next = tat(out.attributes())
                    .ok_or_else(|| BudgetError::Aws("UpdateItem returned no slot time".into()))?;
                self.last_seen.store(next, Ordering::Relaxed);
                Ok(Taken::Wait(next - self.interval_us - now))
            }
            Err(e) => refused(e),
        }
    }

    /// The budget has sat idle: the slot now.
    async fn take_idle(&self, now: i64) -> Result<Taken, BudgetError> {
        let next = now + self.interval_us;
        let written = self
            .update()
            .update_expression("SET #tat = :next")
            .condition_expression("attribute_not_exists(#tat) OR #tat < :now")
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match written {
            Ok(_) => {
                self.last_seen.store(next, Ordering::Relaxed);
                Ok(Taken::Wait(0))
            }
            Err(e) => refused(e),
        }
    }

    fn update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Key::ControlPlaneBudget.item_key()))
            .expression_attribute_names("#tat", "tat")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

enum Taken {
    /// A slot, this many µs away.
    Wait(i64),
    /// The write's condition did not hold: the slot time found instead.
    Seen(Option<i64>),
}

fn refused(
    e: aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> Result<Taken, BudgetError> {
    match e.as_service_error() {
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
            failed,
        )) => Ok(Taken::Seen(failed.item().and_then(|item| tat(Some(item))))),
        _ => Err(BudgetError::Aws(format!("{e:?}"))),
    }
}

fn tat(item: Option<&HashMap<String, AttributeValue>>) -> Option<i64> {
    item?.get("tat")?.as_n().ok()?.parse().ok()
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
