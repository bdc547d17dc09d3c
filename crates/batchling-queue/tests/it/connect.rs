//! Connecting: what the messages say for each misconfiguration, and the
//! schema's version check and migration.

use batchling_queue::{Queue, QueueError, SCHEMA_VERSION};

use crate::support::{DropSchema, TestSchema, base_url, fresh_name, settings};

#[tokio::test]
async fn a_closed_port_is_refused_naming_the_address() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Queue::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Refused { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("is PostgreSQL running"), "{msg}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_malformed_url_shows_the_expected_form_and_never_the_password() {
    let pw = ["hunter", "-two"].concat();
    for url in [
        format!("postgres://u:{pw}@127.0.0.1:port/test"),
        format!("http://u:{pw}@127.0.0.1/test"),
        format!("postgres://u:{pw}@127.0.0.1/test?bogus_option=1"),
    ] {
        let e = Queue::connect(&url).await.unwrap_err();
        assert!(matches!(e, QueueError::BadUrl { .. }), "{url}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains("postgres://USER"), "{msg}");
        assert!(
            !msg.contains(&pw) && !format!("{e:?}").contains(&pw),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn a_missing_database_says_how_to_create_it() {
    let db = fresh_name();
    let e = Queue::connect(&format!("postgres://postgres@127.0.0.1:5432/{db}"))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::NoDatabase { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("createdb {db}")), "{e}");
}

#[tokio::test]
async fn an_unknown_user_is_a_credentials_error() {
    let pw = ["not", "-the-password"].concat();
    let e = Queue::connect(&format!(
        "postgres://nobody_{}:{pw}@127.0.0.1:5432/test",
        fresh_name()
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, QueueError::Auth { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("check the user and password"), "{msg}");
    assert!(!msg.contains(&pw), "{msg}");
}

#[tokio::test]
async fn the_debug_output_of_a_queue_holds_no_password() {
    let s = TestSchema::new().await;
    let pw = ["sec", "ret-x"].concat();
    let url = base_url().replace("postgres@", &format!("postgres:{pw}@"));
    // Trust auth accepts any password.
    let q = Queue::connect_with(
        batchling_queue::QueueSettings::from_url(&url)
            .unwrap()
            .with_schema(&s.name)
            .unwrap(),
    )
    .await
    .unwrap();
    let shown = format!("{q:?}");
    assert!(shown.contains(&s.name), "{shown}");
    assert!(!shown.contains(&pw), "{shown}");
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_upgrade_advice() {
    let s = TestSchema::new().await;
    s.exec("UPDATE {s}.schema_version SET version = 99").await;
    let e = Queue::connect_with(settings(&s.name)).await.unwrap_err();
    assert!(
        matches!(e, QueueError::SchemaTooNew { found: 99, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("99") && msg.contains(&SCHEMA_VERSION.to_string()),
        "{msg}"
    );
    assert!(msg.contains("upgrade batchling"), "{msg}");
}

#[tokio::test]
async fn an_older_schema_with_migrations_off_is_refused_and_untouched() {
    let name = fresh_name();
    let _guard = DropSchema(name.clone());
    let mut off = settings(&name);
    off.migrate = false;
    let e = Queue::connect_with(off).await.unwrap_err();
    assert!(
        matches!(e, QueueError::SchemaTooOld { found: 0, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("migrations are off"), "{e}");
    let client = crate::support::raw_client().await;
    let exists: Option<String> = client
        .query_one("SELECT to_regnamespace($1)::text", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, None, "nothing was created");
}

#[tokio::test]
async fn workers_starting_at_once_migrate_once() {
    let name = fresh_name();
    let _guard = DropSchema(name.clone());
    let starts = (0..4).map(|_| Queue::connect_with(settings(&name)));
    for q in futures_join_all(starts).await {
        q.expect("every worker connects");
    }
    let client = crate::support::raw_client().await;
    let rows = client
        .query(&format!("SELECT version FROM {name}.schema_version"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), SCHEMA_VERSION);
}

/// All of `futs`, run at once.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("the task ran"));
    }
    out
}
