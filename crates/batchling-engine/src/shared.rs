//! One rate budget shared with other processes (`run --limiter`): after
//! the local pacer admits an attempt, its send time is booked on the
//! shared budget of its lane, so several processes sending with one key
//! spend its limit once, not once each.
//!
//! The engine names no store: the budget is a trait the caller implements
//! (the CLI, over Redis). The local pacer keeps doing what it does alone
//! (slow start, learning from headers, its one-second log on send times);
//! the shared budget adds the other processes' sends. A lane whose limits
//! are not known yet (slow start) is paced locally only.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::pacer::{Cost, PerMinute};

/// A boxed future (the trait is used as an object).
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A budget shared with other processes. Every call is bounded: a store
/// that does not answer is [`Unavailable`], quickly.
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Book a send of `cost` on `lane`'s budget under `limits` (per minute,
    /// as the local lane has them in force).
    fn reserve<'a>(
        &'a self,
        lane: SharedLane<'a>,
        limits: PerMinute,
        cost: Cost,
    ) -> Fut<'a, Result<Booking, Unavailable>>;

    /// What the booked request really took (from its answer's `usage`).
    fn settle(&self, ticket: Ticket, actual: Cost) -> Fut<'_, Result<(), Unavailable>>;

    /// Hold `lane` for every process for `pause` (a 429's Retry-After),
    /// extended by a later one, never shortened.
    fn pause<'a>(
        &'a self,
        lane: SharedLane<'a>,
        pause: Duration,
    ) -> Fut<'a, Result<(), Unavailable>>;

    /// Share limits this process learned for `lane` from headers.
    fn learn<'a>(
        &'a self,
        lane: SharedLane<'a>,
        limits: PerMinute,
    ) -> Fut<'a, Result<(), Unavailable>>;

    /// Limits another process learned for `lane`, if any.
    fn learned<'a>(
        &'a self,
        lane: SharedLane<'a>,
    ) -> Fut<'a, Result<Option<PerMinute>, Unavailable>>;
}

/// A lane as every process names it: its limit group's name (a routes
/// config's, or `default`) and its model or family (`None`: requests
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedLane<'a> {
    /// The limit group.
    pub group: &'a str,
    /// The model or family.
    pub model: Option<&'a str>,
}

/// What [`SharedBudget::reserve`] booked.
pub enum Booking {
    /// Send after `wait`; settle with `ticket`.
    Send {
        /// How long to wait before sending.
        wait: Duration,
        /// What settling needs.
        ticket: Ticket,
    },
    /// Nothing booked (the lane is booked far ahead, or paused): ask again
    /// after this.
    Later(Duration),
}

/// A booking as the budget's implementation needs it to settle.
pub struct Ticket(pub Box<dyn Any + Send + Sync>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

/// The shared budget could not be reached; why, in words without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The run's shared budget and whether it is reachable now (so that one
/// notice, not one per attempt, says it went away or came back).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) budget: std::sync::Arc<dyn SharedBudget>,
    pub(crate) down: std::sync::atomic::AtomicBool,
    /// Since when it has not answered (the run stops after the job's
    /// `give_up_after`).
    pub(crate) down_since: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Whether a send has woken past its booked time yet (one notice says
    /// so, the first time).
    pub(crate) woke_late: std::sync::atomic::AtomicBool,
}

/// How far past its booked time a send may wake and still go. Later, it
/// is booked again: sent now, it would land among the sends the other
/// processes booked after it (a busy machine's timers, a stalled process
/// waking with many sends due), and one second could hold more than the
/// limit. 10 ms of a lane's sends is what booking at 0.99 of its limit
/// leaves free in each second (at 100 requests a second: one send, 10 ms
/// apart, so a send less late passes no other's time). Timers overshoot
/// by 5-6 ms on a busy 2-core machine: a tighter tolerance re-books often
/// enough to cost 0.6% of the rate (BENCHMARKS.md, session 11).
const LATE_WAKE: Duration = Duration::from_millis(10);

/// How many times one send is booked again for a late wake before it goes
/// anyway (a machine that never wakes in time still sends).
const MAX_REBOOKS: u32 = 3;

/// Sleep out a booking's `wait`. `Err(late)`: woken past [`LATE_WAKE`],
/// to be booked again (`rebooks`: how many times it was already).
pub(crate) async fn wait_out(wait: Duration, rebooks: u32) -> Result<(), Duration> {
    let due = tokio::time::Instant::now() + wait;
    tokio::time::sleep_until(due).await;
    let late = due.elapsed();
    if late > LATE_WAKE && rebooks < MAX_REBOOKS {
        Err(late)
    } else {
        Ok(())
    }
}

impl Shared {
    /// It did not answer: how long it has been away now.
    pub(crate) fn away(&self) -> std::time::Duration {
        let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
    }

    /// It answered.
    pub(crate) fn back(&self) {
        *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime thread kept busy past the booked time (as a loaded
    /// machine or a stalled process keeps it).
    async fn woken_after_a_stall(rebooks: u32) -> Result<(), Duration> {
        let stall = tokio::spawn(async { std::thread::sleep(Duration::from_millis(60)) });
        let waited = wait_out(Duration::from_millis(1), rebooks).await;
        stall.await.unwrap();
        waited
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_send_woken_past_its_time_is_booked_again() {
        let late = woken_after_a_stall(0).await.unwrap_err();
        // Measured from the booked time, not from when the sleep began.
        assert!(
            late > LATE_WAKE && late >= Duration::from_millis(50),
            "{late:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn after_its_last_rebooking_a_late_send_goes() {
        assert_eq!(woken_after_a_stall(MAX_REBOOKS).await, Ok(()));
    }
}
