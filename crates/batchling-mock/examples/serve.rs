//! Run the mock standalone until Ctrl-C (a stand-in for `batchling mock`).
//!
//! `cargo run --release -p batchling-mock --example serve -- [ADDR] [RPM] [TPM]`

use batchling_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let rpm = args.next().and_then(|s| s.parse().ok());
    let tpm = args.next().and_then(|s| s.parse().ok());
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
