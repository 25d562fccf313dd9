//! A tenant's PostgreSQL database and Redis user, ensured and removed on the real servers.

use ::redis::aio::MultiplexedConnection;
use tiqzy_e2e::Harness;
use tiqzy_operator::external::postgres::{
    PostgresServer, TenantDatabase, database_name, ensure_database, remove_database,
};
use tiqzy_operator::external::redis::{
    RedisServer, TenantCache, ensure_cache_user, remove_cache_user,
};
use tokio::sync::RwLock;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Tests share the servers; the one comparing whole-server snapshots runs alone.
static SERVERS: RwLock<()> = RwLock::const_new(());

/// Quotes, a statement terminator and a comment: anything spliced into SQL unquoted breaks.
const TRICKY: &str = "it's a \"p@ss\" \\ %41; DROP ROLE postgres; --";

fn password(tenant: &str) -> String {
    format!("{tenant}:{TRICKY}")
}

fn pg_server(h: &Harness) -> PostgresServer {
    PostgresServer {
        host: h.postgres.host.clone(),
        port: h.postgres.port,
        admin_user: h.postgres.admin_user.clone(),
        admin_password: h.postgres.admin_password.clone(),
        admin_database: "postgres".to_owned(),
        ssl_mode: "disable".to_owned(),
    }
}

fn redis_server(h: &Harness) -> RedisServer {
    RedisServer {
        host: h.redis.host.clone(),
        port: h.redis.port,
        admin_user: h.redis.admin_user.clone(),
        admin_password: h.redis.admin_password.clone(),
        tls: false,
        ca_pem: None,
    }
}

/// The harness's Redis on its TLS port, as a Platform with `rediss://` and `caSecretRef`
/// names it.
fn redis_tls_server(h: &Harness) -> RedisServer {
    RedisServer {
        port: h.redis.tls_port,
        tls: true,
        ca_pem: Some(h.redis.ca_pem.clone()),
        ..redis_server(h)
    }
}

async fn login(
    h: &Harness,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(&h.postgres.host)
        .port(h.postgres.port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn pg_admin(h: &Harness) -> Client {
    login(
        h,
        &h.postgres.admin_user,
        &h.postgres.admin_password,
        "postgres",
    )
    .await
    .expect("the harness admin logs in")
}

/// Logs in as the tenant's storefront would, from the URL meant for its Secret.
async fn tenant_login(h: &Harness, tenant: &str) -> Result<Client, tokio_postgres::Error> {
    let db = TenantDatabase::new(&pg_server(h), tenant, &password(tenant)).expect("tenant");
    let (client, connection) = tokio_postgres::connect(&db.url(), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn count(client: &Client, sql: &str, name: &str) -> i64 {
    client
        .query_one(sql, &[&name])
        .await
        .expect("count query")
        .get(0)
}

async fn roles_named(admin: &Client, name: &str) -> i64 {
    count(
        admin,
        "SELECT count(*) FROM pg_roles WHERE rolname = $1",
        name,
    )
    .await
}

async fn databases_named(admin: &Client, name: &str) -> i64 {
    count(
        admin,
        "SELECT count(*) FROM pg_database WHERE datname = $1",
        name,
    )
    .await
}

fn assert_code(result: Result<impl Sized, tokio_postgres::Error>, code: &SqlState, what: &str) {
    match result {
        Ok(_) => panic!(
            "{what}: expected SQLSTATE {}, but it succeeded",
            code.code()
        ),
        Err(e) => assert_eq!(e.code(), Some(code), "{what}: {e:?}"),
    }
}

async fn ensure(h: &Harness, tenant: &str) {
    ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("ensure database");
}

#[tokio::test]
async fn ensure_twice_gives_one_role_one_database_and_no_changes() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-twice";
    let name = database_name(tenant).expect("tenant");
    let first = ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("first ensure");
    assert!(first.created_role && first.created_database, "{first:?}");
    let second = ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("second ensure");
    assert!(
        !second.any(),
        "a converged tenant changes nothing: {second:?}"
    );

    let admin = pg_admin(h).await;
    assert_eq!(roles_named(&admin, &name).await, 1);
    assert_eq!(databases_named(&admin, &name).await, 1);
    let row = admin
        .query_one(
            "SELECT r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, \
                    r.rolbypassrls, r.rolconnlimit, pg_get_userbyid(d.datdba)::text \
             FROM pg_roles r, pg_database d WHERE r.rolname = $1 AND d.datname = $1",
            &[&name],
        )
        .await
        .expect("role and database");
    let flags: Vec<bool> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(flags, [true, false, false, false, false, false]);
    assert_eq!(row.get::<_, i32>(6), 20);
    assert_eq!(row.get::<_, String>(7), name, "the role owns its database");

    let tenant_client = tenant_login(h, tenant).await.expect("tenant logs in");
    tenant_client
        .batch_execute("CREATE TABLE public.orders (id bigint); INSERT INTO orders VALUES (1)")
        .await
        .expect("the tenant can create tables in its own database");
}

#[tokio::test]
async fn a_changed_connection_limit_is_altered() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-limit";
    ensure(h, tenant).await;
    let changes = ensure_database(&pg_server(h), tenant, &password(tenant), 7)
        .await
        .expect("ensure with a new limit");
    assert!(changes.altered_role && !changes.created_role, "{changes:?}");
    let name = database_name(tenant).expect("tenant");
    let limit: i32 = pg_admin(h)
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .expect("role")
        .get(0);
    assert_eq!(limit, 7);
}

#[tokio::test]
async fn one_tenant_cannot_connect_to_anothers_database() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    ensure(h, "pg-iso-a").await;
    ensure(h, "pg-iso-b").await;
    let a = database_name("pg-iso-a").expect("tenant");
    let b = database_name("pg-iso-b").expect("tenant");
    login(h, &a, &password("pg-iso-a"), &a)
        .await
        .expect("A reaches its own database");
    assert_code(
        login(h, &a, &password("pg-iso-a"), &b).await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "A connecting to B's database",
    );
    assert_code(
        login(h, &b, &password("pg-iso-a"), &b).await,
        &SqlState::INVALID_PASSWORD,
        "A's password for B's role",
    );
}

#[tokio::test]
async fn public_cannot_connect_to_a_tenant_database() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-public";
    ensure(h, tenant).await;
    let admin = pg_admin(h).await;
    admin
        .batch_execute("CREATE ROLE plain_public_probe LOGIN PASSWORD 'probe-password'")
        .await
        .expect("a plain role");
    login(h, "plain_public_probe", "probe-password", "postgres")
        .await
        .expect("the plain role can log in where PUBLIC may connect");
    let name = database_name(tenant).expect("tenant");
    assert_code(
        login(h, "plain_public_probe", "probe-password", &name).await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "a plain role connecting to a tenant database",
    );
}

#[tokio::test]
async fn a_tenant_role_cannot_create_databases_or_roles() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-noddl";
    ensure(h, tenant).await;
    let client = tenant_login(h, tenant).await.expect("tenant logs in");
    assert_code(
        client.batch_execute("CREATE DATABASE tenant_made").await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "CREATE DATABASE as a tenant",
    );
    assert_code(
        client.batch_execute("CREATE ROLE tenant_made LOGIN").await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "CREATE ROLE as a tenant",
    );
}

#[tokio::test]
async fn a_drifted_password_is_reset_to_the_callers() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-drift";
    let name = database_name(tenant).expect("tenant");
    ensure(h, tenant).await;
    pg_admin(h)
        .await
        .batch_execute(&format!("ALTER ROLE {name} PASSWORD 'changed-by-someone'"))
        .await
        .expect("drift the password");
    assert_code(
        tenant_login(h, tenant).await,
        &SqlState::INVALID_PASSWORD,
        "login after drift",
    );

    let changes = ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("ensure after drift");
    assert!(changes.reset_password, "{changes:?}");
    tenant_login(h, tenant)
        .await
        .expect("the caller's password works again");
    let again = ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("ensure once more");
    assert!(!again.any(), "{again:?}");
}

#[tokio::test]
async fn drifted_attributes_and_privileges_are_restored() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-attrs";
    let name = database_name(tenant).expect("tenant");
    ensure(h, tenant).await;
    let admin = pg_admin(h).await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {name} SUPERUSER CREATEDB CREATEROLE NOLOGIN; \
             GRANT CONNECT ON DATABASE {name} TO PUBLIC; \
             ALTER DATABASE {name} OWNER TO {admin_user}",
            admin_user = h.postgres.admin_user
        ))
        .await
        .expect("drift the role and database");

    let changes = ensure_database(&pg_server(h), tenant, &password(tenant), 20)
        .await
        .expect("ensure after drift");
    assert!(
        changes.altered_role && changes.altered_database,
        "{changes:?}"
    );
    let row = admin
        .query_one(
            "SELECT r.rolsuper OR r.rolcreatedb OR r.rolcreaterole, r.rolcanlogin, \
                    pg_get_userbyid(d.datdba)::text, has_database_privilege('public', d.oid, 'CONNECT') \
             FROM pg_roles r, pg_database d WHERE r.rolname = $1 AND d.datname = $1",
            &[&name],
        )
        .await
        .expect("role and database");
    assert!(!row.get::<_, bool>(0), "privileged attributes are gone");
    assert!(row.get::<_, bool>(1), "LOGIN is back");
    assert_eq!(
        row.get::<_, String>(2),
        name,
        "the tenant owns its database again"
    );
    assert!(!row.get::<_, bool>(3), "PUBLIC lost CONNECT again");
    tenant_login(h, tenant).await.expect("the tenant logs in");
}

#[tokio::test]
async fn remove_ends_sessions_and_leaves_no_database_or_role() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-remove";
    let name = database_name(tenant).expect("tenant");
    ensure(h, tenant).await;
    let session = tenant_login(h, tenant).await.expect("tenant logs in");

    assert!(
        remove_database(&pg_server(h), tenant)
            .await
            .expect("remove")
    );
    let admin = pg_admin(h).await;
    assert_eq!(roles_named(&admin, &name).await, 0);
    assert_eq!(databases_named(&admin, &name).await, 0);
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the tenant's open session was ended"
    );
    assert!(
        !remove_database(&pg_server(h), tenant)
            .await
            .expect("remove again"),
        "nothing left to remove"
    );
}

#[tokio::test]
async fn concurrent_ensures_of_one_tenant_both_succeed() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "pg-race";
    let server = pg_server(h);
    let pw = password(tenant);
    let (a, b) = tokio::join!(
        ensure_database(&server, tenant, &pw, 20),
        ensure_database(&server, tenant, &pw, 20),
    );
    let (a, b) = (a.expect("first racer"), b.expect("second racer"));
    assert!(a.created_database ^ b.created_database, "{a:?} {b:?}");
    let name = database_name(tenant).expect("tenant");
    let admin = pg_admin(h).await;
    assert_eq!(roles_named(&admin, &name).await, 1);
    assert_eq!(databases_named(&admin, &name).await, 1);
    tenant_login(h, tenant).await.expect("the tenant logs in");
}

#[tokio::test]
async fn a_createdb_createrole_admin_manages_tenants_without_superuser() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    pg_admin(h)
        .await
        .batch_execute(
            "CREATE ROLE managed_admin LOGIN CREATEDB CREATEROLE PASSWORD 'managed-admin-pw'",
        )
        .await
        .expect("a managed-service style admin");
    let server = PostgresServer {
        admin_user: "managed_admin".to_owned(),
        admin_password: "managed-admin-pw".to_owned(),
        ..pg_server(h)
    };
    let tenant = "pg-managed";
    let name = database_name(tenant).expect("tenant");
    ensure_database(&server, tenant, &password(tenant), 20)
        .await
        .expect("ensure as a non-superuser");
    let again = ensure_database(&server, tenant, &password(tenant), 20)
        .await
        .expect("ensure again");
    assert!(!again.any(), "{again:?}");
    let session = tenant_login(h, tenant).await.expect("tenant logs in");
    assert!(remove_database(&server, tenant).await.expect("remove"));
    assert!(session.simple_query("SELECT 1").await.is_err());
    let admin = pg_admin(h).await;
    assert_eq!(roles_named(&admin, &name).await, 0);
    assert_eq!(databases_named(&admin, &name).await, 0);
}

#[tokio::test]
async fn an_admin_without_createrole_gets_admin_auth_failed() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    pg_admin(h)
        .await
        .batch_execute("CREATE ROLE powerless_admin LOGIN PASSWORD 'powerless-pw'")
        .await
        .expect("an admin without privileges");
    let server = PostgresServer {
        admin_user: "powerless_admin".to_owned(),
        admin_password: "powerless-pw".to_owned(),
        ..pg_server(h)
    };
    let err = ensure_database(&server, "pg-powerless", &password("pg-powerless"), 20)
        .await
        .expect_err("no CREATEROLE");
    assert_eq!(err.reason(), "AdminAuthFailed", "{err}");
}

#[tokio::test]
async fn a_wrong_admin_password_is_admin_auth_failed_and_not_shown() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let server = PostgresServer {
        admin_password: "wrong-admin-password".to_owned(),
        ..pg_server(h)
    };
    let err = ensure_database(&server, "pg-wrongpw", &password("pg-wrongpw"), 20)
        .await
        .expect_err("wrong admin password");
    assert_eq!(err.reason(), "AdminAuthFailed", "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-admin-password"), "{shown}");
    assert!(!shown.contains(TRICKY), "{shown}");

    let redis = RedisServer {
        admin_password: "wrong-admin-password".to_owned(),
        ..redis_server(h)
    };
    let err = ensure_cache_user(&redis, "rd-wrongpw", &password("rd-wrongpw"))
        .await
        .expect_err("wrong admin password");
    assert_eq!(err.reason(), "AdminAuthFailed", "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-admin-password"), "{shown}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    // Port 1 is privileged and served by nothing here; a released ephemeral port could be
    // taken again by a parallel test.
    let port = 1;
    let pg = PostgresServer {
        port,
        ..pg_server(h)
    };
    let err = ensure_database(&pg, "pg-closed", &password("pg-closed"), 20)
        .await
        .expect_err("nothing listens");
    assert_eq!(err.reason(), "DatabaseUnreachable", "{err}");
    let err = remove_database(&pg, "pg-closed")
        .await
        .expect_err("nothing listens");
    assert_eq!(err.reason(), "DatabaseUnreachable", "{err}");

    let redis = RedisServer {
        port,
        ..redis_server(h)
    };
    let err = ensure_cache_user(&redis, "rd-closed", "pw")
        .await
        .expect_err("nothing listens");
    assert_eq!(err.reason(), "CacheUnreachable", "{err}");
    let err = remove_cache_user(&redis, "rd-closed")
        .await
        .expect_err("nothing listens");
    assert_eq!(err.reason(), "CacheUnreachable", "{err}");
}

async fn redis_login(
    h: &Harness,
    tenant: &str,
    pw: &str,
) -> ::redis::RedisResult<MultiplexedConnection> {
    let cache = TenantCache::new(&redis_server(h), tenant, pw).expect("tenant");
    ::redis::Client::open(cache.url())?
        .get_multiplexed_async_connection()
        .await
}

async fn redis_admin(h: &Harness) -> MultiplexedConnection {
    ::redis::Client::open(h.redis.admin_url())
        .expect("admin url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connects")
}

/// Runs a command as `conn` and returns the server's error code, if any.
async fn refusal(conn: &mut MultiplexedConnection, args: &[&str]) -> Option<String> {
    let mut cmd = ::redis::cmd(args[0]);
    cmd.arg(&args[1..]);
    match cmd.query_async::<::redis::Value>(conn).await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("<no code>").to_owned()),
    }
}

#[tokio::test]
async fn a_tenant_uses_its_prefix_and_nothing_else() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let server = redis_server(h);
    for tenant in ["rd-own-a", "rd-own-b"] {
        assert!(
            ensure_cache_user(&server, tenant, &password(tenant))
                .await
                .expect("ensure user")
        );
    }
    let mut b = redis_login(h, "rd-own-b", &password("rd-own-b"))
        .await
        .expect("B logs in");
    assert_eq!(
        refusal(&mut b, &["SET", "t:rd-own-b:secret", "b"]).await,
        None
    );

    let mut a = redis_login(h, "rd-own-a", &password("rd-own-a"))
        .await
        .expect("A logs in");
    let allowed: &[&[&str]] = &[
        &["PING"],
        &["CLIENT", "SETNAME", "storefront"],
        &["SET", "t:rd-own-a:page", "html"],
        &["GET", "t:rd-own-a:page"],
        &["EXPIRE", "t:rd-own-a:page", "60"],
        &["INCR", "t:rd-own-a:hits"],
        &["HSET", "t:rd-own-a:hold", "seat", "1"],
        &["MGET", "t:rd-own-a:page", "t:rd-own-a:hits"],
        &["DEL", "t:rd-own-a:hits"],
        &["PUBLISH", "t:rd-own-a:events", "sold"],
    ];
    for args in allowed {
        assert_eq!(refusal(&mut a, args).await, None, "{args:?}");
    }
    let page: String = ::redis::cmd("GET")
        .arg("t:rd-own-a:page")
        .query_async(&mut a)
        .await
        .expect("GET");
    assert_eq!(page, "html");

    let refused: &[&[&str]] = &[
        &["GET", "t:rd-own-b:secret"],
        &["SET", "t:rd-own-b:secret", "a"],
        &["DEL", "t:rd-own-b:secret"],
        &["SET", "unprefixed", "a"],
        &["MGET", "t:rd-own-a:page", "t:rd-own-b:secret"],
        &["PUBLISH", "t:rd-own-b:events", "x"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["ACL", "LIST"],
        &["ACL", "SETUSER", "tiqzy-rd-own-a", "~*"],
        &["EVAL", "return 1", "0"],
        &["SELECT", "1"],
        &["CLIENT", "LIST"],
    ];
    for args in refused {
        assert_eq!(
            refusal(&mut a, args).await.as_deref(),
            Some("NOPERM"),
            "{args:?}"
        );
    }
    let secret: String = ::redis::cmd("GET")
        .arg("t:rd-own-b:secret")
        .query_async(&mut b)
        .await
        .expect("B reads its key");
    assert_eq!(secret, "b", "A changed nothing of B's");
}

#[tokio::test]
async fn ensure_again_replaces_the_rules_and_the_password() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let server = redis_server(h);
    let tenant = "rd-twice";
    assert!(
        ensure_cache_user(&server, tenant, "first-password")
            .await
            .expect("ensure")
    );
    // Someone widens the user by hand.
    let mut admin = redis_admin(h).await;
    let () = ::redis::cmd("ACL")
        .arg(&["SETUSER", "tiqzy-rd-twice", "~*", "+@all"])
        .query_async(&mut admin)
        .await
        .expect("widen the user");

    assert!(
        !ensure_cache_user(&server, tenant, &password(tenant))
            .await
            .expect("ensure again")
    );
    let users: Vec<String> = ::redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .expect("ACL USERS");
    assert_eq!(users.iter().filter(|u| *u == "tiqzy-rd-twice").count(), 1);
    let err = redis_login(h, tenant, "first-password")
        .await
        .expect_err("the old password is gone");
    assert_eq!(
        err.kind(),
        ::redis::ErrorKind::AuthenticationFailed,
        "{err}"
    );
    let mut conn = redis_login(h, tenant, &password(tenant))
        .await
        .expect("the new password works");
    assert_eq!(
        refusal(&mut conn, &["SET", "t:rd-twice:k", "v"]).await,
        None
    );
    assert_eq!(
        refusal(&mut conn, &["SET", "elsewhere", "v"])
            .await
            .as_deref(),
        Some("NOPERM"),
        "the hand-made ~* is gone"
    );
    assert_eq!(
        refusal(&mut conn, &["CONFIG", "GET", "*"]).await.as_deref(),
        Some("NOPERM"),
        "the hand-made +@all is gone"
    );
}

#[tokio::test]
async fn after_remove_the_user_cannot_authenticate() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let server = redis_server(h);
    let tenant = "rd-remove";
    ensure_cache_user(&server, tenant, &password(tenant))
        .await
        .expect("ensure");
    let mut session = redis_login(h, tenant, &password(tenant))
        .await
        .expect("tenant logs in");
    assert_eq!(refusal(&mut session, &["PING"]).await, None);

    assert!(remove_cache_user(&server, tenant).await.expect("remove"));
    assert!(
        refusal(&mut session, &["PING"]).await.is_some(),
        "the open session was closed"
    );
    let err = redis_login(h, tenant, &password(tenant))
        .await
        .expect_err("no such user any more");
    assert_eq!(
        err.kind(),
        ::redis::ErrorKind::AuthenticationFailed,
        "{err}"
    );
    assert!(
        !remove_cache_user(&server, tenant)
            .await
            .expect("remove again")
    );
}

/// Everything on both servers that a tenant could leave behind.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    databases: Vec<String>,
    roles: Vec<String>,
    memberships: i64,
    acl_users: Vec<String>,
}

async fn snapshot(h: &Harness) -> Snapshot {
    let admin = pg_admin(h).await;
    let names = |sql: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query(sql, &[])
                .await
                .expect("catalog query")
                .iter()
                .map(|row| row.get(0))
                .collect::<Vec<String>>()
        }
    };
    let databases = names("SELECT datname::text FROM pg_database ORDER BY 1").await;
    let roles = names("SELECT rolname::text FROM pg_roles ORDER BY 1").await;
    let memberships: i64 = admin
        .query_one("SELECT count(*) FROM pg_auth_members", &[])
        .await
        .expect("memberships")
        .get(0);
    let mut acl_users: Vec<String> = ::redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis_admin(h).await)
        .await
        .expect("ACL USERS");
    acl_users.sort();
    Snapshot {
        databases,
        roles,
        memberships,
        acl_users,
    }
}

#[tokio::test]
async fn fifty_tenants_ensured_then_removed_leave_the_servers_as_they_were() {
    let _alone = SERVERS.write().await;
    let h = Harness::shared();
    let before = snapshot(h).await;
    let tenants: Vec<String> = (0..50).map(|i| format!("bulk-{i:02}")).collect();

    let mut tasks = tokio::task::JoinSet::new();
    for tenant in tenants.clone() {
        let (pg, redis) = (pg_server(h), redis_server(h));
        tasks.spawn(async move {
            let pw = password(&tenant);
            ensure_database(&pg, &tenant, &pw, 5)
                .await
                .expect("ensure database");
            ensure_cache_user(&redis, &tenant, &pw)
                .await
                .expect("ensure user");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("ensure task");
    }
    let during = snapshot(h).await;
    assert_eq!(during.databases.len(), before.databases.len() + 50);
    assert_eq!(during.roles.len(), before.roles.len() + 50);
    assert_eq!(during.acl_users.len(), before.acl_users.len() + 50);

    for tenant in tenants {
        let (pg, redis) = (pg_server(h), redis_server(h));
        tasks.spawn(async move {
            assert!(
                remove_database(&pg, &tenant)
                    .await
                    .expect("remove database")
            );
            assert!(
                remove_cache_user(&redis, &tenant)
                    .await
                    .expect("remove user")
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("remove task");
    }
    assert_eq!(snapshot(h).await, before);
}

/// The harness's server refuses `POSTGRES_TLS_ONLY_ROLE` without TLS and serves a self-signed
/// certificate: `require` must encrypt, `disable` must not, and `verify-full` must not trust
/// a certificate no public root vouches for.
#[tokio::test]
async fn admin_sessions_use_tls_as_the_platform_asks() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let admin = pg_admin(h).await;
    let role = tiqzy_e2e::POSTGRES_TLS_ONLY_ROLE;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                     CREATE ROLE {role} LOGIN CREATEDB CREATEROLE PASSWORD 'tls-only';
                 END IF;
             END $$"
        ))
        .await
        .expect("the TLS-only admin role");
    let server = |ssl_mode: &str| PostgresServer {
        admin_user: role.to_owned(),
        admin_password: "tls-only".to_owned(),
        ssl_mode: ssl_mode.to_owned(),
        ..pg_server(h)
    };
    let tenant = "tls-managed";

    let changes = ensure_database(&server("require"), tenant, &password(tenant), 5)
        .await
        .expect("an encrypted admin session does the work");
    assert!(changes.created_role && changes.created_database);
    assert!(
        ensure_database(&server("prefer"), tenant, &password(tenant), 5)
            .await
            .is_ok(),
        "prefer encrypts when the server offers TLS"
    );

    let plain = ensure_database(&server("disable"), tenant, &password(tenant), 5)
        .await
        .expect_err("the server refuses this role in the clear");
    assert!(plain.to_string().contains("no encryption"), "{plain}");

    let unverified = ensure_database(&server("verify-full"), tenant, &password(tenant), 5)
        .await
        .expect_err("a self-signed certificate is not trusted under verify-full");
    assert!(
        unverified
            .to_string()
            .to_lowercase()
            .contains("certificate"),
        "{unverified}"
    );
    assert!(
        !unverified.to_string().contains("tls-only"),
        "no password in errors: {unverified}"
    );

    assert!(
        remove_database(&server("require"), tenant)
            .await
            .expect("removed over TLS")
    );
}

/// Whether `tenant`'s ACL user exists, asked as the admin.
async fn acl_user_exists(h: &Harness, tenant: &str) -> bool {
    let user: ::redis::Value = ::redis::cmd("ACL")
        .arg("GETUSER")
        .arg(format!("tiqzy-{tenant}"))
        .query_async(&mut redis_admin(h).await)
        .await
        .expect("ACL GETUSER");
    user != ::redis::Value::Nil
}

/// The storefront's side: the runtime's own cache, given what the operator writes for it.
fn storefront_cache(cache: &TenantCache) -> tiqzy_runtime::cache::Cache {
    tiqzy_runtime::cache::Cache::new(
        Some(&cache.url()),
        cache.ca_pem.as_deref(),
        &cache.key_prefix,
    )
    .expect("the runtime takes the operator's URL and CA")
}

#[tokio::test]
async fn over_tls_the_cache_user_is_created_and_the_storefront_uses_it() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let server = redis_tls_server(h);
    let tenant = "rd-tls";
    assert!(
        ensure_cache_user(&server, tenant, &password(tenant))
            .await
            .expect("the admin session over TLS sets up the user")
    );
    let cache = TenantCache::new(&server, tenant, &password(tenant)).expect("tenant");
    assert!(
        cache.url().starts_with("rediss://"),
        "the storefront is told to use TLS"
    );

    let storefront = storefront_cache(&cache);
    storefront.put("page:events", "<h1>cached</h1>", 60).await;
    assert_eq!(
        storefront.get("page:events").await.as_deref(),
        Some("<h1>cached</h1>"),
        "the storefront caches over TLS as its own user"
    );
    let stored: Option<String> = ::redis::cmd("GET")
        .arg("t:rd-tls:page:events")
        .query_async(&mut redis_admin(h).await)
        .await
        .expect("GET");
    assert_eq!(stored.as_deref(), Some("<h1>cached</h1>"));

    // The tenant's credentials on the plain-text port work too (the harness serves both), but
    // the URL the operator wrote never goes there: its scheme and port are TLS only.
    let plain_url = cache.url().replace("rediss://", "redis://");
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ::redis::Client::open(plain_url)
            .expect("url")
            .get_multiplexed_async_connection(),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "plain text to the TLS port gets nowhere"
    );

    assert!(
        remove_cache_user(&server, tenant)
            .await
            .expect("removed over TLS")
    );
    assert!(!acl_user_exists(h, tenant).await);
}

/// `rediss://` pointed at a server that answers only in plain text: nothing is sent in the
/// clear, by the operator or the storefront.
#[tokio::test]
async fn rediss_never_falls_back_to_plain_text() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let plain_port = RedisServer {
        port: h.redis.port,
        ..redis_tls_server(h)
    };
    let tenant = "rd-tls-plain";
    let err = ensure_cache_user(&plain_port, tenant, &password(tenant))
        .await
        .expect_err("no TLS on that port");
    assert_eq!(err.reason(), "CacheUnreachable", "{err}");
    assert!(
        !format!("{err} {err:?}").contains(&h.redis.admin_password),
        "{err}"
    );
    assert!(
        !acl_user_exists(h, tenant).await,
        "no user was created in plain text"
    );

    // The storefront, given a user that does exist on the server, still caches nothing there.
    ensure_cache_user(&redis_server(h), tenant, &password(tenant))
        .await
        .expect("set up in plain text, on purpose");
    let cache = TenantCache::new(&plain_port, tenant, &password(tenant)).expect("tenant");
    let storefront = storefront_cache(&cache);
    storefront.put("page:events", "leaked", 60).await;
    assert_eq!(storefront.get("page:events").await, None);
    let stored: Option<String> = ::redis::cmd("GET")
        .arg(format!("t:{tenant}:page:events"))
        .query_async(&mut redis_admin(h).await)
        .await
        .expect("GET");
    assert_eq!(stored, None, "nothing reached the server in plain text");
    remove_cache_user(&redis_server(h), tenant)
        .await
        .expect("clean up");
}

/// A certificate from a CA the Platform did not name, or for another host, is reported as
/// such, and no user is created.
#[tokio::test]
async fn an_untrusted_certificate_is_reported_as_cache_certificate_untrusted() {
    let _shared = SERVERS.read().await;
    let h = Harness::shared();
    let tenant = "rd-tls-untrusted";
    let cases = [
        (
            "another CA (the API server's)",
            RedisServer {
                ca_pem: Some(h.kube.ca_pem.clone()),
                ..redis_tls_server(h)
            },
            "UnknownIssuer",
        ),
        (
            "only the public roots",
            RedisServer {
                ca_pem: None,
                ..redis_tls_server(h)
            },
            "UnknownIssuer",
        ),
        (
            "a host the certificate does not name",
            RedisServer {
                host: "localhost".to_owned(),
                ..redis_tls_server(h)
            },
            "not valid for name",
        ),
    ];
    for (what, server, cause) in cases {
        let err = ensure_cache_user(&server, tenant, &password(tenant))
            .await
            .expect_err(what);
        assert_eq!(err.reason(), "CacheCertificateUntrusted", "{what}: {err}");
        let message = err.to_string();
        assert!(message.contains("not trusted"), "{what}: {message}");
        assert!(message.contains(cause), "{what}: {message}");
        assert!(
            !message.contains(&h.redis.admin_password) && !message.contains(TRICKY),
            "{what}: {message}"
        );
        let err = remove_cache_user(&server, tenant).await.expect_err(what);
        assert_eq!(err.reason(), "CacheCertificateUntrusted", "{what}: {err}");
    }
    assert!(!acl_user_exists(h, tenant).await);
}
