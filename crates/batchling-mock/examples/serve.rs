//! Run the mock standalone until Ctrl-C (a stand-in for `batchling mock`).
//!
//! `cargo run --release -p batchling-mock --example serve -- [ADDR] [RPM] [TPM] [THREADS]`
//!
//! RPM/TPM `-` = unlimited; THREADS 0 = a current-thread runtime (default 2).

// An example sees every dependency of its package and uses a few; it prints its
// results.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use batchling_mock::{MockConfig, MockServer};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let rpm = args.next().and_then(|s| s.parse().ok());
    let tpm = args.next().and_then(|s| s.parse().ok());
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(addr, rpm, tpm))
}

async fn serve(addr: String, rpm: Option<u64>, tpm: Option<u64>) -> std::io::Result<()> {
    let config = MockConfig {
        rpm,
        tpm,
        ..MockConfig::default()
    };
    let server = MockServer::start(config, addr.parse().expect("ADDR")).await?;
    println!("mock listening on {}", server.base_url());
    tokio::signal::ctrl_c().await?;
    println!("{:?}", server.stats());
    server.shutdown().await;
    Ok(())
}
