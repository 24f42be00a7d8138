//! Time, for everything Sluice decides by it: the wall clock in production,
//! a simulated one in the simulation. (Lambda's invocation deadlines and
//! measured durations use std's clocks: they are about this process, not
//! about the deployment's time.)

use crate::domain::deployment::Time;
use std::future::Future;
use std::time::Duration;

/// Time as Sluice sees it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Time;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        chrono::Utc::now()
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
