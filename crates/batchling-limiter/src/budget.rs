//! The budget's vocabulary: what a limit counts, what a request costs,
//! the limits of a lane, and time on Redis's clock.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// The largest per-minute limit or cost accepted. Lua numbers are doubles:
/// every figure and every time the scripts compute stays an exact integer
/// below 2^53 with this bound.
pub const MAX_UNITS: u64 = 1_000_000_000_000;

/// What a limit counts (the pacer's dimensions: a provider that keeps
/// requests, input and output tokens apart fits as well as one that keeps
/// requests and tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// One per request.
    Requests,
    /// Input plus reserved output.
    Tokens,
    /// Input only.
    InputTokens,
    /// Reserved output only.
    OutputTokens,
}

impl Dimension {
    /// Every dimension, in the order the scripts keep them.
    pub const ALL: [Dimension; 4] = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];

    /// The units of `cost` this dimension counts.
    pub fn units(self, cost: Cost) -> u64 {
        match self {
            Dimension::Requests => 1,
            Dimension::Tokens => cost.input.saturating_add(cost.output),
            Dimension::InputTokens => cost.input,
            Dimension::OutputTokens => cost.output,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Requests => "requests per minute",
            Dimension::Tokens => "tokens per minute",
            Dimension::InputTokens => "input tokens per minute",
            Dimension::OutputTokens => "output tokens per minute",
        }
    }
}

/// What one request costs, in the units the limits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Input tokens.
    pub input: u64,
    /// Output tokens reserved (providers charge the maximum at admission).
    pub output: u64,
}

impl Cost {
    /// A cost counted as one total (the input side).
    pub fn tokens(n: u64) -> Self {
        Cost {
            input: n,
            output: 0,
        }
    }

    pub(crate) fn check(self) -> Result<Self, Error> {
        for (side, n) in [("input", self.input), ("output", self.output)] {
            if n > MAX_UNITS {
                return Err(Error::BadCost { side, tokens: n });
            }
        }
        Ok(self)
    }
}

/// A lane's limits, per minute, one per [`Dimension`]; `None` is no limit.
/// The caller applies its own utilisation (e.g. 0.95 of the provider's
/// figure in fleet mode) before passing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute (input plus reserved output).
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM).
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM).
    pub otpm: Option<u64>,
}

impl Limits {
    /// The limit of `d`.
    pub fn get(&self, d: Dimension) -> Option<u64> {
        match d {
            Dimension::Requests => self.rpm,
            Dimension::Tokens => self.tpm,
            Dimension::InputTokens => self.itpm,
            Dimension::OutputTokens => self.otpm,
        }
    }

    /// Whether no dimension has a limit.
    pub fn is_empty(&self) -> bool {
        Dimension::ALL.iter().all(|&d| self.get(d).is_none())
    }

    /// The four figures as the scripts take them (0: no limit), checked.
    pub(crate) fn to_args(self) -> Result<[u64; 4], Error> {
        let mut out = [0; 4];
        for (slot, d) in out.iter_mut().zip(Dimension::ALL) {
            match self.get(d) {
                None => {}
                Some(n) if n == 0 || n > MAX_UNITS => {
                    return Err(Error::BadLimit {
                        dimension: d,
                        per_minute: n,
                    });
                }
                Some(n) => *slot = n,
            }
        }
        Ok(out)
    }

    /// From the scripts' four figures (0 or less: no limit).
    pub(crate) fn from_reply(v: &[i64]) -> Self {
        let get = |i: usize| {
            v.get(i)
                .copied()
                .filter(|&n| n > 0)
                .and_then(|n| u64::try_from(n).ok())
        };
        Limits {
            rpm: get(0),
            tpm: get(1),
            itpm: get(2),
            otpm: get(3),
        }
    }
}

/// An instant on Redis's clock (`TIME`), in microseconds since the Unix
/// epoch. Every decision the limiter makes uses this one clock; the
/// caller turns it into a local deadline with the `wait` it comes with,
/// never by comparing it with its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedisTime(u64);

impl RedisTime {
    /// From microseconds since the Unix epoch.
    pub fn from_micros(us: u64) -> Self {
        RedisTime(us)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: RedisTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// From a script's reply (negative: absent).
    pub(crate) fn from_reply(v: i64) -> Option<Self> {
        u64::try_from(v).ok().map(RedisTime)
    }
}

impl fmt::Display for RedisTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Microseconds, for a script's arguments (saturating: a duration that
/// long is "forever" to the budget anyway).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_UNITS * 1000)
}

/// Whole milliseconds, rounded up, for key expiry.
pub(crate) fn millis_up(d: Duration) -> u64 {
    micros(d).div_ceil(1000)
}
