//! npm packages the tests run (the OAuth2 / Entra ID test issuer), installed once per machine
//! into the cache, with a script of ours beside them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

/// `npm install`s `package` (`name@version`) into the cache unless it is there, writes
/// `script` next to it as `script_name`, and returns the directory. A finished install and
/// the script are moved into place atomically, so concurrent tests and runs never see half
/// of either.
pub fn npm_package_with_script(package: &str, script_name: &str, script: &str) -> Result<PathBuf> {
    static STAGING: AtomicU64 = AtomicU64::new(0);
    let unique = || {
        format!(
            "{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, Ordering::Relaxed)
        )
    };
    let dir = crate::cache_dir()
        .join("npm")
        .join(package.replace('@', "-"));
    let name = package.rsplit_once('@').map_or(package, |(n, _)| n);
    if !dir
        .join("node_modules")
        .join(name)
        .join("package.json")
        .exists()
    {
        let staging = dir.with_extension(format!("tmp-{}", unique()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&staging)
            .arg(package)
            .status()
            .context("running npm (Node.js 20.19+ is needed)")?;
        if !status.success() {
            bail!("npm install {package} failed");
        }
        if std::fs::rename(&staging, &dir).is_err() {
            // Another test or run finished first; use theirs.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let staging = dir.join(format!("{script_name}.{}", unique()));
    std::fs::write(&staging, script)?;
    std::fs::rename(&staging, dir.join(script_name))?;
    Ok(dir)
}
