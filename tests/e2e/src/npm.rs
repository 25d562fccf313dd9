//! npm packages the tests run (the OAuth2 / Entra ID test issuer, the Azure Blob emulator),
//! installed once per machine into the cache, some with a script of ours beside them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

/// `npm install`s `package` (`name@version`) into the cache unless it is there, and returns
/// the directory (its programs are in `node_modules/.bin`). A finished install is moved into
/// place atomically, so concurrent tests and runs never see half of one.
pub fn npm_package(package: &str) -> Result<PathBuf> {
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
    Ok(dir)
}

/// [`npm_package`], with `script` written next to it as `script_name` (atomically too).
pub fn npm_package_with_script(package: &str, script_name: &str, script: &str) -> Result<PathBuf> {
    let dir = npm_package(package)?;
    let staging = dir.join(format!("{script_name}.{}", unique()));
    std::fs::write(&staging, script)?;
    std::fs::rename(&staging, dir.join(script_name))?;
    Ok(dir)
}

/// A name no other process or call uses.
fn unique() -> String {
    static STAGING: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    )
}
