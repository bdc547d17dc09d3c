use std::time::Duration;

use batchling_limiter::{
    Admission, Cost, Dimension, Lane, Limiter, Limits, RedisTime, Reservation, Settings, Settle,
};

use crate::support::{Redis, lane};

/// 60,000 tokens a minute: one token is 1,000 µs of the schedule.
const TPM: Limits = Limits {
    rpm: None,
    tpm: Some(60_000),
    itpm: None,
    otpm: None,
};

async fn booked(l: &Limiter, lane: &Lane, limits: &Limits, cost: Cost) -> Reservation {
    match l.reserve(lane, limits, cost).await.unwrap() {
        Admission::Send(r) => r,
        other => panic!("not booked: {other:?}"),
    }
}

fn plus(t: RedisTime, us: u64) -> RedisTime {
    RedisTime::from_micros(t.as_micros() + us)
}

/// Reserve then correct: more than reserved moves tokens on by exactly
/// the difference; a settle replayed (a lost reply, a retry) changes
/// nothing, from the same client or another.
#[tokio::test]
async fn a_settle_replayed_changes_nothing() {
    let redis = Redis::new();
    let [a, b] = <[Limiter; 2]>::try_from(redis.clients(2, &Settings::default()).await).unwrap();
    let lane = lane("m");
    let r = booked(&a, &lane, &TPM, Cost::tokens(100)).await;
    let before = a.view(&lane).await.unwrap();
    assert_eq!(before.next(Dimension::Tokens), Some(plus(r.at, 100_000)));

    let first = a.settle(&lane, &r, Cost::tokens(150)).await.unwrap();
    assert_eq!(first.outcome, Settle::Applied);
    let after = a.view(&lane).await.unwrap();
    assert_eq!(after.next(Dimension::Tokens), Some(plus(r.at, 150_000)));

    for client in [&a, &b] {
        let again = client.settle(&lane, &r, Cost::tokens(150)).await.unwrap();
        assert_eq!(again.outcome, Settle::Replayed);
        // A replay with other figures is still the same reservation.
        let other = client.settle(&lane, &r, Cost::tokens(0)).await.unwrap();
        assert_eq!(other.outcome, Settle::Replayed);
    }
    let last = b.view(&lane).await.unwrap();
    assert_eq!(last.next(Dimension::Tokens), after.next(Dimension::Tokens));
    assert_eq!(last.last_booked, after.last_booked);
}

/// A refund never pulls a dimension below now (no credit for the past),
/// nor below a send already booked after it.
#[tokio::test]
async fn a_refund_never_pulls_below_now_or_a_later_booking() {
    let redis = Redis::new();
    let l = redis.client(Settings::default()).await;
    // Alone in its lane: 10,000 tokens book 10 s of it; a full refund
    // would put tokens 10 s back, before now.
    let alone = lane("alone");
    let r = booked(&l, &alone, &TPM, Cost::tokens(10_000)).await;
    let s = l.settle(&alone, &r, Cost::tokens(0)).await.unwrap();
    assert_eq!(s.outcome, Settle::Applied);
    let v = l.view(&alone).await.unwrap();
    assert_eq!(v.next(Dimension::Tokens), Some(s.now.max(r.at)));

    // Two booked: refunding the first cannot bring tokens before the
    // second's send.
    let two = lane("two");
    let first = booked(&l, &two, &TPM, Cost::tokens(100)).await;
    let second = booked(&l, &two, &TPM, Cost::tokens(100)).await;
    assert_eq!(second.at, plus(first.at, 100_000));
    let s = l.settle(&two, &first, Cost::tokens(0)).await.unwrap();
    let v = l.view(&two).await.unwrap();
    let floor = s.now.max(second.at);
    assert_eq!(v.next(Dimension::Tokens), Some(floor));
    let third = booked(&l, &two, &TPM, Cost::tokens(1)).await;
    assert!(third.at >= second.at && third.at >= s.now);
}

/// A 429's pause holds every client until it ends; a shorter pause
/// never shortens it, a longer one extends it; when it ends the lane
/// resumes at its spacing, not in a herd.
#[tokio::test]
async fn a_pause_holds_every_client_and_is_never_shortened() {
    let redis = Redis::new();
    let clients = redis.clients(3, &Settings::default()).await;
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(6_000),
        ..Limits::default()
    };
    let first = clients[0]
        .pause(&lane, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.until, plus(first.now, 5_000_000));
    let shorter = clients[1]
        .pause(&lane, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(shorter.until, first.until, "a shorter pause shortened it");
    let longer = clients[2]
        .pause(&lane, Duration::from_secs(6))
        .await
        .unwrap();
    assert!(longer.until > first.until);
    let until = longer.until;

    for c in &clients {
        assert_eq!(
            c.paused_until(&lane).await.unwrap().map(|p| p.until),
            Some(until)
        );
        match c.reserve(&lane, &limits, Cost::default()).await.unwrap() {
            Admission::Later {
                next_at,
                retry_in,
                now,
                ..
            } => {
                assert_eq!(next_at, until);
                assert_eq!(retry_in, until.since(now) - Duration::from_secs(1));
            }
            other => panic!("booked during a pause: {other:?}"),
        }
    }
    // One that may book far ahead is booked at the pause's end, and the
    // next one a spacing after it.
    let far = Settings {
        max_ahead: Duration::from_secs(30),
        ..Settings::default()
    };
    let patient = redis.client(far).await;
    let a = booked(&patient, &lane, &limits, Cost::default()).await;
    let b = booked(&patient, &lane, &limits, Cost::default()).await;
    assert_eq!(a.at, until);
    assert_eq!(b.at, plus(until, 10_000));
}

/// Limits learned by one client hold every client; the lower of given
/// and learned is in force: a lower learned limit wins, a higher one
/// does not, and one learned for a dimension not given applies.
#[tokio::test]
async fn a_learned_lower_limit_wins_and_a_higher_one_does_not() {
    let redis = Redis::new();
    let [a, b] = <[Limiter; 2]>::try_from(redis.clients(2, &Settings::default()).await).unwrap();
    let lane = lane("m");
    let given = Limits {
        rpm: Some(6_000),
        ..Limits::default()
    };
    let lower = Limits {
        rpm: Some(600),
        ..Limits::default()
    };
    a.learn(&lane, &lower).await.unwrap();
    assert_eq!(b.learned(&lane).await.unwrap(), lower);
    let r1 = booked(&b, &lane, &given, Cost::default()).await;
    let r2 = booked(&b, &lane, &given, Cost::default()).await;
    assert_eq!(r1.in_force.rpm, Some(600));
    assert_eq!(r2.at, plus(r1.at, 100_000), "600 RPM is 100 ms apart");

    let higher = Limits {
        rpm: Some(60_000),
        ..Limits::default()
    };
    b.learn(&lane, &higher).await.unwrap();
    let r3 = booked(&a, &lane, &given, Cost::default()).await;
    let r4 = booked(&a, &lane, &given, Cost::default()).await;
    assert_eq!(
        r3.in_force.rpm,
        Some(6_000),
        "a higher learned limit raised the given one"
    );
    assert_eq!(r3.at, plus(r2.at, 100_000), "r2 was booked at 600 RPM");
    assert_eq!(r4.at, plus(r3.at, 10_000));

    // A dimension learned but not given is in force; the other is kept.
    let tokens = Limits {
        tpm: Some(60_000),
        ..Limits::default()
    };
    a.learn(&lane, &tokens).await.unwrap();
    let learned = b.learned(&lane).await.unwrap();
    assert_eq!((learned.rpm, learned.tpm), (Some(60_000), Some(60_000)));
    let r5 = booked(&b, &lane, &given, Cost::tokens(5)).await;
    assert_eq!(r5.in_force.tpm, Some(60_000));
    let r6 = booked(&b, &lane, &given, Cost::tokens(5)).await;
    assert_eq!(
        r6.at,
        plus(r5.at, 10_000),
        "5 tokens are 5 ms, less than a request"
    );
    let r7 = booked(&b, &lane, &given, Cost::tokens(50)).await;
    assert_eq!(r7.at, plus(r6.at, 10_000));
    let r8 = booked(&b, &lane, &given, Cost::tokens(1)).await;
    assert_eq!(r8.at, plus(r7.at, 50_000), "50 tokens are 50 ms");
}

/// Nothing is booked further ahead than max_ahead: the refusal says when
/// the request would go and how long to wait before asking again, and
/// leaves the lane as it was.
#[tokio::test]
async fn nothing_is_booked_beyond_max_ahead() {
    let redis = Redis::new();
    let l = redis.client(Settings::default()).await;
    let lane = lane("m");
    // One a minute: the second would go 60 s after the first.
    let limits = Limits {
        rpm: Some(1),
        ..Limits::default()
    };
    let first = booked(&l, &lane, &limits, Cost::default()).await;
    assert_eq!(first.wait, Duration::ZERO);
    let before = l.view(&lane).await.unwrap();
    let Admission::Later {
        next_at,
        retry_in,
        now,
        in_force,
    } = l.reserve(&lane, &limits, Cost::default()).await.unwrap()
    else {
        panic!("booked 60 s ahead with max_ahead 1 s");
    };
    assert_eq!(next_at, plus(first.at, 60_000_000));
    assert_eq!(retry_in, next_at.since(now) - Duration::from_secs(1));
    assert_eq!(in_force, limits);
    let after = l.view(&lane).await.unwrap();
    assert_eq!(
        after.next(Dimension::Requests),
        before.next(Dimension::Requests)
    );
    assert_eq!(after.last_booked, Some(first.at));
}

/// A lane's keys expire once idle, and `forget` removes them at once.
#[tokio::test]
async fn idle_lanes_expire_and_forget_removes_them() {
    let redis = Redis::new();
    let l = redis.client(Settings::default()).await;
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(60),
        ..Limits::default()
    };
    let r = booked(&l, &lane, &limits, Cost::default()).await;
    l.learn(&lane, &limits).await.unwrap();
    l.settle(&lane, &r, Cost::default()).await.unwrap();
    let mut conn = redis::Client::open(crate::support::REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("{}:*", redis.prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Schedule, learned, settled, and the requests' one-second log.
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // The schedule: 1 s ahead + 120 s idle; learned and settled: 600 s.
        assert!(ttl > 0 && ttl <= 601_000, "{key}: {ttl}");
    }
    l.forget(&lane).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(l.view(&lane).await.unwrap().last_booked, None);
}

/// A limit learned lower mid-stream: the next send waits until the
/// second before it holds no more than the new limit's share, though the
/// spacing alone would let it go one old spacing after the last.
#[tokio::test]
async fn a_lowered_limit_holds_the_window_at_once() {
    let redis = Redis::new();
    let far = Settings {
        max_ahead: Duration::from_secs(30),
        ..Settings::default()
    };
    let l = redis.client(far).await;
    let lane = lane("m");
    // 600 a minute: 100 ms apart, 10 in a second.
    let given = Limits {
        rpm: Some(600),
        ..Limits::default()
    };
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(booked(&l, &lane, &given, Cost::default()).await.at);
    }
    // 120 a minute: 2 in a second.
    let lower = Limits {
        rpm: Some(120),
        ..Limits::default()
    };
    l.learn(&lane, &lower).await.unwrap();
    let next = booked(&l, &lane, &given, Cost::default()).await;
    let n = sent.len();
    // Spacing alone: 100 ms after the last. The log: not before the third
    // from last has left the second before it.
    let expected = plus(sent[n - 1], 100_000)
        .max(plus(sent[n - 3], 1_000_000))
        .max(next.now);
    assert_eq!(next.at, expected);
    assert!(
        next.at > plus(sent[n - 1], 100_000),
        "the log did not hold it"
    );
    let in_second = (sent.iter().chain([&next.at]))
        .filter(|&&t| t <= next.at && next.at.since(t) < Duration::from_secs(1))
        .count();
    assert!(
        in_second <= 2 + 1,
        "{in_second} in the second up to {}",
        next.at
    );
}

/// The log's running count out of step with its log (a script cut short
/// by an error): the log wins, and the lane neither stalls nor bursts.
#[tokio::test]
async fn a_log_count_out_of_step_heals() {
    let redis = Redis::new();
    let l = redis.client(Settings::default()).await;
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(6_000),
        ..Limits::default()
    };
    let first = booked(&l, &lane, &limits, Cost::default()).await;
    let mut conn = redis::Client::open(crate::support::REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let state = format!("{}:{{{}}}:s", redis.prefix, lane.tag());
    let _: i64 = redis::cmd("HSET")
        .arg(&state)
        .arg("wr")
        .arg(1_000_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let second = booked(&l, &lane, &limits, Cost::default()).await;
    assert_eq!(second.at, plus(first.at, 10_000));
    let w: i64 = redis::cmd("HGET")
        .arg(&state)
        .arg("wr")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(w, 2, "the count is the log's again");
}
