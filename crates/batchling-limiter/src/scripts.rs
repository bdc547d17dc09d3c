//! The Lua scripts: each decision is one script, atomic on the server and
//! timed by the server's own clock (`TIME`), so callers' clocks never
//! matter and no two callers can both take the same room.
//!
//! Times are integer **microseconds** since the Unix epoch, always:
//! whole milliseconds would lose up to 1 ms per admission to rounding
//! (10% at 100 requests a second, and nothing could be spaced closer than
//! 1 ms above 60,000 RPM). They stay exact in Lua's doubles until the year
//! 2255. Lua turns large numbers into strings with 14 digits, so every
//! stored time goes through `fmt` (`%.0f`); replies carry numbers, which
//! Redis turns into integers exactly.
//!
//! The spacing law is the pacer's (`batchling-engine`'s `pacer/limit.rs`):
//! a lane keeps, per dimension in force, the earliest time its next
//! admission may go. A request starts at `s`, the latest of now, the pause
//! and every dimension's next time; then every dimension moves on from
//! that same `s` by `units × 60 s / limit`. So requests and tokens advance
//! together (a request delayed by tokens cannot bunch requests), and no
//! credit is ever stored for idle time: an admission never starts before
//! now. Consecutive admissions of a dimension are at least their cost
//! apart, so any one-second window holds at most one second's share plus
//! one request (and, for tokens, plus one request's cost). A one-second
//! log per dimension holds the same bound when refunds or a lowered limit
//! would break the spacing's (see [`RESERVE`]).

/// Shared by every script: now, and exact formatting.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(n) return string.format('%.0f', n) end
local names = {'r', 't', 'i', 'o'}
-- Expire the lane's state `idle` ms after the last time it holds.
local function expire(key, top, idle)
  redis.call('PEXPIRE', key, math.ceil(math.max(top - now, 0) / 1000) + idle)
end
";

/// RESERVE. KEYS: state, learned, then the one-second logs of requests,
/// tokens, input and output. ARGV: four given limits per minute (0: none),
/// tokens, input and output units, max_ahead µs, idle ms.
/// Returns `{1, now, s, seq, rpm, tpm, itpm, otpm}` (booked: send at `s`)
/// or `{0, now, s, rpm, tpm, itpm, otpm}` (`s` is beyond `max_ahead`:
/// nothing booked, nothing written). The limits are those in force: the
/// lower of given and learned.
///
/// The one-second log (a sorted set per dimension: `seq:units` scored by
/// send time, with the units of those inside the window kept in the state
/// as `w<dim>`) is the pacer's hard ceiling: an admission goes only when
/// the second before it holds at most one second's share, so no window
/// holds more than that share plus the admission. Even spacing never
/// reaches it; a refund, or a limit lowered mid-stream, might. Entries
/// leave the log only when a booking puts them behind every later send
/// (a later send is never before the latest booked one), so a refusal
/// never forgets what a later admission must count.
const RESERVE: &str = r"
local WINDOW = 1000000
local L = redis.call('HMGET', KEYS[2], 'r', 't', 'i', 'o')
local S = redis.call('HMGET', KEYS[1], 'r', 't', 'i', 'o', 'p', 'last', 'seq',
                     'wr', 'wt', 'wi', 'wo')
local units = {1, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local w = {}
local function units_of(member) return tonumber(string.match(member, ':(%d+)$')) or 0 end
-- The units of a log's entries at or before `edge`.
local function sum_to(key, edge)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', fmt(edge))) do
    sum = sum + units_of(m)
  end
  return sum
end
-- The send time of the entry after `edge` by which `need` units are
-- counted (once it is out of the window, so are they); nil and what was
-- counted if the log holds fewer.
local function freed_at(key, edge, need)
  local freed, off = 0, 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(edge), '+inf',
                             'WITHSCORES', 'LIMIT', off, 64)
    if #batch == 0 then return nil, freed end
    for i = 1, #batch, 2 do
      freed = freed + units_of(batch[i])
      if freed >= need then return tonumber(batch[i + 1]), freed end
    end
    off = off + 64
  end
end
-- The earliest send the log of dimension `d` allows, for a send at or
-- after `edge` + 1 s: the second before it may hold at most `share`.
local function log_allows(key, d, edge, share)
  local leaving = sum_to(key, edge)
  local need = w[d] - leaving - share
  if need <= 0 then return 0 end
  local t, counted = freed_at(key, edge, need)
  if t then return t + WINDOW end
  -- `w` says more than the log holds (a script cut short): the log wins.
  w[d] = leaving + counted
  need = counted - share
  if need <= 0 then return 0 end
  return freed_at(key, edge, need) + WINDOW
end

-- Spacing: the latest of now, the pause and every dimension's next time.
local pm = {}
local pause = tonumber(S[5]) or 0
local s = math.max(now, pause)
for d = 1, 4 do
  local m = tonumber(ARGV[d])
  local l = tonumber(L[d])
  if l and l > 0 and (m == 0 or l < m) then m = l end
  pm[d] = m
  if m > 0 then s = math.max(s, tonumber(S[d]) or 0) end
end
-- The log: later still if the second before `s` holds more than a share.
-- A later `s` only empties the windows already checked.
for d = 1, 4 do
  if pm[d] > 0 and units[d] > 0 then
    local key = KEYS[2 + d]
    w[d] = tonumber(S[7 + d]) or 0
    if redis.call('EXISTS', key) == 0 then w[d] = 0 end
    s = math.max(s, log_allows(key, d, s - WINDOW, math.floor(pm[d] / 60)))
  end
end
if s - now > tonumber(ARGV[8]) then
  return {0, now, s, pm[1], pm[2], pm[3], pm[4]}
end

-- Book: every dimension moves on from the same `s`.
local seq = (tonumber(S[7]) or 0) + 1
local set = {'last', fmt(s), 'seq', fmt(seq)}
local top = math.max(s, pause)
for d = 1, 4 do
  if pm[d] > 0 then
    local n = s + math.ceil(units[d] * 60000000 / pm[d])
    set[#set + 1] = names[d]
    set[#set + 1] = fmt(n)
    top = math.max(top, n)
  end
end
local idle = tonumber(ARGV[9])
local ttl = math.ceil(math.max(top - now, 0) / 1000) + idle
for d = 1, 4 do
  if pm[d] > 0 and units[d] > 0 then
    local key = KEYS[2 + d]
    local gone = sum_to(key, s - WINDOW)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(s - WINDOW))
    w[d] = w[d] - gone + units[d]
    redis.call('ZADD', key, fmt(s), fmt(seq) .. ':' .. fmt(units[d]))
    redis.call('PEXPIRE', key, ttl)
    set[#set + 1] = 'w' .. names[d]
    set[#set + 1] = fmt(w[d])
  end
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, now, s, seq, pm[1], pm[2], pm[3], pm[4]}
";

/// SETTLE. KEYS: state, settled. ARGV: reservation id, its send time µs,
/// horizon µs, idle ms, then for tokens, input and output: the limit per
/// minute it was booked under (0: none), then the three differences
/// actual − reserved (signed units).
/// Returns `{1, now}` (applied), `{0, now}` (settled before) or `{2, now}`
/// (older than the horizon: nothing done).
///
/// More than reserved moves the dimension on by the difference. Less moves
/// it back, but never before now and never before the latest booked send
/// time: a refund never lets an admission start in the past (burst credit)
/// nor ahead of one already booked.
const SETTLE: &str = r"
local s = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
if s < now - horizon then return {2, now} end
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return {0, now} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. fmt(now - horizon))
redis.call('PEXPIRE', KEYS[2], math.ceil(horizon / 1000))
local S = redis.call('HMGET', KEYS[1], 't', 'i', 'o', 'last', 'r', 'p')
local floor = math.max(now, tonumber(S[4]) or 0)
local top = math.max(tonumber(S[5]) or 0, tonumber(S[6]) or 0)
local set = {}
for d = 1, 3 do
  local pm = tonumber(ARGV[4 + d])
  local delta = tonumber(ARGV[7 + d])
  local n = tonumber(S[d])
  if pm > 0 and delta > 0 then
    n = math.max(n or now, now - horizon) + math.ceil(delta * 60000000 / pm)
    set[#set + 1] = names[d + 1]
    set[#set + 1] = fmt(n)
  elseif pm > 0 and delta < 0 and n then
    n = math.max(n - math.ceil(-delta * 60000000 / pm), floor)
    set[#set + 1] = names[d + 1]
    set[#set + 1] = fmt(n)
  end
  if n then top = math.max(top, n) end
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
  expire(KEYS[1], top, tonumber(ARGV[4]))
end
return {1, now}
";

/// PAUSE. KEYS: state. ARGV: pause µs, idle ms. The pause becomes the
/// later of the stored one and now + pause (extended, never shortened).
/// Returns `{now, until}`.
const PAUSE: &str = r"
local S = redis.call('HMGET', KEYS[1], 'p', 'r', 't', 'i', 'o')
local p = math.max(tonumber(S[1]) or 0, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'p', fmt(p))
local top = p
for d = 2, 5 do top = math.max(top, tonumber(S[d]) or 0) end
expire(KEYS[1], top, tonumber(ARGV[2]))
return {now, p}
";

/// LEARN. KEYS: learned. ARGV: four limits per minute read from headers
/// (0: not read), keep ms. A reading replaces the one before (headers
/// are the provider's word now); the hash lives `keep` ms after the last.
/// Returns `{now}`.
const LEARN: &str = r"
local set = {}
for d = 1, 4 do
  local m = tonumber(ARGV[d])
  if m > 0 then
    set[#set + 1] = names[d]
    set[#set + 1] = fmt(m)
  end
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return {now}
";

/// VIEW. KEYS: state, learned. Returns `{now, r, t, i, o, p, last, lr,
/// lt, li, lo}`, -1 for what is not there.
const VIEW: &str = r"
local S = redis.call('HMGET', KEYS[1], 'r', 't', 'i', 'o', 'p', 'last')
local L = redis.call('HMGET', KEYS[2], 'r', 't', 'i', 'o')
local out = {now}
for i = 1, 6 do out[#out + 1] = tonumber(S[i]) or -1 end
for i = 1, 4 do out[#out + 1] = tonumber(L[i]) or -1 end
return out
";

/// The scripts, loaded once per limiter.
pub(crate) struct Scripts {
    pub(crate) reserve: redis::Script,
    pub(crate) settle: redis::Script,
    pub(crate) pause: redis::Script,
    pub(crate) learn: redis::Script,
    pub(crate) view: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            reserve: with(RESERVE),
            settle: with(SETTLE),
            pause: with(PAUSE),
            learn: with(LEARN),
            view: with(VIEW),
        }
    }

    pub(crate) fn all(&self) -> [&redis::Script; 5] {
        [
            &self.reserve,
            &self.settle,
            &self.pause,
            &self.learn,
            &self.view,
        ]
    }
}
