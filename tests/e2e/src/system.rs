//! System packages the tests need from Debian: PostgreSQL 15, Redis 7, `setpriv`, `ip`, Chromium
//! with chromedriver, and Node.js with npm.
//! Installed with apt when running as root; otherwise the error says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages and a program each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("postgresql-15", "/usr/lib/postgresql/15/bin/postgres"),
    ("redis-server", "redis-server"),
    ("util-linux", "setpriv"),
    // Network namespaces standing in for pods behind the test router (`ip netns`).
    ("iproute2", "ip"),
    // Browser tests of the storefront.
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    // The OAuth2 test issuer (npm oauth2-mock-server).
    ("nodejs", "node"),
    ("npm", "npm"),
];

/// Installs the missing packages (as root) or explains how to.
pub fn ensure_system_packages() -> Result<()> {
    ensure_packages(PACKAGES)
}

/// Installs the missing ones of `packages` (Debian package, a program it provides).
pub(crate) fn ensure_packages(packages: &[(&'static str, &str)]) -> Result<()> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing system packages; install them with:\n  sudo apt-get update && sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("tiqzy: installing {} with apt-get", missing.join(" "));
    let update = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !install.success() {
        bail!("apt-get install -y {} failed", missing.join(" "));
    }
    Ok(())
}

fn missing_packages(packages: &[(&'static str, &str)]) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(_, program)| {
            if program.starts_with('/') {
                !Path::new(program).exists()
            } else {
                which(program).is_none()
            }
        })
        .map(|(package, _)| *package)
        .collect()
}

/// PostgreSQL 15's programs (`initdb`, `postgres`), as Debian installs them.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let dir = Path::new("/usr/lib/postgresql/15/bin");
    if dir.join("postgres").exists() && dir.join("initdb").exists() {
        return Ok(dir.to_owned());
    }
    bail!(
        "PostgreSQL 15 is not installed (expected {})",
        dir.display()
    )
}

/// The first `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
