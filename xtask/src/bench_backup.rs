//! `cargo xtask bench backup --tickets N`: a tenant with N sold tickets (the runtime's schema,
//! its holds, orders, some listings and check-ins) backed up by the release operator to
//! azurite, then restored into a new tenant. Times are end to end through the operator: from
//! the `tiqzy.io/backup-now` annotation to `status.backup` naming the backup, and from
//! creating the clone Tenant to its `status.restoredFrom` (which includes creating its
//! namespace, role and database, well under a second).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::Digest;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::azurite::{AZURITE_ACCOUNT, AZURITE_KEY};
use tiqzy_e2e::{Azurite, Harness, OperatorProcess};

pub async fn backup(tickets: u32, operator_binary: &std::path::Path) -> Result<()> {
    let h = Harness::start().await?;
    let azurite = Azurite::start(&h.dir).await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let client = h.kube.client().await?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "backup-storage" },
        "stringData": { "accountName": AZURITE_ACCOUNT, "accountKey": AZURITE_KEY }
    }))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "tiqzy-system")
        .patch(
            "backup-storage",
            &PatchParams::apply("bench"),
            &Patch::Apply(&secret),
        )
        .await?;
    let patch = json!({ "spec": { "backup": {
        "accountUrl": azurite.blob_endpoint(), "container": "bench",
        "auth": { "method": "SharedKey",
                  "sharedKeySecretRef": { "namespace": "tiqzy-system", "name": "backup-storage" } }
    } } });
    Api::<Platform>::all(client.clone())
        .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let mut process = OperatorProcess::new(operator_binary, &kubeconfig, "bench");
    process.args = vec![
        "--resync-seconds=30".to_owned(),
        "--log-format=json".to_owned(),
    ];
    let _operator = process.start(&h)?;
    let api: Api<Tenant> = Api::all(client.clone());

    create(
        &api,
        "bench-source",
        json!({ "displayName": "Source", "currency": "EUR", "cache": { "mode": "Disabled" },
                "backup": { "schedule": "0 3 * * *", "retention": { "count": 3 } } }),
    )
    .await?;
    wait(&api, "bench-source", |t| ready(t, "DatabaseReady")).await?;
    let database = "tiqzy_bench_source";
    let (db, connection) =
        tokio_postgres::connect(&h.postgres.admin_url(database), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    db.batch_execute(&format!("SET ROLE {database}")).await?;
    migrate(&db).await?;
    let seeding = Instant::now();
    db.batch_execute(&seed_sql(tickets)).await?;
    eprintln!(
        "bench: {tickets} tickets seeded in {:.1?}",
        seeding.elapsed()
    );

    let started = Instant::now();
    let patch = json!({ "metadata": { "annotations": { "tiqzy.io/backup-now": "bench" } } });
    api.patch(
        "bench-source",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let source = wait(&api, "bench-source", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_some_and(|b| b.last_request.as_deref() == Some("bench"))
    })
    .await?;
    let backup_s = started.elapsed().as_secs_f64();
    let size = source
        .status
        .and_then(|s| s.backup)
        .and_then(|b| b.last_backup)
        .context("no last backup")?
        .size_bytes;

    let started = Instant::now();
    create(
        &api,
        "bench-clone",
        json!({ "displayName": "Clone", "currency": "EUR", "cache": { "mode": "Disabled" },
                "restoreFrom": { "tenant": "bench-source", "backup": "latest" } }),
    )
    .await?;
    wait(&api, "bench-clone", |t| {
        t.status.as_ref().is_some_and(|s| s.restored_from.is_some())
    })
    .await?;
    let restore_s = started.elapsed().as_secs_f64();
    let size_mib = size as f64 / (1024.0 * 1024.0);
    println!(
        "backup-bench tickets={tickets} backup_s={backup_s:.2} restore_s={restore_s:.2} size_mib={size_mib:.1}"
    );
    Ok(())
}

async fn create(api: &Api<Tenant>, name: &str, spec: serde_json::Value) -> Result<()> {
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name }, "spec": spec
    }))?;
    api.create(&PostParams::default(), &tenant).await?;
    Ok(())
}

fn ready(t: &Tenant, type_: &str) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

async fn wait(api: &Api<Tenant>, name: &str, done: impl Fn(&Tenant) -> bool) -> Result<Tenant> {
    let started = Instant::now();
    loop {
        if let Some(t) = api.get_opt(name).await? {
            if done(&t) {
                return Ok(t);
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!("{name} never got there: {:?}", t.status);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The runtime's migrations, applied and recorded as sqlx applies them.
async fn migrate(db: &tokio_postgres::Client) -> Result<()> {
    let dir = crate::workspace_root().join("tenant-runtime/migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    db.batch_execute(
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
         checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
    )
    .await?;
    for path in files {
        let sql = std::fs::read_to_string(&path)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?;
        let (version, description) = stem.split_once('_').context("<version>_<name>.sql")?;
        let version: i64 = version.parse()?;
        db.batch_execute(&sql).await?;
        let checksum = sha2::Sha384::digest(sql.as_bytes()).to_vec();
        db.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, true, $3, 0)",
            &[&version, &description.replace('_', " "), &checksum],
        )
        .await?;
    }
    Ok(())
}

/// The same rows as operator/tests/backup.rs seeds: `n` tickets.
fn seed_sql(n: u32) -> String {
    format!(
        "INSERT INTO events (id, slug, title, venue, starts_at, ends_at) VALUES \
           ('00000000-0000-0000-0000-000000000001', 'gig', 'Gig', 'Hall', \
            now() + interval '10 days', now() + interval '11 days');
         INSERT INTO ticket_types (id, event_id, name, price_minor, currency, capacity, sold, \
            per_order_limit, sales_start, sales_end) VALUES \
           ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'GA', \
            2500, 'EUR', {n}, {n}, 10, now() - interval '1 day', now() + interval '9 days');
         INSERT INTO holds (id, basket_id, ticket_type_id, quantity, state, expires_at) \
           SELECT md5('h' || i)::uuid, md5('h' || i)::uuid, '00000000-0000-0000-0000-000000000002', \
                  1, 'converted', now() FROM generate_series(1, {n}) i;
         INSERT INTO orders (id, kind, state, buyer_email, access_token, hold_id, total_minor, \
            currency, paid_at) \
           SELECT md5('o' || i)::uuid, 'primary', 'paid', 'fan' || i || '@example.com', 'oat-' || i, \
                  md5('h' || i)::uuid, 2500, 'EUR', now() FROM generate_series(1, {n}) i;
         INSERT INTO tickets (id, ticket_type_id, holder_email, access_token, order_id) \
           SELECT md5('t' || i)::uuid, '00000000-0000-0000-0000-000000000002', \
                  'fan' || i || '@example.com', 'tat-' || i, md5('o' || i)::uuid \
           FROM generate_series(1, {n}) i;
         INSERT INTO listings (id, ticket_id, price_minor, currency, ticket_epoch, seller_order_id) \
           SELECT md5('l' || i)::uuid, md5('t' || i)::uuid, 2600, 'EUR', 0, md5('o' || i)::uuid \
           FROM generate_series(1, greatest({n} / 10, 1)) i;
         INSERT INTO check_ins (ticket_id, epoch, gate) \
           SELECT md5('t' || i)::uuid, 0, 'north' FROM generate_series({n} / 2, {n} / 2 + {n} / 10) i;"
    )
}
