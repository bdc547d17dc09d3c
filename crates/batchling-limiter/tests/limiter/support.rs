//! A real Redis per test run: each fixture has its own random key prefix
//! and deletes its keys when dropped, a failing test's too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batchling_limiter::{Lane, Limiter, Settings};
use redis::Commands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";

const START_IT: &str = "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no";

/// One test's keys in the shared Redis.
pub(crate) struct Redis {
    pub(crate) prefix: String,
}

impl Redis {
    pub(crate) fn new() -> Redis {
        Redis {
            prefix: format!("bltest:{:016x}", rand::random::<u64>()),
        }
    }

    /// A limiter on this fixture's prefix: one process of a fleet. Fails
    /// the test, saying how to start Redis, when it is not reachable.
    pub(crate) async fn client(&self, settings: Settings) -> Limiter {
        match Limiter::connect_with(REDIS, &self.prefix, settings).await {
            Ok(l) => l,
            Err(e) => panic!("these tests need a Redis on 127.0.0.1:6379 ({e}); {START_IT}"),
        }
    }

    /// `n` limiters, as `n` processes sharing the budget.
    pub(crate) async fn clients(&self, n: usize, settings: &Settings) -> Vec<Limiter> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.client(settings.clone()).await);
        }
        out
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Synchronous, so it runs while a failed test unwinds too.
        let pattern = format!("{}:*", self.prefix);
        let Ok(mut conn) = redis::Client::open(REDIS).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = match conn.scan_match::<_, String>(&pattern) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = conn.del(&keys);
        }
    }
}

/// A lane of its own upstream (a random digest).
pub(crate) fn lane(model: &str) -> Lane {
    let upstream = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    Lane::new(&upstream, "default", Some(model)).unwrap()
}

/// A local port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A TCP proxy to Redis that the test can stall: while stalled, bytes
/// are held, as in a partition.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    stalled: Arc<AtomicBool>,
    /// Bumped to close every connection through the proxy.
    sever: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let (sever, severed) = tokio::sync::watch::channel(0);
        let s = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect("127.0.0.1:6379").await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pump(cr, uw, s.clone(), severed.clone()));
                tokio::spawn(pump(ur, cw, s.clone(), severed.clone()));
            }
        });
        Proxy {
            port,
            stalled,
            sever,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }

    /// Close every connection made through it so far.
    pub(crate) fn sever(&self) {
        self.sever.send_modify(|g| *g += 1);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    mut severed: tokio::sync::watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    severed.mark_unchanged();
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = severed.changed() => return,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A listener that accepts and never answers.
pub(crate) async fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    port
}
