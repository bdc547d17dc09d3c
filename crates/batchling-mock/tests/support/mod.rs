//! What every test of the fake provider over real HTTP starts with.

use batchling_mock::{MockConfig, MockServer};

/// A fake provider on a free loopback port.
pub(crate) async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("mock starts")
}

/// A plain-HTTP client. reqwest is built without a default TLS provider;
/// plain HTTP still needs one installed.
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}
