//! One rate budget shared by many processes, kept in Redis.
//!
//! The single-process pacer (`batchling-engine`'s `pacer`) spaces a
//! lane's admissions evenly, pauses a lane after a 429, and learns limits
//! from headers. This crate keeps the same laws for a fleet: every
//! process admits through one Lua script per decision, atomic on the
//! server and timed by Redis's own clock (`TIME`), so N workers together
//! spend one limit, not N (the LiteLLM replica bug, issue #18).
//!
//! # Vocabulary
//! - A [`Lane`] is one budget: a model of a limit group of an upstream,
//!   named by the caller. Its keys share one hash tag (one Cluster slot);
//!   no name the caller gives is spelled out in a key.
//! - [`Limits`] are per minute, one per [`Dimension`] (requests, tokens,
//!   input tokens, output tokens); a [`Cost`] is what one request takes.
//! - [`Limiter::reserve`] books a send time ([`Admission::Send`]: sleep
//!   [`Reservation::wait`], then send), or, when the lane is booked more
//!   than [`Settings::max_ahead`] ahead, books nothing and says when to ask
//!   again ([`Admission::Later`]).
//! - [`Limiter::settle`] corrects a reservation with the real count
//!   (reserve, then correct), once: a replay changes nothing.
//! - [`Limiter::pause`] holds a lane for every process (a 429's
//!   Retry-After), extended, never shortened.
//! - [`Limiter::learn`] shares limits read from headers with every
//!   process, for a while; the lower of given and learned is in force.
//!
//! # Laws (as the pacer's)
//! - Every dimension of a request starts from the same send time, the
//!   latest of now, the pause and each dimension's next time, and moves
//!   on by `units × 60 s / limit`; no credit is kept for idle time. So no
//!   one-second window holds more than one second's share of a limit
//!   (+1 request; for tokens + one request's cost). A one-second log per
//!   dimension (the pacer's sliding log) keeps that bound when refunds or
//!   a lowered limit would break the spacing's.
//! - A refund never moves a dimension before now, nor before the latest
//!   booked send time.
//! - Times are integer microseconds on Redis's clock (`scripts.rs` says
//!   why not milliseconds); callers only ever wait the durations returned.
//! - Every call has a short timeout ([`Settings::call_timeout`]): a Redis
//!   blip is [`Error::Unavailable`] quickly, and the caller falls back.
//! - A lane's keys expire [`Settings::idle`] after the last time they
//!   hold, learned limits [`Settings::learned_for`] after the last reading.
//!
//! The caller applies utilisation (e.g. 0.95 in fleet mode) to the limits
//! it passes; what the provider counts and charges is the pacer's to know.
//!
//! # Driving it (the pacer's loop, fleet-wide)
//! 1. `reserve`: on `Send`, sleep `wait` on the local monotonic clock and
//!    send; on `Later`, set the request aside for `retry_in`.
//! 2. On the answer: `settle` with what `usage` counted; `learn` the
//!    limits its headers show. On a 429: `pause` for its Retry-After (the
//!    attempt stays charged: providers count refused requests).
//! 3. On [`Error::Unavailable`]: fall back to the local pacer at a share
//!    of the limit, and try Redis again later; an empty lane (Redis lost
//!    its state) starts at now, which is safe.
//!
//! The schedule is Redis's; local timers wake a little late and may
//! bunch two sends (a busy 2-core machine: 102 sends in the busiest
//! second of a 100 a second lane). Utilisation below 1 absorbs a little
//! of that; a caller whose timer woke much later than the booked time
//! books again rather than send (the engine's `shared::wait_out`).

mod budget;
mod connect;
mod error;
mod lane;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

pub use budget::{Cost, Dimension, Limits, MAX_UNITS, RedisTime};
pub use connect::Settings;
pub use error::{Down, Error};
pub use lane::{Lane, MAX_NAME_BYTES, MAX_PREFIX_BYTES};

// The integration tests' dependency, not the unit tests'.
#[cfg(test)]
use rand as _;

use budget::{micros, millis_up};
use connect::within;
use lane::Keys;
use scripts::Scripts;

/// A connection to the shared budget. Cheap to clone: clones share one
/// multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub struct Limiter {
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// `host:port`, for messages (never the password).
    addr: Arc<str>,
    settings: Settings,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What [`Limiter::reserve`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Booked: wait [`Reservation::wait`], then send.
    Send(Reservation),
    /// Nothing booked: the lane is booked further ahead than
    /// [`Settings::max_ahead`] (or paused). Ask again after `retry_in`.
    Later {
        /// How long to wait before asking again.
        retry_in: Duration,
        /// When the request would have been sent.
        next_at: RedisTime,
        /// Redis's now at the decision.
        now: RedisTime,
        /// The limits in force (the lower of given and learned).
        in_force: Limits,
    },
}

/// A booked send: the proof of admission that [`Limiter::settle`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// When to send, on Redis's clock.
    pub at: RedisTime,
    /// Redis's now when it was booked.
    pub now: RedisTime,
    /// `at − now`: how long to wait (on the local monotonic clock) before
    /// sending.
    pub wait: Duration,
    /// The lane's reservation counter at booking.
    pub seq: u64,
    /// What was reserved.
    pub cost: Cost,
    /// The limits it was booked under; a settle corrects under the same.
    pub in_force: Limits,
}

impl Reservation {
    /// Its id, unique within its lane: send time and counter.
    pub fn id(&self) -> String {
        format!("{}-{}", self.at.as_micros(), self.seq)
    }
}

/// What [`Limiter::settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The difference was applied.
    Applied,
    /// This reservation was settled before: nothing changed.
    Replayed,
    /// Its send time is older than [`Settings::settle_horizon`]: nothing
    /// changed (its windows are long past).
    TooOld,
}

/// [`Settle`], with Redis's now at the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// What was done.
    pub outcome: Settle,
    /// Redis's now.
    pub now: RedisTime,
}

/// A lane's pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    /// Nothing of the lane is booked before this.
    pub until: RedisTime,
    /// Redis's now.
    pub now: RedisTime,
}

impl Paused {
    /// How long it still holds.
    pub fn left(&self) -> Duration {
        self.until.since(self.now)
    }
}

/// A lane's state as Redis holds it (for `status` and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneView {
    /// Redis's now.
    pub now: RedisTime,
    next: [Option<RedisTime>; 4],
    /// The latest send time booked.
    pub last_booked: Option<RedisTime>,
    /// The pause, if one was set and is not yet past.
    pub paused_until: Option<RedisTime>,
    /// Limits learned from headers, while kept.
    pub learned: Limits,
}

impl LaneView {
    /// The earliest time `d`'s next admission may start (as stored; it
    /// may be in the past).
    pub fn next(&self, d: Dimension) -> Option<RedisTime> {
        let i = Dimension::ALL.iter().position(|&x| x == d).unwrap_or(0);
        self.next[i]
    }
}

impl Limiter {
    /// Connect to the Redis at `url` with the default [`Settings`]; every
    /// key begins with `prefix` (letters, digits, `_ - . :`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Limiter, Error> {
        Limiter::connect_with(url, prefix, Settings::default()).await
    }

    /// As [`Limiter::connect`], with `settings`. Fails fast and says what
    /// to fix: a bad URL, nothing listening, wrong credentials.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        settings: Settings,
    ) -> Result<Limiter, Error> {
        lane::check_prefix(prefix)?;
        let (client, addr) = connect::client(url)?;
        let mut conn = connect::manager(client, &addr, &settings).await?;
        let scripts = Scripts::new();
        // Loading them proves the connection (and the credentials) work,
        // and spares the first calls a round trip.
        for script in scripts.all() {
            within(
                settings.connect_timeout,
                &addr,
                script.load_async(&mut conn),
            )
            .await?;
        }
        Ok(Limiter {
            conn,
            prefix: prefix.into(),
            addr: addr.into(),
            settings,
            scripts: Arc::new(scripts),
        })
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `host:port` of its Redis.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Book a send of `cost` in `lane` under `limits` (the lower of each
    /// and the lane's learned limit is in force), honouring the lane's
    /// pause. See the crate docs for the law.
    pub async fn reserve(
        &self,
        lane: &Lane,
        limits: &Limits,
        cost: Cost,
    ) -> Result<Admission, Error> {
        let given = limits.to_args()?;
        let cost = cost.check()?;
        let keys = self.keys(lane);
        let mut call = self.scripts.reserve.key(&keys.state);
        call.key(&keys.learned);
        for log in &keys.logs {
            call.key(log);
        }
        for g in given {
            call.arg(g);
        }
        for d in [
            Dimension::Tokens,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ] {
            call.arg(d.units(cost));
        }
        call.arg(micros(self.settings.max_ahead))
            .arg(millis_up(self.settings.idle));
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.run(call.invoke_async(&mut conn)).await?;
        self.admission(&reply, cost)
            .ok_or_else(|| self.malformed("reserve"))
    }

    /// Correct `reservation` of `lane` with what the provider counted
    /// (`actual`): more moves the lane's token dimensions on, less moves
    /// them back, never before now nor before the latest booked send.
    /// Idempotent by reservation id; a reservation never settled (its
    /// worker died) stays charged in full.
    pub async fn settle(
        &self,
        lane: &Lane,
        reservation: &Reservation,
        actual: Cost,
    ) -> Result<Settled, Error> {
        let actual = actual.check()?;
        let keys = self.keys(lane);
        let mut call = self.scripts.settle.key(&keys.state);
        call.key(&keys.settled)
            .arg(reservation.id())
            .arg(reservation.at.as_micros())
            .arg(micros(self.settings.settle_horizon))
            .arg(millis_up(self.settings.idle));
        let dims = [
            Dimension::Tokens,
            Dimension::InputTokens,
            Dimension::OutputTokens,
        ];
        for d in dims {
            call.arg(reservation.in_force.get(d).unwrap_or(0));
        }
        for d in dims {
            let delta = d.units(actual) as i64 - d.units(reservation.cost) as i64;
            call.arg(delta);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.run(call.invoke_async(&mut conn)).await?;
        let (outcome, now) = match reply.as_slice() {
            [code, now] => (*code, RedisTime::from_reply(*now)),
            _ => (-1, None),
        };
        let outcome = match outcome {
            1 => Settle::Applied,
            0 => Settle::Replayed,
            2 => Settle::TooOld,
            _ => return Err(self.malformed("settle")),
        };
        let now = now.ok_or_else(|| self.malformed("settle"))?;
        Ok(Settled { outcome, now })
    }

    /// Hold `lane` for every process until `retry_after` from Redis's now,
    /// or longer if a longer pause holds already (never shortened). Every
    /// reservation booked after this starts no earlier; those booked
    /// before stand (at most [`Settings::max_ahead`] of them).
    pub async fn pause(&self, lane: &Lane, retry_after: Duration) -> Result<Paused, Error> {
        let keys = self.keys(lane);
        let mut call = self.scripts.pause.key(&keys.state);
        call.arg(micros(retry_after))
            .arg(millis_up(self.settings.idle));
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.run(call.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [now, until] => RedisTime::from_reply(*now)
                .zip(RedisTime::from_reply(*until))
                .map(|(now, until)| Paused { until, now }),
            _ => None,
        }
        .ok_or_else(|| self.malformed("pause"))
    }

    /// The pause holding `lane` now, if any.
    pub async fn paused_until(&self, lane: &Lane) -> Result<Option<Paused>, Error> {
        let v = self.view(lane).await?;
        Ok(v.paused_until.map(|until| Paused { until, now: v.now }))
    }

    /// Share limits read from a response's headers (`None`: not read) with
    /// every process using `lane`, for [`Settings::learned_for`] after
    /// this reading. A reading replaces the one before; the lower of
    /// given and learned is in force.
    pub async fn learn(&self, lane: &Lane, limits: &Limits) -> Result<(), Error> {
        let figures = limits.to_args()?;
        let keys = self.keys(lane);
        let mut call = self.scripts.learn.key(&keys.learned);
        for f in figures {
            call.arg(f);
        }
        call.arg(millis_up(self.settings.learned_for));
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.run(call.invoke_async(&mut conn)).await?;
        if reply.len() != 1 {
            return Err(self.malformed("learn"));
        }
        Ok(())
    }

    /// The limits learned for `lane`, while kept.
    pub async fn learned(&self, lane: &Lane) -> Result<Limits, Error> {
        Ok(self.view(lane).await?.learned)
    }

    /// `lane`'s state as Redis holds it.
    pub async fn view(&self, lane: &Lane) -> Result<LaneView, Error> {
        let keys = self.keys(lane);
        let mut call = self.scripts.view.key(&keys.state);
        call.key(&keys.learned);
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self.run(call.invoke_async(&mut conn)).await?;
        if reply.len() != 11 {
            return Err(self.malformed("view"));
        }
        let now = RedisTime::from_reply(reply[0]).ok_or_else(|| self.malformed("view"))?;
        let at = |i: usize| RedisTime::from_reply(reply[i]);
        Ok(LaneView {
            now,
            next: [at(1), at(2), at(3), at(4)],
            paused_until: at(5).filter(|&p| p > now),
            last_booked: at(6),
            learned: Limits::from_reply(&reply[7..]),
        })
    }

    /// Remove every key of `lane` (its schedule, pause, learned limits and
    /// settled ids): it starts afresh at now.
    pub async fn forget(&self, lane: &Lane) -> Result<(), Error> {
        let keys = self.keys(lane);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&keys.state)
            .arg(&keys.learned)
            .arg(&keys.settled)
            .arg(&keys.logs[..]);
        let mut conn = self.conn.clone();
        self.run(cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    fn keys(&self, lane: &Lane) -> Keys {
        Keys::of(&self.prefix, lane)
    }

    async fn run<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        within(self.settings.call_timeout, &self.addr, call).await
    }

    fn malformed(&self, script: &'static str) -> Error {
        Error::Reply {
            addr: self.addr.to_string(),
            script,
        }
    }

    /// A reserve script's reply (`scripts.rs`), or `None` if malformed.
    fn admission(&self, reply: &[i64], cost: Cost) -> Option<Admission> {
        let (booked, rest) = reply.split_first()?;
        let now = RedisTime::from_reply(*rest.first()?)?;
        let at = RedisTime::from_reply(*rest.get(1)?)?;
        match (booked, rest.len()) {
            (1, 7) => Some(Admission::Send(Reservation {
                at,
                now,
                wait: at.since(now),
                seq: u64::try_from(rest[2]).ok()?,
                cost,
                in_force: Limits::from_reply(&rest[3..]),
            })),
            (0, 6) => Some(Admission::Later {
                retry_in: at.since(now).saturating_sub(self.settings.max_ahead),
                next_at: at,
                now,
                in_force: Limits::from_reply(&rest[2..]),
            }),
            _ => None,
        }
    }
}
