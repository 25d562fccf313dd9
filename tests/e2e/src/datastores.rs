//! PostgreSQL 15 and Redis 7 from Debian's packages, each started fresh for the run with an
//! admin account whose credentials the tests receive.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::pki::{TestCa, random_secret};
use crate::ports::{accepting, free_port};
use crate::process::{RunAs, Service};
use crate::system::{postgres_bin_dir, which};

/// A role whose sessions the server accepts only over TLS (`hostnossl ... reject`), for tests
/// that must tell an encrypted admin session from a plain one. Tests create it themselves.
pub const POSTGRES_TLS_ONLY_ROLE: &str = "tiqzy_tls_admin";

/// A fresh PostgreSQL server with TLS on (a self-signed certificate, as many private servers
/// have). The admin is a superuser with a password.
#[derive(Debug)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    service: Service,
}

impl Postgres {
    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }

    /// The postmaster's process id (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    pub async fn start(run: &Path) -> Result<Self> {
        Self::start_with_pods(run, None).await
    }

    /// Like [`Postgres::start`], and with `pods = Some((gateway, subnet))` also listening on
    /// the real node's bridge gateway and taking password logins from its pod subnet.
    pub async fn start_with_pods(run: &Path, pods: Option<(&str, &str)>) -> Result<Self> {
        Self::launch(run, pods, false).await
    }

    /// Like [`Postgres::start`], but every commit is flushed to disk as in production
    /// (the tests' servers skip fsync): for benchmarks whose figures depend on commits.
    pub async fn start_durable(run: &Path) -> Result<Self> {
        Self::launch(run, None, true).await
    }

    async fn launch(run: &Path, pods: Option<(&str, &str)>, durable: bool) -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = run.join("postgres");
        let data = dir.join("data");
        let sockets = dir.join("sockets");
        std::fs::create_dir_all(&sockets)?;
        // PostgreSQL refuses to run as root: run it as the package's `postgres` user.
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")?
                .context("running as root needs the `postgres` user from the postgresql package")?;
            for path in [&dir, &sockets] {
                std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            }
            Some(RunAs { user: user.name })
        } else {
            None
        };
        let admin_password = random_secret(32);
        let pwfile = dir.join("admin-password");
        std::fs::write(&pwfile, &admin_password)?;
        if let Some(run_as) = &run_as {
            let user = nix::unistd::User::from_name(&run_as.user)?.context("postgres user")?;
            std::os::unix::fs::chown(&pwfile, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }

        let mut initdb = Command::new("setpriv");
        if let Some(run_as) = &run_as {
            initdb.args([
                "--reuid",
                &run_as.user,
                "--regid",
                &run_as.user,
                "--init-groups",
            ]);
        }
        let out = initdb
            .arg("--")
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        std::fs::remove_file(&pwfile)?;
        if !out.status.success() {
            bail!(
                "postgres: initdb failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        tls_files(&data, run_as.as_ref())?;
        let mut listen = "127.0.0.1".to_owned();
        if let Some((gateway, subnet)) = pods {
            listen = format!("{listen},{gateway}");
            let hba = data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba)?;
            std::fs::write(
                &hba,
                format!("{rules}host all all {subnet} scram-sha-256\n"),
            )?;
        }
        let port = free_port()?;
        let mut settings = vec![
            format!("listen_addresses={listen}"),
            "max_connections=500".to_owned(),
            "ssl=on".to_owned(),
        ];
        if durable {
            // Benchmarks also read where the server's time went.
            settings.push("shared_preload_libraries=pg_stat_statements".to_owned());
        } else {
            settings.extend(
                [
                    "fsync=off",
                    "synchronous_commit=off",
                    "full_page_writes=off",
                ]
                .map(String::from),
            );
        }
        let mut args = vec![
            "-D".to_owned(),
            data.display().to_string(),
            "-p".to_owned(),
            port.to_string(),
            "-k".to_owned(),
            sockets.display().to_string(),
        ];
        for setting in settings {
            args.extend(["-c".to_owned(), setting]);
        }
        let mut service = Service::spawn(
            "postgres",
            &bin.join("postgres"),
            args,
            &run.join("logs"),
            run_as.as_ref(),
        )?;
        let pg = |password: String| async move {
            let (client, connection) = tokio_postgres::connect(
                &format!(
                    "host=127.0.0.1 port={port} user=postgres password={password} dbname=postgres"
                ),
                tokio_postgres::NoTls,
            )
            .await?;
            tokio::spawn(connection);
            client.simple_query("SELECT 1").await?;
            Ok(())
        };
        service
            .wait_ready(Duration::from_secs(30), || pg(admin_password.clone()))
            .await?;
        Ok(Self {
            host: "127.0.0.1".to_owned(),
            port,
            admin_user: "postgres".to_owned(),
            admin_password,
            service,
        })
    }

    /// `postgres://<admin>:<password>@127.0.0.1:<port>/<database>`
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{database}",
            self.admin_user, self.admin_password, self.host, self.port
        )
    }

    /// A key=value connection string for tokio-postgres.
    pub fn admin_config(&self, database: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={database}",
            self.host, self.port, self.admin_user, self.admin_password
        )
    }

    /// Runs PostgreSQL's own `pgbench` with `script` from `clients` connections for
    /// `seconds` against `database`: transactions per second, as pgbench reports them.
    pub fn pgbench(&self, database: &str, script: &str, clients: u32, seconds: u32) -> Result<f64> {
        let file = std::env::temp_dir().join(format!("tiqzy-pgbench-{}.sql", std::process::id()));
        std::fs::write(&file, script)?;
        let out = Command::new(postgres_bin_dir()?.join("pgbench"))
            .args(["-n", "-j", "2", "-h", &self.host, "-U", &self.admin_user])
            .arg(format!("--port={}", self.port))
            .arg(format!("--client={clients}"))
            .arg(format!("--time={seconds}"))
            .arg(format!("--file={}", file.display()))
            .arg(database)
            .env("PGPASSWORD", &self.admin_password)
            .output()
            .context("running pgbench")?;
        let _ = std::fs::remove_file(&file);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        text.lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("pgbench printed no tps:\n{text}"))
    }
}

/// A fresh Redis server with the default user disabled and an `admin` ACL user, listening
/// in plain text on `port` and with TLS on `tls_port` (a certificate from a CA of its own,
/// [`Redis::ca_pem`], naming `127.0.0.1` and, for pods, the bridge gateway, but not
/// `localhost`: tests reach it under that name to see a host the certificate does not carry).
#[derive(Debug)]
pub struct Redis {
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// PEM of the CA that signed the TLS certificate.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// The address pods use (the bridge gateway), when started for a real node.
    pub pod_host: Option<String>,
    service: Service,
}

impl Redis {
    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }

    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    pub async fn start(run: &Path) -> Result<Self> {
        Self::start_with_pods(run, None).await
    }

    /// Like [`Redis::start`], and with `pods = Some((gateway, subnet))` also listening on
    /// the real node's bridge gateway, whose address the TLS certificate then names too.
    pub async fn start_with_pods(run: &Path, pods: Option<(&str, &str)>) -> Result<Self> {
        let program = which("redis-server").context("redis-server is not installed")?;
        let dir: PathBuf = run.join("redis");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let tls_port = free_port()?;
        let admin_password = random_secret(32);
        let ca = TestCa::new("tiqzy-e2e-redis-ca")?;
        let mut names = vec!["127.0.0.1"];
        let mut bind = "127.0.0.1".to_owned();
        if let Some((gateway, _)) = pods {
            names.push(gateway);
            bind = format!("{bind} {gateway}");
        }
        let (cert_pem, key_pem) = ca.issue(&names)?;
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca.pem)?;
        std::fs::write(dir.join("tls.crt"), cert_pem)?;
        std::fs::write(dir.join("tls.key"), key_pem)?;
        let config = dir.join("redis.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\ntls-port {tls_port}\nbind {bind}\nprotected-mode yes\nsave \"\"\n\
                 appendonly no\ndir {dir}\ntls-cert-file {dir}/tls.crt\ntls-key-file {dir}/tls.key\n\
                 tls-ca-cert-file {dir}/ca.crt\ntls-auth-clients no\nuser default off\n\
                 user admin on >{admin_password} ~* &* +@all\n",
                dir = dir.display()
            ),
        )?;
        let mut service = Service::spawn("redis", &program, [&config], &run.join("logs"), None)?;
        let url = format!("redis://admin:{admin_password}@127.0.0.1:{port}/");
        let tls_url = format!("rediss://admin:{admin_password}@127.0.0.1:{tls_port}/");
        let ca_pem = ca.pem.clone();
        let ping = || {
            let (url, tls_url, ca_pem) = (url.clone(), tls_url.clone(), ca_pem.clone());
            async move {
                accepting(port).await?;
                accepting(tls_port).await?;
                for client in [redis::Client::open(url)?, tls_client(&tls_url, &ca_pem)?] {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
                    if pong != "PONG" {
                        bail!("PING answered {pong}")
                    }
                }
                Ok(())
            }
        };
        service.wait_ready(Duration::from_secs(20), ping).await?;
        Ok(Self {
            host: "127.0.0.1".to_owned(),
            port,
            tls_port,
            admin_user: "admin".to_owned(),
            admin_password,
            ca_pem: ca.pem,
            ca_file,
            pod_host: pods.map(|(gateway, _)| gateway.to_owned()),
            service,
        })
    }

    /// `redis://admin:<password>@127.0.0.1:<port>/`
    pub fn admin_url(&self) -> String {
        format!(
            "redis://{}:{}@{}:{}/",
            self.admin_user, self.admin_password, self.host, self.port
        )
    }

    /// `rediss://127.0.0.1:<tls port>`, without credentials, as a Platform names it.
    pub fn tls_url(&self) -> String {
        format!("rediss://{}:{}", self.host, self.tls_port)
    }

    /// `rediss://admin:<password>@127.0.0.1:<tls port>/`
    pub fn admin_tls_url(&self) -> String {
        format!(
            "rediss://{}:{}@{}:{}/",
            self.admin_user, self.admin_password, self.host, self.tls_port
        )
    }

    /// A client for a `rediss://` `url` that trusts this server's CA (and nothing else).
    pub fn tls_client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        tls_client(url, &self.ca_pem)
    }
}

fn tls_client(url: &str, ca_pem: &str) -> redis::RedisResult<redis::Client> {
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )
}

/// The server's certificate and key (`server.crt`/`server.key` in the data directory, where
/// `ssl=on` looks) and the rule that refuses [`POSTGRES_TLS_ONLY_ROLE`] without TLS.
fn tls_files(data: &Path, run_as: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let files = [
        (data.join("server.crt"), cert.pem()),
        (data.join("server.key"), key.serialize_pem()),
    ];
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba)?;
    std::fs::write(
        &hba,
        format!("hostnossl all {POSTGRES_TLS_ONLY_ROLE} 0.0.0.0/0 reject\n{rules}"),
    )?;
    for (path, pem) in &files {
        std::fs::write(path, pem)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(run_as) = run_as {
            let user = nix::unistd::User::from_name(&run_as.user)?.context("postgres user")?;
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }
    }
    Ok(())
}
