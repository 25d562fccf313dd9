//! Backups of a tenant's database to Azure Blob Storage, and restores from them.
//!
//! A backup is one consistent snapshot: one `REPEATABLE READ READ ONLY` transaction in which
//! every table of the tenant's `public` schema is read with `COPY ... TO STDOUT`, in foreign
//! key order, and streamed into blocks of [`BLOCK_SIZE`] staged with Put Block as soon as
//! they are full. Only the final Put Block List makes the blob exist, with its SHA-256 and
//! size in its metadata; a backup cut short leaves uncommitted blocks, which no listing shows
//! and Azure discards. Listings trust only blobs carrying that metadata.
//!
//! The blob (`<tenant>/<tenant>-<yyyyMMddTHHmmssZ>.tqdump`) is text:
//!
//! ```text
//! TIQZY-DUMP 1
//! {"tenant":..,"time":..,"migrations":[{"version":..,"checksum":"<hex>"}],"sequences":[..]}
//! TABLE {"name":"events","columns":["id",..]}
//! <the table's rows in COPY text format>
//! \.
//! ...
//! END {"tables":<n>}
//! ```
//!
//! A restore replays the runtime's own migrations (embedded from tenant-runtime/migrations,
//! each checked against the checksum the backup recorded) up to the backup's version, copies
//! the rows back in the same order, sets the sequences, and commits only when the whole blob
//! matched its checksum: all in one transaction, so a failure leaves an empty database.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use tokio_postgres::Client;

use crate::external::blob::{BlobError, BlobItem, Container};
use crate::external::postgres::{self, DatabaseError, PostgresServer};

/// Size of the blocks a dump is staged in.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Version of the dump format, in the first line and the metadata `format`.
const FORMAT: &str = "1";
const MAGIC: &str = "TIQZY-DUMP 1";
/// The suffix of backup blobs.
const SUFFIX: &str = ".tqdump";
/// What a restored database's comment starts with: how a restore already done is recognised.
const RESTORED_MARK: &str = "tiqzy: restored from ";

mod embedded {
    /// One of the runtime's migrations.
    #[derive(Debug)]
    pub struct Migration {
        pub version: i64,
        pub sql: &'static str,
    }
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// sqlx's own bookkeeping table, as sqlx creates it.
const SQLX_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// A backup written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub name: String,
    pub time: Timestamp,
    pub size: u64,
    pub sha256: String,
}

/// Why a backup failed. Messages never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Storage(#[from] BlobError),
    #[error("reading the database for the backup failed: {0}")]
    Read(String),
}

/// Why a restore did not happen. Nothing was written to the database in any case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The database already holds tables (or the backup cannot be restored by this operator).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Corrupt(String),
    /// A cause that may pass.
    #[error("{0}")]
    Failed(String),
}

impl From<DatabaseError> for RestoreError {
    fn from(e: DatabaseError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<BlobError> for RestoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(_) => Self::NotFound(e.to_string()),
            e => Self::Failed(e.to_string()),
        }
    }
}

/// The name of a backup of `tenant` taken at `time`.
pub fn backup_name(tenant: &str, time: Timestamp) -> String {
    format!("{tenant}-{}", time.strftime("%Y%m%dT%H%M%SZ"))
}

fn blob_of(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}{SUFFIX}")
}

/// A complete backup in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub time: Timestamp,
}

/// The complete backups of `tenant`, oldest first: committed blobs with the checksum and
/// format metadata. Anything else under the prefix is never taken for a backup.
pub async fn list(container: &Container, tenant: &str) -> Result<Vec<Listed>, BlobError> {
    let items = container.list(&format!("{tenant}/")).await?;
    let mut backups: Vec<Listed> = items.iter().filter_map(|i| trusted(tenant, i)).collect();
    backups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(backups)
}

fn trusted(tenant: &str, item: &BlobItem) -> Option<Listed> {
    let name = item
        .name
        .strip_prefix(&format!("{tenant}/"))?
        .strip_suffix(SUFFIX)?;
    let stamp = name.strip_prefix(&format!("{tenant}-"))?;
    let sha256 = item.meta("sha256")?;
    if item.meta("format")? != FORMAT
        || sha256.len() != 64
        || item.meta("size")? != item.size.to_string()
    {
        return None;
    }
    let time = k8s_openapi::jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    Some(Listed {
        name: name.to_owned(),
        size: item.size,
        sha256: sha256.to_owned(),
        time,
    })
}

/// Deletes the backups of `tenant` beyond `count` newest or older than `days`; the newest
/// one always stays. Returns the names deleted.
pub async fn prune(
    container: &Container,
    tenant: &str,
    count: Option<i32>,
    days: Option<i32>,
    now: Timestamp,
) -> Result<Vec<String>, BlobError> {
    let backups = list(container, tenant).await?;
    let doomed = to_prune(&backups, count, days, now);
    for name in &doomed {
        container.delete(&blob_of(tenant, name)).await?;
    }
    Ok(doomed)
}

/// The backups (oldest first) retention lets go.
fn to_prune(
    backups: &[Listed],
    count: Option<i32>,
    days: Option<i32>,
    now: Timestamp,
) -> Vec<String> {
    let keep_count = count.map_or(usize::MAX, |c| c.max(1) as usize);
    let cutoff = days.map(|d| now - Duration::from_secs(u64::from(d.max(1) as u32) * 86_400));
    let n = backups.len();
    backups
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            let newest = *i + 1 == n;
            let beyond_count = n - i > keep_count;
            let too_old = cutoff.is_some_and(|c| b.time < c);
            !newest && (beyond_count || too_old)
        })
        .map(|(_, b)| b.name.clone())
        .collect()
}

/// The header line of a dump.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    tenant: String,
    time: String,
    migrations: Vec<AppliedMigration>,
    sequences: Vec<SequenceValue>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppliedMigration {
    version: i64,
    /// Hex of the SHA-384 sqlx recorded.
    checksum: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SequenceValue {
    name: String,
    value: i64,
    called: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TableHeader {
    name: String,
    columns: Vec<String>,
}

/// Streams the staged blocks of one blob and its checksum.
struct BlockWriter<'a> {
    container: &'a Container,
    blob: String,
    buffer: Vec<u8>,
    ids: Vec<String>,
    hasher: Sha256,
    size: u64,
}

impl BlockWriter<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= BLOCK_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        use base64::Engine;
        // Every id of a blob has the same length, as the service requires.
        let id =
            base64::engine::general_purpose::STANDARD.encode(format!("blk-{:08}", self.ids.len()));
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(BLOCK_SIZE));
        self.container.put_block(&self.blob, &id, data).await?;
        self.ids.push(id);
        Ok(())
    }
}

/// Takes a backup of `tenant`'s database into `container` and returns it once committed.
pub async fn backup(
    server: &PostgresServer,
    container: &Container,
    tenant: &str,
) -> Result<Written, BackupError> {
    container.ensure().await?;
    let mut client = postgres::tenant_session(server, tenant).await?;
    let read = |e: tokio_postgres::Error| BackupError::Read(postgres::describe(&e));
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(read)?;
    // The first statement takes the snapshot every read below sees.
    let tables = tables_in_order(&tx).await.map_err(read)?;
    let time = Timestamp::now();
    let name = backup_name(tenant, time);
    let migrations = if tables.iter().any(|t| t.name == "_sqlx_migrations") {
        tx.query(
            "SELECT version, encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(read)?
        .iter()
        .map(|r| AppliedMigration {
            version: r.get(0),
            checksum: r.get(1),
        })
        .collect()
    } else {
        Vec::new()
    };
    let mut sequences = Vec::new();
    for row in tx
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1",
            &[],
        )
        .await
        .map_err(read)?
    {
        let seq: String = row.get(0);
        let sql = format!(
            "SELECT last_value, is_called FROM public.{}",
            escape_identifier(&seq)
        );
        let value = tx.query_one(&sql, &[]).await.map_err(read)?;
        sequences.push(SequenceValue {
            name: seq,
            value: value.get(0),
            called: value.get(1),
        });
    }
    let header = Header {
        tenant: tenant.to_owned(),
        time: time.to_string(),
        migrations,
        sequences,
    };
    let mut writer = BlockWriter {
        container,
        blob: blob_of(tenant, &name),
        buffer: Vec::with_capacity(BLOCK_SIZE),
        ids: Vec::new(),
        hasher: Sha256::new(),
        size: 0,
    };
    writer
        .write(format!("{MAGIC}\n{}\n", json(&header)).as_bytes())
        .await?;
    for table in &tables {
        writer
            .write(format!("TABLE {}\n", json(table)).as_bytes())
            .await?;
        let columns = table
            .columns
            .iter()
            .map(|c| escape_identifier(c))
            .collect::<Vec<_>>()
            .join(", ");
        let copy = format!(
            "COPY public.{} ({columns}) TO STDOUT",
            escape_identifier(&table.name)
        );
        let stream = tx.copy_out(&copy).await.map_err(read)?;
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            writer.write(&chunk.map_err(read)?).await?;
        }
        writer.write(b"\\.\n").await?;
    }
    writer
        .write(format!("END {{\"tables\":{}}}\n", tables.len()).as_bytes())
        .await?;
    writer.flush().await?;
    tx.commit().await.map_err(read)?;
    let sha256 = hex(&writer.hasher.finalize());
    let metadata = [
        ("format", FORMAT.to_owned()),
        ("sha256", sha256.clone()),
        ("size", writer.size.to_string()),
        ("tenant", tenant.to_owned()),
    ];
    container
        .put_block_list(&writer.blob, &writer.ids, &metadata)
        .await?;
    Ok(Written {
        name,
        time,
        size: writer.size,
        sha256,
    })
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("a header serialises")
}

/// The tables of the `public` schema, each after the tables its foreign keys point to, with
/// their stored (not generated) columns.
async fn tables_in_order(
    client: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<TableHeader>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.oid, c.relname::text, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                       AND a.attgenerated = ''), '{}') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname",
            &[],
        )
        .await?;
    let edges = client
        .query(
            "SELECT conrelid, confrelid FROM pg_constraint \
             WHERE contype = 'f' AND conrelid <> confrelid",
            &[],
        )
        .await?;
    let tables: Vec<(u32, TableHeader)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, u32>(0),
                TableHeader {
                    name: r.get(1),
                    columns: r.get(2),
                },
            )
        })
        .collect();
    let depends: Vec<(u32, u32)> = edges.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(order(tables, &depends))
}

/// Tables ordered so that each comes after those it depends on (by name among equals; a
/// cycle keeps its tables in name order at the end).
fn order(mut pending: Vec<(u32, TableHeader)>, depends: &[(u32, u32)]) -> Vec<TableHeader> {
    let mut done: Vec<u32> = Vec::new();
    let mut ordered = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|(oid, _)| {
            depends.iter().all(|(from, to)| {
                *from != *oid || done.contains(to) || !pending.iter().any(|(o, _)| o == to)
            })
        });
        let index = ready.unwrap_or(0);
        let (oid, table) = pending.remove(index);
        done.push(oid);
        ordered.push(table);
    }
    ordered
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub tenant: String,
    pub backup: String,
}

/// Whether the database of `client` was already restored, and from what: read from the
/// database's comment, written in the restore's own transaction.
async fn mark(client: &Client) -> Result<Option<Restored>, RestoreError> {
    let comment: Option<String> = client
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| RestoreError::Failed(postgres::describe(&e)))?
        .get(0);
    Ok(comment
        .as_deref()
        .and_then(|c| c.strip_prefix(RESTORED_MARK))
        .and_then(|c| c.split_once('/'))
        .map(|(tenant, backup)| Restored {
            tenant: tenant.to_owned(),
            backup: backup.to_owned(),
        }))
}

/// Creates `tenant`'s empty database from `source`'s backup `backup` (a name or `latest`).
/// Returns what was restored; a database restored before is left as it is.
pub async fn restore(
    server: &PostgresServer,
    container: &Container,
    tenant: &str,
    source: &str,
    backup: &str,
) -> Result<Restored, RestoreError> {
    let mut client = postgres::tenant_session(server, tenant).await?;
    if let Some(done) = mark(&client).await? {
        return Ok(done);
    }
    let failed = |e: tokio_postgres::Error| RestoreError::Failed(postgres::describe(&e));
    let objects: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    if objects > 0 {
        return Err(RestoreError::Refused(format!(
            "the database {} already holds {objects} table(s) or sequence(s); a backup is only \
             restored into an empty database: remove spec.restoreFrom, or restore into a new \
             tenant",
            postgres::database_name(tenant).unwrap_or_default()
        )));
    }
    let backups = list(container, source).await?;
    let chosen = if backup == "latest" {
        backups.last()
    } else {
        backups.iter().find(|b| b.name == backup)
    };
    let Some(chosen) = chosen.cloned() else {
        return Err(RestoreError::NotFound(format!(
            "no complete backup {backup:?} of tenant {source} in the container"
        )));
    };
    let response = container.get(&blob_of(source, &chosen.name)).await?;
    let tx = client.transaction().await.map_err(failed)?;
    let mut reader = Reader {
        stream: Box::pin(response.bytes_stream()),
        buffer: Vec::new(),
        hasher: Sha256::new(),
        size: 0,
        ended: false,
    };
    let outcome = replay(&tx, &mut reader).await;
    // Whatever happened, the checksum of the whole blob decides whether it was corrupt.
    let drained = reader.drain().await;
    let sha256 = hex(&reader.hasher.clone().finalize());
    let corrupt = sha256 != chosen.sha256 || reader.size != chosen.size;
    if drained.is_ok() && corrupt {
        return Err(RestoreError::Corrupt(format!(
            "backup {} does not match its checksum ({} bytes read, {} expected): nothing was \
             restored",
            chosen.name, reader.size, chosen.size
        )));
    }
    drained?;
    outcome?;
    let comment = format!(
        "COMMENT ON DATABASE {} IS {}",
        escape_identifier(&postgres::database_name(tenant).unwrap_or_default()),
        escape_literal(&format!("{RESTORED_MARK}{source}/{}", chosen.name))
    );
    tx.batch_execute(&comment).await.map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(Restored {
        tenant: source.to_owned(),
        backup: chosen.name,
    })
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

/// The blob's bytes, line by line, hashed as they arrive.
struct Reader {
    stream: ByteStream,
    buffer: Vec<u8>,
    hasher: Sha256,
    size: u64,
    ended: bool,
}

impl Reader {
    /// More bytes into the buffer; `false` at the end of the blob.
    async fn fill(&mut self) -> Result<bool, RestoreError> {
        if self.ended {
            return Ok(false);
        }
        match self.stream.next().await {
            None => {
                self.ended = true;
                Ok(false)
            }
            Some(Err(e)) => Err(RestoreError::Failed(format!(
                "reading the backup from Blob storage failed: {e}"
            ))),
            Some(Ok(chunk)) => {
                self.hasher.update(&chunk);
                self.size += chunk.len() as u64;
                self.buffer.extend_from_slice(&chunk);
                Ok(true)
            }
        }
    }

    /// The next line without its newline; `None` at the end of the blob.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, RestoreError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads (and hashes) what is left.
    async fn drain(&mut self) -> Result<(), RestoreError> {
        while self.fill().await? {
            self.buffer.clear();
        }
        Ok(())
    }
}

fn cut_short() -> RestoreError {
    RestoreError::Corrupt("the backup is cut short".into())
}

/// Replays a dump into `tx`.
async fn replay(
    tx: &tokio_postgres::Transaction<'_>,
    reader: &mut Reader,
) -> Result<(), RestoreError> {
    let failed = |e: tokio_postgres::Error| RestoreError::Failed(postgres::describe(&e));
    let corrupt = |what: &str| RestoreError::Corrupt(format!("the backup is malformed: {what}"));
    if reader.line().await?.as_deref() != Some(MAGIC.as_bytes()) {
        return Err(corrupt("not a Tiqzy dump"));
    }
    let header: Header = serde_json::from_slice(&reader.line().await?.ok_or_else(cut_short)?)
        .map_err(|_| corrupt("unreadable header"))?;
    for applied in &header.migrations {
        let Some(known) = embedded::MIGRATIONS
            .iter()
            .find(|m| m.version == applied.version)
        else {
            return Err(RestoreError::Refused(format!(
                "the backup's schema has migration {}, which this operator does not know: \
                 restore it with an operator of the same release as the storefront that wrote it",
                applied.version
            )));
        };
        if hex(&Sha384::digest(known.sql.as_bytes())) != applied.checksum {
            return Err(RestoreError::Refused(format!(
                "migration {} of the backup differs from this operator's",
                applied.version
            )));
        }
        tx.batch_execute(known.sql).await.map_err(failed)?;
    }
    if !header.migrations.is_empty() {
        tx.batch_execute(SQLX_MIGRATIONS_TABLE)
            .await
            .map_err(failed)?;
    }
    // The runtime's foreign keys form a cycle (tickets, orders, listings), so no table order
    // satisfies them all while rows arrive: they are dropped for the copy and added back after
    // it, which checks every row against them.
    let foreign_keys = tx
        .query(
            "SELECT c.conrelid::regclass::text, c.conname::text, pg_get_constraintdef(c.oid) \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE c.contype = 'f' AND n.nspname = 'public' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(failed)?;
    for fk in &foreign_keys {
        let drop = format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            fk.get::<_, String>(0),
            escape_identifier(fk.get(1))
        );
        tx.batch_execute(&drop).await.map_err(failed)?;
    }
    let mut tables = 0_usize;
    loop {
        let line = reader.line().await?.ok_or_else(cut_short)?;
        if let Some(end) = line.strip_prefix(b"END ") {
            let end: serde_json::Value =
                serde_json::from_slice(end).map_err(|_| corrupt("unreadable end"))?;
            if end["tables"].as_u64() != Some(tables as u64) {
                return Err(corrupt("table count"));
            }
            break;
        }
        let table = line
            .strip_prefix(b"TABLE ")
            .ok_or_else(|| corrupt("expected a table"))?;
        let table: TableHeader =
            serde_json::from_slice(table).map_err(|_| corrupt("unreadable table header"))?;
        copy_table(tx, reader, &table).await?;
        tables += 1;
    }
    for fk in &foreign_keys {
        let add = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            fk.get::<_, String>(0),
            escape_identifier(fk.get(1)),
            fk.get::<_, String>(2)
        );
        tx.batch_execute(&add).await.map_err(failed)?;
    }
    for seq in &header.sequences {
        tx.execute(
            "SELECT setval(format('public.%I', $1::text)::regclass, $2, $3)",
            &[&seq.name, &seq.value, &seq.called],
        )
        .await
        .map_err(failed)?;
    }
    if reader.line().await?.is_some() {
        return Err(corrupt("data after the end"));
    }
    Ok(())
}

/// Copies one table's rows (up to the `\.` line) into it.
async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    reader: &mut Reader,
    table: &TableHeader,
) -> Result<(), RestoreError> {
    let failed = |e: tokio_postgres::Error| RestoreError::Failed(postgres::describe(&e));
    let columns = table
        .columns
        .iter()
        .map(|c| escape_identifier(c))
        .collect::<Vec<_>>()
        .join(", ");
    let copy = format!(
        "COPY public.{} ({columns}) FROM STDIN",
        escape_identifier(&table.name)
    );
    let sink = tx.copy_in::<_, bytes::Bytes>(&copy).await.map_err(failed)?;
    futures::pin_mut!(sink);
    loop {
        // Whole lines up to the terminator go to the server in one piece.
        let mut scan = 0;
        let mut terminator = None;
        while let Some(end) = reader.buffer[scan..].iter().position(|b| *b == b'\n') {
            if &reader.buffer[scan..scan + end] == b"\\." {
                terminator = Some(scan);
                break;
            }
            scan += end + 1;
        }
        let upto = terminator.unwrap_or(scan);
        if upto > 0 {
            let rows: Vec<u8> = reader.buffer.drain(..upto).collect();
            sink.send(bytes::Bytes::from(rows)).await.map_err(failed)?;
        }
        if terminator.is_some() {
            reader.buffer.drain(..3);
            break;
        }
        if !reader.fill().await? {
            return Err(cut_short());
        }
    }
    sink.as_mut().finish().await.map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, days_ago: i64, now: Timestamp) -> Listed {
        Listed {
            name: name.into(),
            size: 1,
            sha256: "0".repeat(64),
            time: now - Duration::from_secs((days_ago * 86_400) as u64),
        }
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_by_age() {
        let now = Timestamp::now();
        let all = [
            listed("a", 10, now),
            listed("b", 5, now),
            listed("c", 2, now),
            listed("d", 0, now),
        ];
        assert_eq!(to_prune(&all, Some(2), None, now), ["a", "b"]);
        assert_eq!(to_prune(&all, None, Some(3), now), ["a", "b"]);
        assert_eq!(to_prune(&all, Some(3), Some(7), now), ["a"]);
        assert!(to_prune(&all, Some(10), None, now).is_empty());
        // The newest backup stays even when it is older than the days.
        let old = [listed("a", 30, now), listed("b", 20, now)];
        assert_eq!(to_prune(&old, None, Some(7), now), ["a"]);
    }

    #[test]
    fn tables_follow_their_foreign_keys() {
        let t = |oid: u32, name: &str| {
            (
                oid,
                TableHeader {
                    name: name.into(),
                    columns: vec![],
                },
            )
        };
        let ordered = order(
            vec![t(1, "a_tickets"), t(2, "b_orders"), t(3, "c_events")],
            &[(1, 2), (1, 3), (2, 3)],
        );
        let names: Vec<&str> = ordered.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c_events", "b_orders", "a_tickets"]);
    }

    #[test]
    fn only_blobs_with_checksum_and_format_are_backups() {
        let item = |name: &str, meta: &[(&str, &str)]| BlobItem {
            name: name.into(),
            size: 10,
            metadata: meta
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let sha = "a".repeat(64);
        let good = [("format", "1"), ("sha256", sha.as_str()), ("size", "10")];
        let found =
            trusted("shop", &item("shop/shop-20261201T030000Z.tqdump", &good)).expect("a backup");
        assert_eq!(found.name, "shop-20261201T030000Z");
        assert_eq!(found.time.to_string(), "2026-12-01T03:00:00Z");
        assert!(
            trusted(
                "shop",
                &item("shop/shop-20261201T030000Z.tqdump", &good[..2])
            )
            .is_none()
        );
        assert!(trusted("shop", &item("shop/shop-20261201T030000Z.tqdump", &[])).is_none());
        assert!(trusted("other", &item("shop/shop-20261201T030000Z.tqdump", &good)).is_none());
    }

    #[test]
    fn every_runtime_migration_is_embedded() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenant-runtime/migrations");
        let files = std::fs::read_dir(dir).expect("migrations").count();
        assert_eq!(embedded::MIGRATIONS.len(), files);
    }
}
