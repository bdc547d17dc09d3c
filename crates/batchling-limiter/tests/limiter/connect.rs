use std::time::Duration;

use batchling_limiter::{Admission, Cost, Down, Error, Limiter, Limits, Settings};

use crate::support::{Proxy, REDIS, Redis, black_hole, closed_port, lane};

/// A password that must never show: built at run time.
fn password() -> String {
    format!("pw-{}-test", 4 * 1000 + 321)
}

/// Nothing listening: `Unavailable`, saying to check that Redis runs
/// there, with no password in the message or in Debug.
#[tokio::test]
async fn a_closed_port_is_unavailable_and_says_what_to_check() {
    let port = closed_port();
    let url = format!("redis://:{}@127.0.0.1:{port}", password());
    let err = Limiter::connect(&url, "bl").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Unavailable {
                why: Down::Refused,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("is Redis running on 127.0.0.1:{port}?")),
        "{msg}"
    );
    assert!(!msg.contains(&password()) && !format!("{err:?}").contains(&password()));
    assert!(err.is_unavailable());
}

/// A server that accepts and never answers: `Unavailable` after the
/// connect timeout, not a hang.
#[tokio::test]
async fn a_silent_server_is_unavailable_not_a_hang() {
    let port = black_hole().await;
    let settings = Settings {
        connect_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let url = format!("redis://127.0.0.1:{port}");
    let err = Limiter::connect_with(&url, "bl", settings)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// URLs the limiter cannot use say so, without echoing a password.
#[tokio::test]
async fn bad_urls_and_prefixes_say_what_to_fix() {
    let pw = password();
    for url in [
        "http://127.0.0.1:6379".to_owned(),
        "127.0.0.1:6379".to_owned(),
        format!("rediss://:{pw}@127.0.0.1:6379"),
        format!("redis://:{pw}@127.0.0.1:notaport"),
    ] {
        let err = Limiter::connect(&url, "bl").await.unwrap_err();
        assert!(matches!(err, Error::BadUrl { .. }), "{url}: {err:?}");
        assert!(!err.to_string().contains(&pw), "{err}");
        assert!(err.to_string().contains("redis://"), "{err}");
    }
    let err = Limiter::connect(REDIS, "a{b}").await.unwrap_err();
    assert!(matches!(err, Error::BadPrefix { .. }), "{err:?}");
}

/// Credentials Redis refuses: `Auth`, naming what to check, not the
/// password.
#[tokio::test]
async fn refused_credentials_are_an_auth_error() {
    let url = format!("redis://nobody-test:{}@127.0.0.1:6379", password());
    let err = Limiter::connect(&url, "bl").await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("user and password"), "{msg}");
    assert!(!msg.contains(&password()) && !format!("{err:?}").contains(&password()));
}

/// A blip mid-run (the connection stalls, as in a partition): the call
/// fails as `Unavailable` within the call timeout; once Redis answers
/// again, so does the limiter.
#[tokio::test]
async fn a_blip_is_reported_as_unavailable_and_passes() {
    let redis = Redis::new();
    let proxy = Proxy::start().await;
    let l = match Limiter::connect_with(&proxy.url(), &redis.prefix, Settings::default()).await {
        Ok(l) => l,
        Err(e) => panic!("through the proxy to 127.0.0.1:6379: {e}"),
    };
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(6_000),
        ..Limits::default()
    };
    let first = l.reserve(&lane, &limits, Cost::default()).await.unwrap();
    assert!(matches!(first, Admission::Send(_)));

    proxy.stall(true);
    let err = l
        .reserve(&lane, &limits, Cost::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { why: Down::TimedOut(t), .. } if *t == Duration::from_millis(250)),
        "{err:?}"
    );
    proxy.stall(false);
    assert!(matches!(
        answered_again(&l, &lane, &limits).await,
        Admission::Send(_)
    ));
}

/// The connection dropped under it (Redis restarted, a proxy failed):
/// calls fail as `Unavailable` at most until it has reconnected by itself.
#[tokio::test]
async fn a_dropped_connection_reconnects() {
    let redis = Redis::new();
    let proxy = Proxy::start().await;
    let l = match Limiter::connect_with(&proxy.url(), &redis.prefix, Settings::default()).await {
        Ok(l) => l,
        Err(e) => panic!("through the proxy to 127.0.0.1:6379: {e}"),
    };
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(6_000),
        ..Limits::default()
    };
    let first = l.reserve(&lane, &limits, Cost::default()).await.unwrap();
    assert!(matches!(first, Admission::Send(_)));
    for _ in 0..3 {
        proxy.sever();
        assert!(matches!(
            answered_again(&l, &lane, &limits).await,
            Admission::Send(_)
        ));
    }
}

/// Scripts and state lost (a Redis restart without persistence): the
/// scripts are loaded again by themselves, and an empty lane starts at
/// Redis's now, which is safe.
#[tokio::test]
async fn a_restart_that_loses_scripts_and_state_is_safe() {
    let redis = Redis::new();
    let l = redis.client(Settings::default()).await;
    let lane = lane("m");
    let limits = Limits {
        rpm: Some(1),
        ..Limits::default()
    };
    assert!(matches!(
        l.reserve(&lane, &limits, Cost::default()).await.unwrap(),
        Admission::Send(_)
    ));
    let mut conn = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    l.forget(&lane).await.unwrap();
    let Admission::Send(r) = l.reserve(&lane, &limits, Cost::default()).await.unwrap() else {
        panic!("an empty lane refused");
    };
    assert_eq!(r.at, r.now);
    assert_eq!(r.seq, 1);
}

/// Reserve until Redis answers again (a blip passing), at most 2 s.
async fn answered_again(l: &Limiter, lane: &batchling_limiter::Lane, limits: &Limits) -> Admission {
    for _ in 0..40 {
        match l.reserve(lane, limits, Cost::default()).await {
            Ok(a) => return a,
            Err(e) if e.is_unavailable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the limiter did not come back");
}
