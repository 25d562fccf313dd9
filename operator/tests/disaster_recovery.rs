//! Disaster recovery (docs/disaster-recovery.md): the whole control plane stops, etcd's data
//! is thrown away and a fresh, empty control plane starts; PostgreSQL and Redis keep running
//! with their data. The administrator installs the operator and re-applies what the runbook
//! saved (`kubectl get -o yaml` of the Platform and the Tenants: not their signing Secrets).
//!
//! Every tenant comes back Ready on the database it had, with its rows; its database and
//! cache passwords are new (the old ones no longer log in), its ticket-signing key is the one
//! it had (the operator keeps a copy in the tenant's database), and no role, database or Redis user exists that no tenant (or the payments
//! service) owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_e2e::{Harness, OperatorProcess, Service, disaster};

mod common;
use common::{create_tenant, is_ready, wait_for};

const TENANTS: [&str; 3] = ["dr-one", "dr-two", "dr-three"];

/// What a tenant holds in Kubernetes that the storefront uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    pg_password: String,
    redis_password: String,
    signing_key: String,
}

fn role(tenant: &str) -> String {
    format!("tiqzy_{}", tenant.replace('-', "_"))
}

fn acl_user(tenant: &str) -> String {
    format!("tiqzy-{tenant}")
}

async fn secret(client: &kube::Client, tenant: &str, name: &str, key: &str) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), &format!("tiqzy-{tenant}"))
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{tenant}: Secret {name}: {e}"));
    let data = secret.data.unwrap_or_default();
    let value = data
        .get(key)
        .unwrap_or_else(|| panic!("{tenant}: Secret {name} has no {key}"));
    String::from_utf8(value.0.clone()).expect("utf8")
}

async fn credentials(client: &kube::Client, tenant: &str) -> Credentials {
    Credentials {
        pg_password: secret(client, tenant, "storefront-database", "PGPASSWORD").await,
        redis_password: secret(client, tenant, "storefront-cache", "REDIS_PASSWORD").await,
        signing_key: secret(
            client,
            tenant,
            "storefront-signing",
            "TIQZY_TICKET_SIGNING_KEY",
        )
        .await,
    }
}

/// A session as the tenant's own role with `password`.
async fn tenant_db(
    h: &Harness,
    tenant: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&h.postgres.host)
        .port(h.postgres.port)
        .user(role(tenant))
        .password(password)
        .dbname(role(tenant))
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn admin_db(h: &Harness) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await
            .expect("admin connection");
    tokio::spawn(connection);
    client
}

/// The cache as the tenant's own user with `password`.
async fn tenant_cache(
    h: &Harness,
    tenant: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = format!(
        "redis://{}:{password}@{}:{}/",
        acl_user(tenant),
        h.redis.host,
        h.redis.port
    );
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    // The handshake may be lazy: a command proves the login.
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await?;
    Ok(connection)
}

/// Names of every role, database and Redis user on the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoreNames {
    roles: BTreeSet<String>,
    databases: BTreeSet<String>,
    acl_users: BTreeSet<String>,
}

async fn store_names(h: &Harness, admin: &tokio_postgres::Client) -> StoreNames {
    let names = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get(0)).collect();
    let roles = names(
        admin
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .expect("roles"),
    );
    let databases = names(
        admin
            .query("SELECT datname::text FROM pg_database", &[])
            .await
            .expect("databases"),
    );
    let client = redis::Client::open(h.redis.admin_url()).expect("redis admin client");
    let mut redis_admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis admin");
    let acl_users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis_admin)
        .await
        .expect("ACL USERS");
    StoreNames {
        roles,
        databases,
        acl_users: acl_users.into_iter().collect(),
    }
}

/// `baseline` plus one role and database per tenant and the payments service's, and one
/// Redis user per tenant: anything else would be a duplicate or an orphan.
fn expected_names(baseline: &StoreNames) -> StoreNames {
    let mut expected = baseline.clone();
    for name in TENANTS
        .map(role)
        .into_iter()
        .chain(["tiqzy_payments".into()])
    {
        expected.roles.insert(name.clone());
        expected.databases.insert(name);
    }
    expected.acl_users.extend(TENANTS.map(acl_user));
    expected
}

/// Polls until the servers hold exactly `expected` (60 s at most).
async fn wait_for_names(h: &Harness, admin: &tokio_postgres::Client, expected: &StoreNames) {
    let mut last = None;
    for _ in 0..600 {
        let names = store_names(h, admin).await;
        if &names == expected {
            return;
        }
        last = Some(names);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the servers never held exactly {expected:#?}; last: {last:#?}");
}

fn start_operator(h: &Harness, kubeconfig: &Path, identity: &str) -> Service {
    let binary = Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut process = OperatorProcess::new(binary, kubeconfig, identity);
    process.args.push("--lease-seconds=4".to_owned());
    process.start(h).expect("start operator")
}

#[tokio::test]
async fn a_wiped_control_plane_is_rebuilt_onto_the_retained_databases() {
    // A platform of its own: this test throws its control plane away.
    let mut h = Harness::start().await.expect("the local platform");
    let admin = admin_db(&h).await;
    let baseline = store_names(&h, &admin).await;
    let expected = expected_names(&baseline);

    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await.expect("install");
    let mut operator = start_operator(&h, &kubeconfig, "before");
    let client = h.kube.client().await.expect("client");
    for tenant in TENANTS {
        create_tenant(
            &client,
            tenant,
            json!({ "displayName": tenant, "currency": "EUR" }),
        )
        .await;
    }
    let mut before = BTreeMap::new();
    let mut database_oids = BTreeMap::new();
    for tenant in TENANTS {
        wait_for(&client, tenant, "Ready", is_ready).await;
        let credentials = credentials(&client, tenant).await;
        // The tenant's own data, written with its own credentials.
        let db = tenant_db(&h, tenant, &credentials.pg_password)
            .await
            .unwrap_or_else(|e| panic!("{tenant}: the Secret's password logs in: {e}"));
        db.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, buyer text NOT NULL)")
            .await
            .expect("create table");
        db.execute(
            "INSERT INTO orders VALUES (1, $1), (2, 'second buyer')",
            &[&format!("buyer of {tenant}")],
        )
        .await
        .expect("insert");
        let oid: u32 = admin
            .query_one(
                "SELECT oid FROM pg_database WHERE datname = $1",
                &[&role(tenant)],
            )
            .await
            .expect("database oid")
            .get(0);
        database_oids.insert(tenant, oid);
        let mut cache = tenant_cache(&h, tenant, &credentials.redis_password)
            .await
            .unwrap_or_else(|e| panic!("{tenant}: the Secret's cache password logs in: {e}"));
        redis::cmd("SET")
            .arg(format!("t:{tenant}:probe"))
            .arg("cached before the disaster")
            .query_async::<()>(&mut cache)
            .await
            .expect("SET");
        before.insert(tenant, credentials);
    }
    wait_for_names(&h, &admin, &expected).await;

    // What the runbook saves regularly: the Platform and the Tenants, no Secret.
    let saved = disaster::save(&h.kube, &h.dir.join("dr-backup")).expect("kubectl get -o yaml");

    // The disaster: the operator and the whole control plane stop, etcd's data is gone.
    operator.stop();
    h.kube.restart_wiped().await.expect("a fresh control plane");
    let client = h.kube.client().await.expect("client");
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces");
    assert!(
        namespaces.items.iter().all(|ns| !ns
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("tiqzy-")),
        "the fresh control plane knows nothing of the old one"
    );

    // The restore: install the operator, re-apply what was saved.
    let kubeconfig = tiqzy_e2e::install_tiqzy_without_platform(&h)
        .await
        .expect("install the operator");
    let operator = start_operator(&h, &kubeconfig, "after");
    let restoring = Instant::now();
    disaster::restore(&h.kube, &saved).expect("kubectl apply of what was saved");
    for tenant in TENANTS {
        wait_for(&client, tenant, "Ready after the restore", is_ready).await;
    }
    println!(
        "{} tenants Ready {:.1?} after the saved manifests were applied",
        TENANTS.len(),
        restoring.elapsed()
    );

    for tenant in TENANTS {
        let old = &before[tenant];
        let new = credentials(&client, tenant).await;
        assert_ne!(
            new.pg_password, old.pg_password,
            "{tenant}: a new database password"
        );
        assert_ne!(
            new.redis_password, old.redis_password,
            "{tenant}: a new cache password"
        );
        // Compared without printing: a failure must not show key material.
        assert!(
            new.signing_key == old.signing_key,
            "{tenant}: the signing key comes back from the tenant's database, so sold tickets still verify"
        );

        // The database password rotated: the old one is refused, the new one reads the rows.
        let refused = tenant_db(&h, tenant, &old.pg_password).await;
        let code = refused.as_ref().err().and_then(|e| e.code()).cloned();
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{tenant}: the old database password must not log in"
        );
        let db = tenant_db(&h, tenant, &new.pg_password)
            .await
            .unwrap_or_else(|e| panic!("{tenant}: the new Secret's password logs in: {e}"));
        let buyers: Vec<String> = db
            .query("SELECT buyer FROM orders ORDER BY id", &[])
            .await
            .unwrap_or_else(|e| panic!("{tenant}: its data is still there: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            buyers,
            [format!("buyer of {tenant}"), "second buyer".into()]
        );
        let oid: u32 = admin
            .query_one(
                "SELECT oid FROM pg_database WHERE datname = $1",
                &[&role(tenant)],
            )
            .await
            .expect("database oid")
            .get(0);
        assert_eq!(
            oid, database_oids[tenant],
            "{tenant}: the same database, not a new one"
        );

        // Likewise the cache user.
        assert!(
            tenant_cache(&h, tenant, &old.redis_password).await.is_err(),
            "{tenant}: the old cache password must not log in"
        );
        let mut cache = tenant_cache(&h, tenant, &new.redis_password)
            .await
            .unwrap_or_else(|e| panic!("{tenant}: the new cache password logs in: {e}"));
        let cached: Option<String> = redis::cmd("GET")
            .arg(format!("t:{tenant}:probe"))
            .query_async(&mut cache)
            .await
            .expect("GET");
        assert_eq!(cached.as_deref(), Some("cached before the disaster"));
    }

    // Exactly one role, database and cache user per tenant (and the payments service's): no
    // duplicate, no orphan.
    assert_eq!(store_names(&h, &admin).await, expected);

    // Without a disaster: the copy follows a rotation, the tenant role cannot read it, and a
    // lost signing Secret alone comes back from it.
    let tenant = TENANTS[0];
    let signing = Api::<Secret>::namespaced(client.clone(), &format!("tiqzy-{tenant}"));
    let current = credentials(&client, tenant).await;
    let rotated = format!("{},{}", "rotatedKey".repeat(7), current.signing_key);
    signing
        .patch(
            "storefront-signing",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "TIQZY_TICKET_SIGNING_KEY": rotated } })),
        )
        .await
        .expect("rotate: prepend a key");
    wait_until(&format!("{tenant}: the rotated keys saved"), || async {
        saved_keys(&h, tenant).await.as_deref() == Some(rotated.as_str())
    })
    .await;
    let db = tenant_db(&h, tenant, &current.pg_password)
        .await
        .expect("the tenant role logs in");
    let read = db
        .query("SELECT keys FROM tiqzy_operator.signing_keys", &[])
        .await;
    assert_eq!(
        read.err().and_then(|e| e.code().cloned()),
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{tenant}: the tenant role cannot read the operator's copy"
    );
    signing
        .delete("storefront-signing", &Default::default())
        .await
        .expect("delete the signing Secret");
    wait_until(
        &format!("{tenant}: the signing Secret recreated"),
        || async {
            let Ok(Some(secret)) = signing.get_opt("storefront-signing").await else {
                return false;
            };
            let data = secret.data.unwrap_or_default();
            data.get("TIQZY_TICKET_SIGNING_KEY")
                .is_some_and(|v| v.0 == rotated.as_bytes())
        },
    )
    .await;
    drop(operator);
}

/// The signing keys the operator saved in `tenant`'s database, read as the admin.
async fn saved_keys(h: &Harness, tenant: &str) -> Option<String> {
    let (client, connection) = tokio_postgres::connect(
        &h.postgres.admin_config(&role(tenant)),
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin connection to the tenant's database");
    tokio::spawn(connection);
    client
        .query_opt("SELECT keys FROM tiqzy_operator.signing_keys", &[])
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

/// Polls `check` until it holds (60 s at most).
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}
