//! The operator killed (SIGKILL) in the middle of provisioning a tenant's database: the next
//! replica converges with working credentials, no lost password and no second role.
//!
//! The operator writes the credentials Secret before it creates the role, so the window the
//! design has to survive is "Secret written, role missing or half made". The kills land at
//! the moments that matter, observed from outside: right after the Secret appears, right
//! after the role appears, right after the database appears, and at fixed delays.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use tiqzy_e2e::{Harness, OperatorProcess, Service};

mod common;
use common::{create_tenant, is_ready, wait_for};

/// When to kill the operator while it provisions one tenant.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as the tenant's database Secret exists.
    SecretWritten,
    /// As soon as the tenant's role exists in PostgreSQL.
    RoleCreated,
    /// As soon as the tenant's database exists.
    DatabaseCreated,
    /// A fixed time after the Tenant was created.
    After(Duration),
}

async fn admin_db(h: &Harness) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await
            .expect("admin connection");
    tokio::spawn(connection);
    client
}

async fn count(db: &tokio_postgres::Client, sql: &str, name: &str) -> i64 {
    db.query_one(sql, &[&name])
        .await
        .expect("catalog query")
        .get(0)
}

async fn roles(db: &tokio_postgres::Client, role: &str) -> i64 {
    count(db, "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).await
}

async fn databases(db: &tokio_postgres::Client, database: &str) -> i64 {
    count(
        db,
        "SELECT count(*) FROM pg_database WHERE datname = $1",
        database,
    )
    .await
}

async fn secret_exists(client: &kube::Client, namespace: &str) -> bool {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt("storefront-database")
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Waits for `point` (polling every few milliseconds), then kills the operator. Returns what
/// existed at the moment of the kill.
async fn kill_at(
    point: KillPoint,
    operator: &mut Service,
    client: &kube::Client,
    db: &tokio_postgres::Client,
    tenant: &str,
) -> String {
    let namespace = format!("tiqzy-{tenant}");
    let name = format!("tiqzy_{}", tenant.replace('-', "_"));
    let started = Instant::now();
    loop {
        let reached = match point {
            KillPoint::SecretWritten => secret_exists(client, &namespace).await,
            KillPoint::RoleCreated => roles(db, &name).await > 0,
            KillPoint::DatabaseCreated => databases(db, &name).await > 0,
            KillPoint::After(delay) => started.elapsed() >= delay,
        };
        if reached || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    operator.kill();
    format!(
        "secret={} role={} database={}",
        secret_exists(client, &namespace).await,
        roles(db, &name).await,
        databases(db, &name).await
    )
}

#[tokio::test]
async fn killing_the_operator_mid_provisioning_converges_with_working_credentials() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("install");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let db = admin_db(h).await;
    let start = |generation: usize| {
        let mut process = OperatorProcess::new(binary, &kubeconfig, &format!("crash-{generation}"));
        // A killed leader keeps its Lease until it expires: keep the test short.
        process.args.push("--lease-seconds=2".to_owned());
        process.start(h).expect("start operator")
    };

    let points = [
        KillPoint::SecretWritten,
        KillPoint::RoleCreated,
        KillPoint::DatabaseCreated,
        KillPoint::After(Duration::from_millis(150)),
        KillPoint::After(Duration::from_millis(2500)),
    ];
    let mut operator = start(0);
    let mut tenants = Vec::new();
    for (i, point) in points.into_iter().enumerate() {
        let tenant = format!("crash-{i}");
        create_tenant(
            &client,
            &tenant,
            json!({ "displayName": "Crash", "currency": "EUR" }),
        )
        .await;
        let seen = kill_at(point, &mut operator, &client, &db, &tenant).await;
        println!("{tenant}: killed at {point:?} with {seen}");
        operator = start(i + 1);
        tenants.push(tenant);
    }

    for tenant in &tenants {
        wait_for(&client, tenant, "Ready after the crash", is_ready).await;
        let name = format!("tiqzy_{}", tenant.replace('-', "_"));
        assert_eq!(roles(&db, &name).await, 1, "{tenant}: exactly one role");
        assert_eq!(
            databases(&db, &name).await,
            1,
            "{tenant}: exactly one database"
        );
        // The password in the Secret is the role's password: the storefront can log in.
        let data = Api::<Secret>::namespaced(client.clone(), &format!("tiqzy-{tenant}"))
            .get("storefront-database")
            .await
            .expect("database secret")
            .data
            .expect("data");
        let url = String::from_utf8(data["DATABASE_URL"].0.clone()).expect("utf8");
        let (tenant_db, connection) =
            tokio_postgres::connect(&url.replace("?sslmode=disable", ""), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("{tenant}: the Secret's credentials must work: {e}"));
        tokio::spawn(connection);
        let row = tenant_db
            .query_one("SELECT current_user, current_database()", &[])
            .await
            .expect("query as the tenant");
        assert_eq!(row.get::<_, String>(0), name);
        assert_eq!(row.get::<_, String>(1), name);
    }
    drop(operator);
}
