//! Compile-checked SQL of the crates that own a database (the runtime, the payments
//! service): regenerates each one's `.sqlx/` from a fresh PostgreSQL database with its
//! migrations applied, or (`check`) fails when the committed data has drifted from the
//! queries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Must match the `sqlx` version in tenant-runtime/Cargo.toml and payments/Cargo.toml.
const SQLX_CLI_VERSION: &str = "0.9.0";
/// Each crate with `query!` macros (its directory) and the scratch database it is prepared on.
const CRATES: [(&str, &str); 2] = [
    ("tenant-runtime", "tiqzy_runtime"),
    ("payments", "tiqzy_payments"),
];

pub fn prepare(check: bool) -> Result<()> {
    ensure_sqlx_cli()?;
    // Current-thread runtime on this thread: PostgreSQL is tied to the thread that started
    // it and stops when `postgres` is dropped below.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let run = tiqzy_e2e::target_dir().join("sqlx-prepare");
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(run.join("logs"))
            .with_context(|| format!("creating {}", run.display()))?;
        let postgres = tiqzy_e2e::Postgres::start(&run).await?;
        let (client, connection) =
            tokio_postgres::connect(&postgres.admin_config("postgres"), tokio_postgres::NoTls)
                .await
                .context("connecting to the fresh PostgreSQL")?;
        tokio::spawn(connection);
        for (dir, database) in CRATES {
            client
                .simple_query(&format!("CREATE DATABASE {database}"))
                .await
                .context("creating the database")?;
            let url = postgres.admin_url(database);
            let crate_dir = crate_dir(dir);
            sqlx(
                &crate_dir,
                &url,
                &["migrate", "run", "--source", "migrations"],
            )?;
            let mut args = vec!["prepare"];
            if check {
                args.push("--check");
            }
            sqlx(&crate_dir, &url, &args).with_context(|| {
                if check {
                    format!("{dir}/.sqlx is out of date; run `cargo xtask gen sqlx` and commit it")
                } else {
                    format!("preparing {dir}/.sqlx")
                }
            })?;
        }
        drop(postgres);
        Ok(())
    })
}

fn crate_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Installs sqlx-cli unless this version is on the path already.
pub fn ensure_sqlx_cli() -> Result<()> {
    let installed = Command::new(cargo())
        .args(["sqlx", "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(SQLX_CLI_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing sqlx-cli {SQLX_CLI_VERSION} (a few minutes, once)");
    let status = Command::new(cargo())
        .args([
            "install",
            "sqlx-cli",
            "--version",
            SQLX_CLI_VERSION,
            "--no-default-features",
            "--features",
            "postgres,rustls",
            "--locked",
        ])
        .status()
        .context("running cargo install sqlx-cli")?;
    if !status.success() {
        bail!("installing sqlx-cli {SQLX_CLI_VERSION} failed ({status})");
    }
    Ok(())
}

fn sqlx(dir: &Path, database_url: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo sqlx {}", args.join(" "));
    let status = Command::new(cargo())
        .arg("sqlx")
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        // The offline data must come from the live database, never from itself.
        .env_remove("SQLX_OFFLINE")
        .status()
        .with_context(|| format!("running cargo sqlx {}", args[0]))?;
    if !status.success() {
        bail!("cargo sqlx {} failed ({status})", args.join(" "));
    }
    Ok(())
}
