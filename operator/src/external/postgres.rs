//! A tenant's PostgreSQL database and LOGIN role, created, repaired and dropped through the
//! platform's admin role so that a reconcile may repeat or stop anywhere and still converge.

use std::fmt;
use std::time::Duration;

use super::{url_host, url_part};
use crate::names::{self, InvalidTenantName};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::password::scram_sha_256;
use tiqzy_crds::conditions::Reason;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

/// How long a server may take to open a session before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lock held elsewhere (a long transaction on the template, say) must fail the reconcile,
/// which then backs off, rather than stall it.
const SESSION_OPTIONS: &str = "-c lock_timeout=10s -c statement_timeout=60s";

/// What the tenant role may do on the server beyond its own database: nothing.
const ROLE_ATTRIBUTES: &str = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";

/// The platform's PostgreSQL server, reached as a role allowed to CREATE DATABASE and CREATE
/// ROLE: a superuser, or a `CREATEDB CREATEROLE` role as managed services hand out.
#[derive(Clone)]
pub struct PostgresServer {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// The database the admin session opens, `postgres` on most servers.
    pub admin_database: String,
    /// The libpq `sslmode` storefronts connect with.
    pub ssl_mode: String,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &format_args!("<redacted>"))
            .field("admin_database", &self.admin_database)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

/// How a storefront reaches its database: the entries of the tenant's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantDatabase {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: String,
    pub sslmode: String,
}

impl TenantDatabase {
    /// The connection of `tenant`'s storefront, logging in with `password`.
    pub fn new(
        server: &PostgresServer,
        tenant: &str,
        password: &str,
    ) -> Result<Self, DatabaseError> {
        let name = database_name(tenant)?;
        Ok(Self {
            host: server.host.clone(),
            port: server.port,
            dbname: name.clone(),
            user: name,
            password: password.to_owned(),
            sslmode: server.ssl_mode.clone(),
        })
    }

    /// `DATABASE_URL`: `postgres://<user>:<password>@<host>:<port>/<dbname>?sslmode=<mode>`.
    pub fn url(&self) -> String {
        let host = url_host(&self.host);
        format!(
            "postgres://{}:{}@{host}:{}/{}?sslmode={}",
            url_part(&self.user),
            url_part(&self.password),
            self.port,
            url_part(&self.dbname),
            url_part(&self.sslmode),
        )
    }
}

impl fmt::Debug for TenantDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDatabase")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &format_args!("<redacted>"))
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

/// Why a tenant's database could not be ensured or removed. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    InvalidTenantName(#[from] InvalidTenantName),
    #[error("PostgreSQL at {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("PostgreSQL refused the admin role {user:?}: {detail}")]
    AdminAuthFailed { user: String, detail: String },
    #[error("PostgreSQL could not {action} for {database:?}: {detail}")]
    Failed {
        action: &'static str,
        database: String,
        detail: String,
    },
}

impl DatabaseError {
    /// The CamelCase reason of the tenant's `DatabaseReady` condition.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidTenantName(_) => Reason::InvalidTenantName,
            Self::Unreachable { .. } => Reason::DatabaseUnreachable,
            Self::AdminAuthFailed { .. } => Reason::AdminAuthFailed,
            Self::Failed { .. } => Reason::DatabaseFailed,
        }
    }
}

/// What [`ensure_database`] had to change; all `false` when the tenant was already converged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatabaseChanges {
    pub created_role: bool,
    /// Attributes, connection limit, or the admin's membership (needed to own its database).
    pub altered_role: bool,
    pub reset_password: bool,
    pub created_database: bool,
    /// Owner, or privileges of PUBLIC.
    pub altered_database: bool,
}

impl DatabaseChanges {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// The database and role name of `tenant` (see [`names::database`]).
pub fn database_name(tenant: &str) -> Result<String, DatabaseError> {
    Ok(names::database(tenant)?)
}

/// Makes `tenant`'s role and database exist as specified, logging in with `password`, at most
/// `connection_limit` sessions at once (-1: no limit).
///
/// The limit sits on the role, not the database, so it counts exactly the storefront's
/// sessions and never the operator's or an administrator's.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn ensure_database(
    server: &PostgresServer,
    tenant: &str,
    password: &str,
    connection_limit: i32,
) -> Result<DatabaseChanges, DatabaseError> {
    let admin = AdminSession::open(server, database_name(tenant)?).await?;
    let mut changes = DatabaseChanges::default();

    let role = match admin.role().await? {
        Some(role) => role,
        None => {
            let create = format!(
                "CREATE ROLE {} {ROLE_ATTRIBUTES} CONNECTION LIMIT {connection_limit} PASSWORD {}",
                admin.ident,
                // Only a verifier reaches the server, so no log or statement view holds the password.
                escape_literal(&scram_sha_256(password.as_bytes())),
            );
            changes.created_role = admin
                .execute_unless_exists("create the role", &create)
                .await?;
            admin
                .role()
                .await?
                .ok_or_else(|| admin.failed_plain("create the role", "it vanished"))?
        }
    };
    let alterations = role_alterations(&role, connection_limit);
    if !alterations.is_empty() {
        let alter = format!("ALTER ROLE {} {}", admin.ident, alterations.join(" "));
        admin.execute("alter the role", &alter).await?;
        changes.altered_role = true;
    }
    if !role.admin_is_member {
        // A non-superuser admin may only create, hand over and drop databases owned by roles
        // it is a member of.
        let grant = format!("GRANT {} TO CURRENT_USER", admin.ident);
        admin.execute("grant the role to the admin", &grant).await?;
        changes.altered_role = true;
    }

    let database = match admin.database().await? {
        Some(database) => database,
        None => {
            // CREATE DATABASE cannot run in a transaction: it is sent on its own.
            let create = format!("CREATE DATABASE {0} OWNER {0}", admin.ident);
            changes.created_database = admin
                .execute_unless_exists("create the database", &create)
                .await?;
            admin
                .database()
                .await?
                .ok_or_else(|| admin.failed_plain("create the database", "it vanished"))?
        }
    };
    if database.owner != admin.name {
        let alter = format!("ALTER DATABASE {0} OWNER TO {0}", admin.ident);
        admin.execute("hand over the database", &alter).await?;
        changes.altered_database = true;
    }
    if database.public_access {
        let revoke = format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", admin.ident);
        admin.execute("revoke PUBLIC access", &revoke).await?;
        changes.altered_database |= !changes.created_database;
    }

    if !changes.created_role && admin.password_refused(password).await? {
        let verifier = escape_literal(&scram_sha_256(password.as_bytes()));
        let alter = format!("ALTER ROLE {} PASSWORD {verifier}", admin.ident);
        admin.execute("reset the password", &alter).await?;
        changes.reset_password = true;
    }
    Ok(changes)
}

/// Drops `tenant`'s database and role after ending their sessions. Returns whether either existed.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn remove_database(server: &PostgresServer, tenant: &str) -> Result<bool, DatabaseError> {
    let admin = AdminSession::open(server, database_name(tenant)?).await?;
    let role = admin.role().await?;
    let database = admin.database().await?;
    if role.as_ref().is_some_and(|role| !role.admin_is_member) {
        // Ending the role's sessions and dropping what it owns needs its privileges.
        let grant = format!("GRANT {} TO CURRENT_USER", admin.ident);
        admin.execute("grant the role to the admin", &grant).await?;
    }
    admin
        .client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE (datname = $1 OR usename = $1) AND pid <> pg_backend_pid()",
            &[&admin.name],
        )
        .await
        .map_err(|e| admin.failed("end the sessions", &e))?;
    let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", admin.ident);
    admin.execute("drop the database", &drop).await?;
    if role.is_some() {
        // Privileges granted to the role elsewhere (in the admin database) would block DROP ROLE.
        let drop_owned = format!("DROP OWNED BY {}", admin.ident);
        match admin.client.batch_execute(&drop_owned).await {
            Err(e) if e.code() != Some(&SqlState::UNDEFINED_OBJECT) => {
                return Err(admin.failed("drop what the role owns", &e));
            }
            _ => {}
        }
    }
    let drop = format!("DROP ROLE IF EXISTS {}", admin.ident);
    admin.execute("drop the role", &drop).await?;
    Ok(role.is_some() || database.is_some())
}

/// Creates the operator's schema `tiqzy_operator` in a tenant's database and its table of the
/// tenant's ticket-signing keys: one row, the Secret's value as written (keys newest first),
/// kept next to the tickets they signed. Created and owned by the admin role, with no
/// privilege for anyone else: the tenant role (which gets the keys from its Secret) can
/// neither read nor change them.
const SIGNING_KEYS_TABLE: &str = "\
    CREATE SCHEMA IF NOT EXISTS tiqzy_operator; \
    REVOKE ALL ON SCHEMA tiqzy_operator FROM PUBLIC; \
    CREATE TABLE IF NOT EXISTS tiqzy_operator.signing_keys ( \
        id boolean PRIMARY KEY DEFAULT true CHECK (id), \
        keys text NOT NULL, \
        saved_at timestamptz NOT NULL DEFAULT now() \
    ); \
    REVOKE ALL ON tiqzy_operator.signing_keys FROM PUBLIC";

/// The ticket-signing keys the operator saved in `tenant`'s database, `None` when it has no
/// database or no copy yet. Errors never hold the keys.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn saved_signing_keys(
    server: &PostgresServer,
    tenant: &str,
) -> Result<Option<String>, DatabaseError> {
    let name = database_name(tenant)?;
    let Some(client) = tenant_database_session(server, &name).await? else {
        return Ok(None);
    };
    read_signing_keys(&client, server, &name).await
}

/// Makes the copy of the ticket-signing keys in `tenant`'s (existing) database equal `keys`;
/// returns whether it had to write. A converged copy costs one read and no write.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn save_signing_keys(
    server: &PostgresServer,
    tenant: &str,
    keys: &str,
) -> Result<bool, DatabaseError> {
    let name = database_name(tenant)?;
    let Some(client) = tenant_database_session(server, &name).await? else {
        return Err(DatabaseError::Failed {
            action: "save the signing keys",
            database: name,
            detail: "the database does not exist".to_owned(),
        });
    };
    if read_signing_keys(&client, server, &name).await?.as_deref() == Some(keys) {
        return Ok(false);
    }
    let failed = |e: &tokio_postgres::Error| classify(server, "save the signing keys", &name, e);
    client
        .batch_execute(SIGNING_KEYS_TABLE)
        .await
        .map_err(|e| failed(&e))?;
    client
        .execute(
            "INSERT INTO tiqzy_operator.signing_keys (keys) VALUES ($1) \
             ON CONFLICT (id) DO UPDATE SET keys = EXCLUDED.keys, saved_at = now()",
            &[&keys],
        )
        .await
        .map_err(|e| failed(&e))?;
    Ok(true)
}

/// A session of the admin role in the tenant's database `name`; `None` when it does not exist.
async fn tenant_database_session(
    server: &PostgresServer,
    name: &str,
) -> Result<Option<Client>, DatabaseError> {
    let mut config = session_config(server);
    config
        .user(&server.admin_user)
        .password(&server.admin_password)
        .dbname(name);
    match connect(&config, &server.ssl_mode).await {
        Ok(client) => Ok(Some(client)),
        Err(ConnectFailure::Refused(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            Ok(None)
        }
        Err(ConnectFailure::Refused(e)) => Err(classify(server, "connect", name, &e)),
        Err(ConnectFailure::TimedOut) => {
            Err(unreachable(server, "no answer within the connect timeout"))
        }
        Err(ConnectFailure::Tls(e)) => Err(unreachable(server, &format!("TLS settings: {e}"))),
    }
}

async fn read_signing_keys(
    client: &Client,
    server: &PostgresServer,
    name: &str,
) -> Result<Option<String>, DatabaseError> {
    match client
        .query_opt("SELECT keys FROM tiqzy_operator.signing_keys", &[])
        .await
    {
        Ok(row) => Ok(row.map(|row| row.get(0))),
        // No copy yet: the schema or the table was never created.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(classify(server, "read the signing keys", name, &e)),
    }
}

/// A session of the admin role in `tenant`'s own database, acting as the tenant's role (so
/// what it creates belongs to the tenant, and it reads only what the tenant may), without a
/// statement timeout: for backups and restores, which stream for as long as the data takes.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn tenant_session(
    server: &PostgresServer,
    tenant: &str,
) -> Result<Client, DatabaseError> {
    let name = database_name(tenant)?;
    let mut config = Config::new();
    config
        .host(&server.host)
        .port(server.port)
        .application_name("tiqzy-operator-backup")
        .options("-c lock_timeout=10s -c statement_timeout=0")
        .connect_timeout(CONNECT_TIMEOUT)
        .user(&server.admin_user)
        .password(&server.admin_password)
        .dbname(&name);
    let client = connect(&config, &server.ssl_mode)
        .await
        .map_err(|failure| match failure {
            ConnectFailure::TimedOut => unreachable(server, "no answer within the connect timeout"),
            ConnectFailure::Refused(e) => classify(server, "connect", &name, &e),
            ConnectFailure::Tls(e) => unreachable(server, &format!("TLS settings: {e}")),
        })?;
    let set_role = format!("SET ROLE {}", escape_identifier(&name));
    client
        .batch_execute(&set_role)
        .await
        .map_err(|e| classify(server, "act as the tenant role", &name, &e))?;
    Ok(client)
}

/// The tenant role as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleState {
    can_login: bool,
    superuser: bool,
    create_db: bool,
    create_role: bool,
    replication: bool,
    bypass_rls: bool,
    connection_limit: i32,
    expired_or_expiring: bool,
    admin_is_member: bool,
}

/// The ALTER ROLE options that bring `role` back to what a tenant role must be.
///
/// Only the differing ones: PostgreSQL refuses a non-superuser who even names SUPERUSER,
/// REPLICATION or BYPASSRLS, while a superuser admin restores them all.
fn role_alterations(role: &RoleState, connection_limit: i32) -> Vec<String> {
    let flags = [
        (!role.can_login, "LOGIN"),
        (role.superuser, "NOSUPERUSER"),
        (role.create_db, "NOCREATEDB"),
        (role.create_role, "NOCREATEROLE"),
        (role.replication, "NOREPLICATION"),
        (role.bypass_rls, "NOBYPASSRLS"),
        (role.expired_or_expiring, "VALID UNTIL 'infinity'"),
    ];
    let mut options: Vec<String> = flags
        .into_iter()
        .filter(|(differs, _)| *differs)
        .map(|(_, option)| option.to_owned())
        .collect();
    if role.connection_limit != connection_limit {
        options.push(format!("CONNECTION LIMIT {connection_limit}"));
    }
    options
}

/// The tenant database as the server has it.
#[derive(Debug)]
struct DatabaseState {
    owner: String,
    public_access: bool,
}

/// A session of the admin role, about one tenant.
struct AdminSession<'a> {
    server: &'a PostgresServer,
    client: Client,
    /// The tenant's role and database name.
    name: String,
    /// `name`, quoted for SQL.
    ident: String,
}

impl<'a> AdminSession<'a> {
    async fn open(server: &'a PostgresServer, name: String) -> Result<Self, DatabaseError> {
        let mut config = session_config(server);
        config
            .user(&server.admin_user)
            .password(&server.admin_password)
            .dbname(&server.admin_database);
        let client = connect(&config, &server.ssl_mode)
            .await
            .map_err(|failure| match failure {
                ConnectFailure::TimedOut => {
                    unreachable(server, "no answer within the connect timeout")
                }
                ConnectFailure::Refused(e) => classify(server, "connect", &name, &e),
                ConnectFailure::Tls(e) => unreachable(server, &format!("TLS settings: {e}")),
            })?;
        let session = Self {
            server,
            client,
            ident: escape_identifier(&name),
            name,
        };
        // One session at a time works on a tenant (two operator replicas overlapping during a
        // fail-over, say): concurrent GRANT/REVOKE on one database fails with "tuple
        // concurrently updated". The lock ends with the session.
        session
            .client
            .execute(
                "SELECT pg_advisory_lock(hashtextextended('tiqzy-operator:' || $1, 0))",
                &[&session.name],
            )
            .await
            .map_err(|e| session.failed("lock the tenant", &e))?;
        Ok(session)
    }

    async fn role(&self) -> Result<Option<RoleState>, DatabaseError> {
        let row = self
            .client
            .query_opt(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, \
                        rolbypassrls, rolconnlimit, \
                        coalesce(rolvaliduntil <> 'infinity', false), \
                        pg_has_role(current_user, oid, 'USAGE') \
                 FROM pg_roles WHERE rolname = $1",
                &[&self.name],
            )
            .await
            .map_err(|e| self.failed("read the role", &e))?;
        Ok(row.map(|row| RoleState {
            can_login: row.get(0),
            superuser: row.get(1),
            create_db: row.get(2),
            create_role: row.get(3),
            replication: row.get(4),
            bypass_rls: row.get(5),
            connection_limit: row.get(6),
            expired_or_expiring: row.get(7),
            admin_is_member: row.get(8),
        }))
    }

    async fn database(&self) -> Result<Option<DatabaseState>, DatabaseError> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_get_userbyid(d.datdba)::text, \
                        EXISTS (SELECT FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) \
                                WHERE grantee = 0) \
                 FROM pg_database d WHERE d.datname = $1",
                &[&self.name],
            )
            .await
            .map_err(|e| self.failed("read the database", &e))?;
        Ok(row.map(|row| DatabaseState {
            owner: row.get(0),
            public_access: row.get(1),
        }))
    }

    async fn execute(&self, action: &'static str, sql: &str) -> Result<(), DatabaseError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.failed(action, &e))
    }

    /// Runs a CREATE; returns `false` when a concurrent reconcile created the object first.
    async fn execute_unless_exists(
        &self,
        action: &'static str,
        sql: &str,
    ) -> Result<bool, DatabaseError> {
        match self.client.batch_execute(sql).await {
            Ok(()) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(self.failed(action, &e)),
        }
    }

    /// Whether the server refuses `password` for the tenant role, found by logging in with it.
    async fn password_refused(&self, password: &str) -> Result<bool, DatabaseError> {
        let mut config = session_config(self.server);
        config
            .user(&self.name)
            .password(password)
            .dbname(&self.name);
        match connect(&config, &self.server.ssl_mode).await {
            Ok(_client) => Ok(false),
            Err(ConnectFailure::Refused(e)) if e.code() == Some(&SqlState::INVALID_PASSWORD) => {
                Ok(true)
            }
            Err(ConnectFailure::Refused(e)) if e.code().is_some() => {
                // Refused after the password was accepted (a full connection limit) or for a
                // reason a password cannot fix (pg_hba.conf): leave the role alone.
                tracing::warn!(role = %self.name, error = %describe(&e), "cannot check the tenant's password");
                Ok(false)
            }
            Err(ConnectFailure::Refused(e)) => Err(unreachable(self.server, &describe(&e))),
            Err(ConnectFailure::TimedOut) => Err(unreachable(
                self.server,
                "no answer within the connect timeout",
            )),
            Err(ConnectFailure::Tls(e)) => {
                Err(unreachable(self.server, &format!("TLS settings: {e}")))
            }
        }
    }

    fn failed(&self, action: &'static str, error: &tokio_postgres::Error) -> DatabaseError {
        classify(self.server, action, &self.name, error)
    }

    fn failed_plain(&self, action: &'static str, detail: &str) -> DatabaseError {
        DatabaseError::Failed {
            action,
            database: self.name.clone(),
            detail: detail.to_owned(),
        }
    }
}

fn session_config(server: &PostgresServer) -> Config {
    let mut config = Config::new();
    config
        .host(&server.host)
        .port(server.port)
        .application_name("tiqzy-operator")
        .options(SESSION_OPTIONS)
        .connect_timeout(CONNECT_TIMEOUT);
    config
}

enum ConnectFailure {
    TimedOut,
    Refused(tokio_postgres::Error),
    /// The TLS settings could not be built (never expected with the bundled provider).
    Tls(rustls::Error),
}

/// Opens a session; the whole handshake is bounded, not just the TCP connect.
/// A session with the TLS the server's `sslmode` asks for (see `pg_tls`).
async fn connect(config: &Config, ssl_mode: &str) -> Result<Client, ConnectFailure> {
    let (mode, tls) = super::pg_tls::connector(ssl_mode).map_err(ConnectFailure::Tls)?;
    let mut config = config.clone();
    config.ssl_mode(mode);
    match tls {
        Some(tls) => connect_with(&config, tls).await,
        None => connect_with(&config, NoTls).await,
    }
}

async fn connect_with<T>(config: &Config, tls: T) -> Result<Client, ConnectFailure>
where
    T: MakeTlsConnect<Socket> + Send,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls)).await {
        Err(_) => Err(ConnectFailure::TimedOut),
        Ok(Err(e)) => Err(ConnectFailure::Refused(e)),
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %describe(&e), "PostgreSQL session ended");
                }
            });
            Ok(client)
        }
    }
}

fn classify(
    server: &PostgresServer,
    action: &'static str,
    database: &str,
    error: &tokio_postgres::Error,
) -> DatabaseError {
    let detail = describe(error);
    let Some(code) = error.code() else {
        return if is_connection_failure(error) {
            unreachable(server, &detail)
        } else {
            DatabaseError::Failed {
                action,
                database: database.to_owned(),
                detail,
            }
        };
    };
    if [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INSUFFICIENT_PRIVILEGE,
    ]
    .contains(code)
    {
        DatabaseError::AdminAuthFailed {
            user: server.admin_user.clone(),
            detail,
        }
    } else if [
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
    ]
    .contains(code)
    {
        unreachable(server, &detail)
    } else {
        DatabaseError::Failed {
            action,
            database: database.to_owned(),
            detail,
        }
    }
}

fn unreachable(server: &PostgresServer, detail: &str) -> DatabaseError {
    DatabaseError::Unreachable {
        endpoint: format!("{}:{}", server.host, server.port),
        detail: detail.to_owned(),
    }
}

fn is_connection_failure(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

/// Two reconciles racing to CREATE the same object: one wins, the other sees one of these.
fn is_duplicate(error: &tokio_postgres::Error) -> bool {
    [
        SqlState::DUPLICATE_OBJECT,
        SqlState::DUPLICATE_DATABASE,
        SqlState::UNIQUE_VIOLATION,
    ]
    .iter()
    .any(|code| error.code() == Some(code))
}

/// The server's message and SQLSTATE, or the chain of client-side causes.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> PostgresServer {
        PostgresServer {
            host: "db.example.net".to_owned(),
            port: 5432,
            admin_user: "platform".to_owned(),
            admin_password: "admin-secret".to_owned(),
            admin_database: "postgres".to_owned(),
            ssl_mode: "require".to_owned(),
        }
    }

    fn converged_role() -> RoleState {
        RoleState {
            can_login: true,
            superuser: false,
            create_db: false,
            create_role: false,
            replication: false,
            bypass_rls: false,
            connection_limit: 20,
            expired_or_expiring: false,
            admin_is_member: true,
        }
    }

    #[test]
    fn tenant_names_map_to_one_identifier() {
        assert_eq!(
            database_name("jazz-club-7").expect("a tenant name"),
            "tiqzy_jazz_club_7"
        );
        let longest = "a".repeat(tiqzy_crds::MAX_TENANT_NAME);
        assert_eq!(
            database_name(&longest)
                .expect("the longest tenant name")
                .len(),
            63
        );
    }

    #[test]
    fn names_that_are_not_dns_labels_are_refused() {
        let too_long = "a".repeat(tiqzy_crds::MAX_TENANT_NAME + 1);
        for bad in [
            "",
            "-a",
            "a-",
            "Jazz",
            "a_b",
            "a\"b",
            "a b",
            too_long.as_str(),
        ] {
            let err = database_name(bad).expect_err("not a tenant name");
            assert_eq!(err.reason(), "InvalidTenantName", "{bad:?}");
        }
    }

    #[test]
    fn a_converged_role_needs_no_alteration() {
        assert!(role_alterations(&converged_role(), 20).is_empty());
    }

    #[test]
    fn only_drifted_attributes_are_altered() {
        let role = RoleState {
            superuser: true,
            connection_limit: 5,
            ..converged_role()
        };
        assert_eq!(
            role_alterations(&role, 20),
            ["NOSUPERUSER", "CONNECTION LIMIT 20"]
        );
        let role = RoleState {
            can_login: false,
            create_role: true,
            expired_or_expiring: true,
            ..converged_role()
        };
        assert_eq!(
            role_alterations(&role, 20),
            ["LOGIN", "NOCREATEROLE", "VALID UNTIL 'infinity'"]
        );
    }

    #[test]
    fn the_url_encodes_user_info_and_keeps_the_parts() {
        let db = TenantDatabase::new(&server(), "jazz-club", "p@ss:w/rd%").expect("a tenant name");
        assert_eq!(
            db.url(),
            "postgres://tiqzy_jazz_club:p%40ss%3Aw%2Frd%25@db.example.net:5432/tiqzy_jazz_club?sslmode=require"
        );
        assert_eq!(
            (db.dbname.as_str(), db.user.as_str()),
            ("tiqzy_jazz_club", "tiqzy_jazz_club")
        );
    }

    #[test]
    fn an_ipv6_host_is_bracketed() {
        let server = PostgresServer {
            host: "fd00::5".to_owned(),
            ..server()
        };
        let url = TenantDatabase::new(&server, "a", "pw")
            .expect("a tenant name")
            .url();
        assert!(url.contains("@[fd00::5]:5432/"), "{url}");
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let db =
            TenantDatabase::new(&server(), "jazz-club", "tenant-secret").expect("a tenant name");
        let shown = format!("{:?} {:?}", db, server());
        assert!(!shown.contains("tenant-secret"), "{shown}");
        assert!(!shown.contains("admin-secret"), "{shown}");
        assert!(shown.contains("tiqzy_jazz_club"), "{shown}");
    }
}
