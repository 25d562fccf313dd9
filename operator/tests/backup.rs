//! Backups to Azure Blob Storage and restores, end to end: the operator binary against the
//! harness's control plane and PostgreSQL, and azurite (Microsoft's Blob emulator) reached with
//! Shared Key signing. Tenant databases get the runtime's real schema (its sqlx migrations) and
//! rows in every sales table.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::Digest;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::azurite::{AZURITE_ACCOUNT, AZURITE_KEY};
use tiqzy_e2e::{Azurite, Harness, OperatorProcess};
use tiqzy_operator::backup;
use tiqzy_operator::external::blob::{BlobAuth, Container};
use tokio::sync::RwLock;

mod common;
use common::{condition, create_tenant, eventually_events, is_ready, wait_for};

const CONTAINER: &str = "tiqzy-backups";

/// The operator process and this binary's own azurite: the outage test stops it, so it takes
/// the lock for writing while every other test holds it for reading.
struct Installed {
    _operator: tiqzy_e2e::Service,
    operator: OperatorProcess,
    azurite: RwLock<Azurite>,
    endpoint: String,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let h = Harness::shared();
    let azurite = Azurite::start(&h.dir.join("backup-tests")).await?;
    let endpoint = azurite.blob_endpoint();
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let admin = h.kube.client().await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "backup-storage" },
        "stringData": { "accountName": AZURITE_ACCOUNT, "accountKey": AZURITE_KEY }
    }))?;
    Api::<Secret>::namespaced(admin.clone(), "tiqzy-system")
        .patch(
            "backup-storage",
            &PatchParams::apply("tiqzy-e2e-backup"),
            &Patch::Apply(&secret),
        )
        .await?;
    let patch = json!({ "spec": { "backup": {
        "accountUrl": endpoint, "container": CONTAINER,
        "auth": { "method": "SharedKey",
                  "sharedKeySecretRef": { "namespace": "tiqzy-system", "name": "backup-storage" } }
    } } });
    Api::<Platform>::all(admin)
        .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-backup");
    operator.args.push("--resync-seconds=3".to_owned());
    let process = operator.start(h)?;
    Ok(Installed {
        _operator: process,
        operator,
        azurite: RwLock::new(azurite),
        endpoint,
    })
}

async fn admin() -> kube::Client {
    installed();
    Harness::shared().kube.client().await.expect("client")
}

/// The test's own client of the backup container (the same key the operator has).
fn container() -> Container {
    let auth = BlobAuth::SharedKey {
        account: AZURITE_ACCOUNT.to_owned(),
        key: base64_decode(AZURITE_KEY),
    };
    Container::new(&installed().endpoint, CONTAINER, auth).expect("container")
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// An admin session in `tenant`'s database.
async fn database(tenant: &str) -> tokio_postgres::Client {
    let name = format!("tiqzy_{}", tenant.replace('-', "_"));
    let url = Harness::shared().postgres.admin_url(&name);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the tenant database");
    tokio::spawn(connection);
    client
}

/// The storefront's own connection URL (its role, its password), from its Secret.
async fn storefront_url(tenant: &str) -> String {
    let client = Harness::shared().kube.client().await.expect("client");
    let secret = Api::<Secret>::namespaced(client, &format!("tiqzy-{tenant}"))
        .get("storefront-database")
        .await
        .expect("database secret");
    let data = secret.data.expect("data");
    String::from_utf8(data["DATABASE_URL"].0.clone()).expect("utf8")
}

/// The runtime's schema, applied as the storefront applies it (its migrator, its role), and
/// `tickets` sold tickets with their holds and orders, some listed for resale, some checked in.
async fn seed(tenant: &str, tickets: u32) {
    let pool =
        tiqzy_runtime::db::connect(&storefront_url(tenant).await, 1, Duration::from_secs(10))
            .await
            .expect("pool");
    tiqzy_runtime::db::migrate(&pool).await.expect("migrations");
    pool.close().await;
    let name = format!("tiqzy_{}", tenant.replace('-', "_"));
    let db = database(tenant).await;
    db.batch_execute(&format!("SET ROLE {name}"))
        .await
        .expect("set role");
    db.batch_execute(&seed_sql(tickets)).await.expect("seed");
}

/// Rows in every sales table; `n` tickets.
fn seed_sql(n: u32) -> String {
    format!(
        "INSERT INTO events (id, slug, title, venue, starts_at, ends_at) VALUES \
           ('00000000-0000-0000-0000-000000000001', 'gig', 'Gig ''Late''\\n\\t\u{e9}', 'Hall', \
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

/// Every row of every table of the `public` schema, as JSON text, sorted, by table.
async fn contents(tenant: &str) -> BTreeMap<String, Vec<String>> {
    let db = database(tenant).await;
    let tables = db
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("tables");
    let mut all = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let sql = format!("SELECT to_jsonb(t)::text FROM public.\"{table}\" t ORDER BY 1");
        let rows = db.query(&sql, &[]).await.expect("rows");
        all.insert(table, rows.iter().map(|r| r.get(0)).collect());
    }
    all
}

/// Asks for a backup by annotation and waits until the status shows it done.
async fn back_up_now(client: &kube::Client, tenant: &str, request: &str) -> Tenant {
    let patch = json!({ "metadata": { "annotations": { "tiqzy.io/backup-now": request } } });
    Api::<Tenant>::all(client.clone())
        .patch(tenant, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    wait_for(client, tenant, "backed up", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_some_and(|b| b.last_request.as_deref() == Some(request))
    })
    .await
}

fn last_backup(t: &Tenant) -> tiqzy_crds::BackupRecord {
    t.status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_backup.clone())
        .expect("a last backup")
}

async fn blob_bytes(container: &Container, blob: &str) -> Vec<u8> {
    container
        .get(blob)
        .await
        .expect("get blob")
        .bytes()
        .await
        .expect("blob bytes")
        .to_vec()
}

/// Writes `content` as a committed blob with `metadata`, as the operator would.
async fn upload(container: &Container, blob: &str, content: &[u8], metadata: &[(&str, String)]) {
    use base64::Engine;
    let id = base64::engine::general_purpose::STANDARD.encode("blk-00000000");
    container
        .put_block(blob, &id, content.to_vec())
        .await
        .expect("put block");
    container
        .put_block_list(blob, &[id], metadata)
        .await
        .expect("put block list");
}

/// A Tenant that backs up daily at 03:00 (so only requested backups happen in a test).
fn backed_up(name: &str, count: i32) -> serde_json::Value {
    json!({ "displayName": name, "currency": "EUR", "cache": { "mode": "Disabled" },
            "backup": { "schedule": "0 3 * * *", "retention": { "count": count } } })
}

async fn eventually_event(client: &kube::Client, name: &str, reason: &str) {
    eventually_events(client, name, |told| told.iter().any(|e| e.reason == reason)).await;
}

fn ready_reason(t: &Tenant) -> Option<String> {
    condition(t, "Ready").map(|c| c.reason.clone())
}

async fn storefront_exists(client: &kube::Client, tenant: &str) -> bool {
    Api::<Deployment>::namespaced(client.clone(), &format!("tiqzy-{tenant}"))
        .get_opt("storefront")
        .await
        .expect("get deployment")
        .is_some()
}

async fn table_count(tenant: &str) -> i64 {
    database(tenant)
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn backups_are_listed_with_their_checksum_and_pruned_by_retention() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(&client, "bk-list", backed_up("bk-list", 2)).await;
    wait_for(&client, "bk-list", "Ready", is_ready).await;
    seed("bk-list", 500).await;

    let mut names = Vec::new();
    for request in ["1", "2", "3"] {
        let t = back_up_now(&client, "bk-list", request).await;
        let backup = condition(&t, "BackupReady").expect("BackupReady");
        assert_eq!(
            (backup.status.as_str(), backup.reason.as_str()),
            ("True", "BackupSucceeded")
        );
        names.push(last_backup(&t).name);
        // Backups are named to the second: the next one gets a name of its own.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let t = wait_for(&client, "bk-list", "pruned", |_| true).await;
    let last = last_backup(&t);
    assert_eq!(last.name, names[2]);
    assert!(last.name.starts_with("bk-list-"), "{}", last.name);

    let container = container();
    let listed = backup::list(&container, "bk-list").await.expect("list");
    let listed_names: Vec<&str> = listed.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        listed_names,
        [names[1].as_str(), names[2].as_str()],
        "retention count 2"
    );
    // The checksum in the status and the metadata is the blob's own SHA-256.
    let newest = listed.last().expect("newest");
    let bytes = blob_bytes(&container, &format!("bk-list/{}.tqdump", newest.name)).await;
    let sha = sha2::Sha256::digest(&bytes);
    let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sha, newest.sha256);
    assert_eq!(sha, last.sha256);
    assert_eq!(bytes.len() as i64, last.size_bytes);
    assert!(bytes.starts_with(b"TIQZY-DUMP 1\n"));

    // The operator exports when the last good backup was taken, for the alert.
    let metrics = installed().operator.metrics().await.expect("metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tiqzy_backup_last_success_timestamp_seconds{tenant=\"bk-list\"}"))
        .unwrap_or_else(|| panic!("no backup metric in {metrics}"));
    let value: i64 = line
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("a number");
    let time: k8s_openapi::jiff::Timestamp = last.time.parse().expect("time");
    assert_eq!(value, time.as_second());
    assert!(
        metrics.contains("tiqzy_backup_interval_seconds{tenant=\"bk-list\"} 86400"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_backup_restores_into_a_new_tenant_row_for_row_before_its_storefront_starts() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(&client, "bk-source", backed_up("bk-source", 5)).await;
    wait_for(&client, "bk-source", "Ready", is_ready).await;
    seed("bk-source", 2_000).await;
    let source = back_up_now(&client, "bk-source", "clone").await;
    let backup_name = last_backup(&source).name;

    create_tenant(
        &client,
        "bk-clone",
        json!({ "displayName": "Clone", "currency": "EUR", "cache": { "mode": "Disabled" },
                "restoreFrom": { "tenant": "bk-source", "backup": "latest" } }),
    )
    .await;
    let clone = wait_for(&client, "bk-clone", "Ready", is_ready).await;
    let restored = clone
        .status
        .as_ref()
        .and_then(|s| s.restored_from.clone())
        .expect("status.restoredFrom");
    assert_eq!(
        (restored.tenant.as_str(), restored.backup.as_str()),
        ("bk-source", backup_name.as_str())
    );
    let original = contents("bk-source").await;
    let copy = contents("bk-clone").await;
    assert!(
        original["tickets"].len() == 2_000,
        "the source has its tickets"
    );
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        copy.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &original {
        assert!(
            rows == &copy[table],
            "table {table} differs after the restore"
        );
    }
    // The storefront's own migrator accepts the restored schema as its own (checksums match).
    let name = "tiqzy_bk_clone";
    let pool = tiqzy_runtime::db::connect(
        &storefront_url("bk-clone").await,
        1,
        Duration::from_secs(10),
    )
    .await
    .expect("pool");
    assert!(
        tiqzy_runtime::db::migrations_applied(&pool)
            .await
            .expect("read migrations")
    );
    tiqzy_runtime::db::MIGRATOR
        .run(&pool)
        .await
        .expect("the runtime's migrations accept the restored database");
    // The restored tables belong to the clone's own role.
    let owners = database("bk-clone")
        .await
        .query(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("owners");
    let owners: Vec<String> = owners.iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, [name]);
}

#[tokio::test]
async fn the_schedule_takes_backups_on_its_own() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(
        &client,
        "bk-cron",
        json!({ "displayName": "Cron", "currency": "EUR", "cache": { "mode": "Disabled" },
                "backup": { "schedule": "* * * * *", "retention": { "count": 1 } } }),
    )
    .await;
    wait_for(&client, "bk-cron", "Ready", is_ready).await;
    seed("bk-cron", 5).await;
    // Every minute: the first run comes at the next full minute, without any annotation.
    let api: Api<Tenant> = Api::all(client.clone());
    let mut first = None;
    for _ in 0..1500 {
        let t = api.get("bk-cron").await.expect("get");
        if let Some(b) = t.status.as_ref().and_then(|s| s.backup.clone())
            && let Some(last) = b.last_backup
        {
            assert_eq!(b.last_request, None, "no annotation asked for it");
            first = Some(last);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("a scheduled backup within two minutes and a half");
    let listed = backup::list(&container(), "bk-cron").await.expect("list");
    assert_eq!(
        listed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        [first.name]
    );
}

#[tokio::test]
async fn a_restore_into_a_database_holding_data_is_refused() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(
        &client,
        "bk-busy",
        json!({ "displayName": "Busy", "currency": "EUR", "cache": { "mode": "Disabled" } }),
    )
    .await;
    wait_for(&client, "bk-busy", "Ready", is_ready).await;
    seed("bk-busy", 10).await;
    let before = contents("bk-busy").await;
    let patch = json!({ "spec": { "restoreFrom": { "backup": "latest" } } });
    Api::<Tenant>::all(client.clone())
        .patch("bk-busy", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let t = wait_for(&client, "bk-busy", "RestoreRefused", |t| {
        ready_reason(t).as_deref() == Some("RestoreRefused")
    })
    .await;
    let ready = condition(&t, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("already holds"), "{}", ready.message);
    eventually_event(&client, "bk-busy", "RestoreRefused").await;
    assert_eq!(contents("bk-busy").await, before, "nothing changed");
}

#[tokio::test]
async fn a_corrupted_or_truncated_backup_is_refused_and_nothing_is_restored() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(&client, "bk-orig", backed_up("bk-orig", 10)).await;
    wait_for(&client, "bk-orig", "Ready", is_ready).await;
    seed("bk-orig", 300).await;
    let t = back_up_now(&client, "bk-orig", "good").await;
    let good = last_backup(&t);
    let container = container();
    let bytes = blob_bytes(&container, &format!("bk-orig/{}.tqdump", good.name)).await;

    // One byte changed in the middle of the rows, same size, the original checksum.
    let mut corrupted = bytes.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] = if corrupted[middle] == b'7' {
        b'8'
    } else {
        b'7'
    };
    let metadata = |size: usize| {
        [
            ("format", "1".to_owned()),
            ("sha256", good.sha256.clone()),
            ("size", size.to_string()),
            ("tenant", "bk-orig".to_owned()),
        ]
    };
    let corrupt_name = "bk-orig-20200101T000000Z";
    upload(
        &container,
        &format!("bk-orig/{corrupt_name}.tqdump"),
        &corrupted,
        &metadata(corrupted.len()),
    )
    .await;
    // Cut short after two thirds, its size recorded as is, the original checksum.
    let truncated = &bytes[..bytes.len() * 2 / 3];
    let truncated_name = "bk-orig-20200102T000000Z";
    upload(
        &container,
        &format!("bk-orig/{truncated_name}.tqdump"),
        truncated,
        &metadata(truncated.len()),
    )
    .await;

    for (tenant, name) in [
        ("bk-corrupt", corrupt_name),
        ("bk-truncated", truncated_name),
    ] {
        create_tenant(
            &client,
            tenant,
            json!({ "displayName": tenant, "currency": "EUR", "cache": { "mode": "Disabled" },
                    "restoreFrom": { "tenant": "bk-orig", "backup": name } }),
        )
        .await;
        let t = wait_for(&client, tenant, "BackupCorrupt", |t| {
            ready_reason(t).as_deref() == Some("BackupCorrupt")
        })
        .await;
        let ready = condition(&t, "Ready").expect("Ready");
        assert!(ready.message.contains("checksum"), "{}", ready.message);
        eventually_event(&client, tenant, "BackupCorrupt").await;
        assert_eq!(
            table_count(tenant).await,
            0,
            "{tenant}: nothing half-restored"
        );
        assert!(
            !storefront_exists(&client, tenant).await,
            "{tenant}: no storefront"
        );
    }
}

#[tokio::test]
async fn nothing_half_written_is_ever_taken_for_a_backup() {
    let client = admin().await;
    let _azurite = installed().azurite.read().await;
    create_tenant(&client, "bk-half", backed_up("bk-half", 10)).await;
    wait_for(&client, "bk-half", "Ready", is_ready).await;
    seed("bk-half", 50).await;
    let t = back_up_now(&client, "bk-half", "good").await;
    let good = last_backup(&t);
    let container = container();
    let bytes = blob_bytes(&container, &format!("bk-half/{}.tqdump", good.name)).await;

    // A backup cut off before its block list: staged blocks only, newer than the good one.
    use base64::Engine;
    let id = base64::engine::general_purpose::STANDARD.encode("blk-00000000");
    container
        .put_block(
            "bk-half/bk-half-29990101T000000Z.tqdump",
            &id,
            bytes.clone(),
        )
        .await
        .expect("stage a block");
    // A committed blob without the checksum metadata (not written by a finished backup).
    upload(
        &container,
        "bk-half/bk-half-29990102T000000Z.tqdump",
        &bytes,
        &[("format", "1".to_owned())],
    )
    .await;
    let listed = backup::list(&container, "bk-half").await.expect("list");
    let names: Vec<&str> = listed.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, [good.name.as_str()]);

    // `latest` picks the complete backup, not the newer half-written ones.
    create_tenant(
        &client,
        "bk-half-copy",
        json!({ "displayName": "Copy", "currency": "EUR", "cache": { "mode": "Disabled" },
                "restoreFrom": { "tenant": "bk-half", "backup": "latest" } }),
    )
    .await;
    let copy = wait_for(&client, "bk-half-copy", "Ready", is_ready).await;
    let restored = copy
        .status
        .and_then(|s| s.restored_from)
        .expect("restoredFrom");
    assert_eq!(restored.backup, good.name);
    assert_eq!(contents("bk-half").await, contents("bk-half-copy").await);
}

#[tokio::test]
async fn a_backup_while_blob_storage_is_down_fails_visibly_and_succeeds_on_retry() {
    let client = admin().await;
    create_tenant(&client, "bk-outage", backed_up("bk-outage", 3)).await;
    wait_for(&client, "bk-outage", "Ready", is_ready).await;
    seed("bk-outage", 20).await;
    let mut azurite = installed().azurite.write().await;
    azurite.stop();
    let patch = json!({ "metadata": { "annotations": { "tiqzy.io/backup-now": "outage" } } });
    Api::<Tenant>::all(client.clone())
        .patch("bk-outage", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let t = wait_for(&client, "bk-outage", "BackupReady=False", |t| {
        condition(t, "BackupReady")
            .is_some_and(|c| c.status == "False" && c.reason == "BackupStorageUnreachable")
    })
    .await;
    let failed = condition(&t, "BackupReady").expect("BackupReady");
    assert!(failed.message.contains("unreachable"), "{}", failed.message);
    assert!(
        !failed.message.contains(AZURITE_KEY),
        "no key in the message"
    );
    // A failed backup never takes the storefront down.
    assert!(is_ready(&t));
    eventually_event(&client, "bk-outage", "BackupStorageUnreachable").await;
    assert!(
        t.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .and_then(|b| b.last_backup.as_ref())
            .is_none()
    );

    azurite.resume().await.expect("azurite resumes");
    drop(azurite);
    let t = wait_for(&client, "bk-outage", "backed up after the outage", |t| {
        condition(t, "BackupReady").is_some_and(|c| c.status == "True")
    })
    .await;
    let status = t
        .status
        .as_ref()
        .and_then(|s| s.backup.clone())
        .expect("backup status");
    assert_eq!(status.last_request.as_deref(), Some("outage"));
    let listed = backup::list(&container(), "bk-outage").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].name,
        status.last_backup.expect("last backup").name
    );
}

#[tokio::test]
async fn a_bad_schedule_or_retention_is_refused_by_the_api_server() {
    let client = admin().await;
    let api: Api<Tenant> = Api::all(client);
    for (name, backup, field) in [
        (
            "bk-bad-cron",
            json!({ "schedule": "every day", "retention": { "count": 3 } }),
            "spec.backup.schedule",
        ),
        (
            "bk-bad-keep",
            json!({ "schedule": "0 3 * * *", "retention": {} }),
            "spec.backup.retention",
        ),
        (
            "bk-bad-count",
            json!({ "schedule": "0 3 * * *", "retention": { "count": 0 } }),
            "spec.backup.retention.count",
        ),
    ] {
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "metadata": { "name": name },
            "spec": { "displayName": name, "currency": "EUR", "backup": backup }
        }))
        .expect("tenant");
        let err = api
            .create(&Default::default(), &tenant)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(field), "{name}: {text}");
    }
}
