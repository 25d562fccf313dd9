//! Cargo run from inside `cargo run` or `cargo test` (xtask, a test building the runtime).
//!
//! Cargo gives the program it runs `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME` and the like. Some
//! build scripts (ring's, through the `cc` crate) ask to rerun when those change, and Cargo
//! compares them with its own environment: a nested build that inherits them rebuilds ring and
//! everything above it, and the next build from a shell rebuilds them back. Without them the
//! nested build sees what a shell's build sees and reuses its work.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Set by `cargo xtask test` for the `cargo test` it runs: the arguments of the test build that
/// already compiled every program of the workspace (see [`build_programs`]).
pub const TEST_BUILD_ENV: &str = "TIQZY_TEST_BUILD";

/// The workspace's programs that tests and `cargo xtask up` run, as `(package, binary)`.
const PROGRAMS: [(&str, &str); 3] = [
    ("tiqzy-operator", "tiqzy-operator"),
    ("tiqzy-runtime", "tiqzy-runtime"),
    ("tiqzy-payments", "tiqzy-payments"),
];

/// Builds the operator, the storefront runtime and the payments service (debug) and returns the
/// directory they are in.
///
/// Always one selection of packages: Cargo unifies the dependencies' features per selection, so
/// `cargo build -p tiqzy-operator` and `cargo build -p tiqzy-payments` each compiled their own
/// copy of tokio, hyper, kube and the rest (three extra copies, 6.5 minutes on a cold machine).
/// Under `cargo xtask test` ([`TEST_BUILD_ENV`] set) the test build made these programs
/// already, so this repeats that build, which finds everything up to date.
pub fn build_programs() -> Result<PathBuf> {
    let mut command = cargo_command();
    let described = match std::env::var(TEST_BUILD_ENV) {
        Ok(test_build) => {
            command.args(["test", "--no-run", "--quiet"]);
            command.args(test_build.split_whitespace());
            format!("cargo test --no-run {test_build}")
        }
        Err(_) => {
            command.arg("build");
            for (package, binary) in PROGRAMS {
                command.args(["-p", package, "--bin", binary]);
            }
            "cargo build -p tiqzy-operator -p tiqzy-runtime -p tiqzy-payments".to_owned()
        }
    };
    let status = command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .with_context(|| format!("running {described}"))?;
    if !status.success() {
        bail!("{described} failed ({status})");
    }
    Ok(crate::target_dir().join("debug"))
}

/// `cargo` (the one running us, if any) with the variables Cargo sets for the programs it runs
/// removed.
pub fn cargo_command() -> Command {
    let mut command = Command::new(cargo_program());
    remove_cargo_run_env(&mut command);
    command
}

/// The `cargo` running us, if any.
pub(crate) fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Removes from `command`'s environment the variables Cargo sets for the programs it runs (for
/// a script that runs cargo).
pub(crate) fn remove_cargo_run_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if set_by_cargo_run(name) {
            command.env_remove(name);
        }
    }
}

fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cargo_sets_for_its_programs_is_removed() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
        ] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }
}
