//! Starting up: many replicas at once on one fresh database, and refusing bad configuration.

use crate::support::{Issuer, Options, Payments, TestApp, config_vars, fresh_database};
use tiqzy_runtime::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_replicas_starting_together_migrate_once_and_all_become_ready() {
    let issuer = Issuer::start().await;
    let database_url = fresh_database().await;
    let payments = Payments::start().await;
    let vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let config = Config::from_vars(&vars).expect("config");
        let issuer = Issuer::start().await;
        let payments = payments.clone();
        replicas.spawn(async move {
            TestApp::spawn_from(config, issuer, String::new(), payments).await
        });
    }
    while let Some(app) = replicas.join_next().await {
        let app = app.expect("replica started");
        assert_eq!(app.get("/readyz").await.status(), 200);
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .expect("db");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut db)
        .await
        .expect("migrations");
    assert_eq!(applied, tiqzy_runtime::db::MIGRATOR.iter().count() as i64);
}

#[test]
fn the_binary_names_the_missing_variable_and_exits() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiqzy-runtime"))
        .env_clear()
        .env("TIQZY_TENANT", "acme")
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIQZY_DISPLAY_NAME: is not set"),
        "{stderr}"
    );
}

/// The operator's DATABASE_URL says `sslmode=require` by default: the storefront must speak
/// TLS to PostgreSQL (the harness's server has it on, with a self-signed certificate).
#[tokio::test]
async fn a_database_url_that_requires_tls_is_served_over_tls() {
    let issuer = Issuer::start().await;
    let database_url = format!("{}?sslmode=require", fresh_database().await);
    let payments = Payments::start().await;
    let vars = config_vars(&database_url, &issuer, &payments, &Options::default());
    let config = Config::from_vars(&vars).expect("config");
    let app = TestApp::spawn_from(config, issuer, String::new(), payments).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&app.state.db)
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted, "the storefront's sessions are encrypted");
}
