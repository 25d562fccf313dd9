//! A released operator, built from its git tag, for the upgrade test (docs/upgrades.md).
//!
//! The release before this checkout's is named in `operator/PREVIOUS_RELEASE` (a tag such as
//! `v0.1.0`); `TIQZY_PREVIOUS_RELEASE` overrides it for a local run. The tag's source is
//! exported beside the machine's cache of built components and built there into a target
//! directory of its own, of which only the binary is kept: Cargo fingerprints a workspace member the same at any path, so building the old source
//! into the checkout's target directory would overwrite the current build's artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::operator::Manifests;

/// Names the previous release's tag, relative to the repository.
pub const PREVIOUS_RELEASE_FILE: &str = "operator/PREVIOUS_RELEASE";

/// A released operator: its program and what it installs before any Platform.
#[derive(Debug, Clone)]
pub struct Release {
    pub tag: String,
    /// The commit the tag names.
    pub commit: String,
    /// `tiqzy-operator` built (debug) from the tag's source.
    pub operator: PathBuf,
    /// The tag's crds/*.yaml and the config/rbac its kustomization lists.
    pub manifests: Manifests,
}

fn repository() -> PathBuf {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_owned())
}

/// The tag of the release before this checkout: `TIQZY_PREVIOUS_RELEASE`, else
/// `operator/PREVIOUS_RELEASE`.
pub fn previous_release_tag() -> Result<String> {
    if let Ok(tag) = std::env::var("TIQZY_PREVIOUS_RELEASE") {
        return Ok(tag.trim().to_owned());
    }
    let path = repository().join(PREVIOUS_RELEASE_FILE);
    let tag =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(tag.trim().to_owned())
}

/// The previous release (see [`previous_release_tag`]), its operator built on first use. Blocks
/// for minutes the first time; safe to call from several processes at once.
pub fn previous_release() -> Result<Release> {
    release(&previous_release_tag()?)
}

/// The release `tag`, its operator built on first use and cached by the tag's commit.
pub fn release(tag: &str) -> Result<Release> {
    let repo = repository();
    let commit = tag_commit(&repo, tag)?;
    let manifests =
        manifests_at(&repo, &commit).with_context(|| format!("reading {tag}'s manifests"))?;
    // Cached with the Go components, outside the checkout: a fresh clone on this machine (as
    // CI makes) finds it built. Named for the commit: a tag moved elsewhere builds anew.
    let cached = crate::components::cache_dir().join(format!(
        "tiqzy-operator-{tag}-{}",
        commit.get(..16).unwrap_or(&commit)
    ));
    let root = PathBuf::from(format!("{}.build", cached.display()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let label = format!(
        "tiqzy-operator {tag} (git tag, cargo build in {})",
        root.display()
    );
    let operator =
        crate::components::cached_or_build_as(&cached, &label, "tiqzy-operator", |out| {
            build_command(&repo, &commit, &root, out)
        })?;
    Ok(Release {
        tag: tag.to_owned(),
        commit,
        operator,
        manifests,
    })
}

/// The commit `tag` names, after one `git fetch --tags` if this clone lacks it.
fn tag_commit(repo: &Path, tag: &str) -> Result<String> {
    let lookup = || {
        let out = git(repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/tags/{tag}^{{commit}}"))
            .output()
            .context("running git rev-parse")?;
        anyhow::Ok(
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        )
    };
    if let Some(commit) = lookup()? {
        return Ok(commit);
    }
    eprintln!("tiqzy: tag {tag} is not in this clone; running git fetch --tags");
    let fetched = match git(repo).args(["fetch", "--tags"]).status() {
        Ok(status) if status.success() => "succeeded".to_owned(),
        Ok(status) => format!("failed: {status}"),
        Err(e) => format!("did not run: {e}"),
    };
    if let Some(commit) = lookup()? {
        return Ok(commit);
    }
    bail!(
        "the release {tag} (named by {PREVIOUS_RELEASE_FILE} or TIQZY_PREVIOUS_RELEASE) is not a \
         tag in {} (git fetch --tags {fetched}); the upgrade test builds the previous operator \
         from it: fetch the tag, or name an existing one in TIQZY_PREVIOUS_RELEASE",
        repo.display()
    )
}

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo);
    command
}

/// `git show <commit>:<path>`.
fn show(repo: &Path, commit: &str, path: &str) -> Result<String> {
    let out = git(repo)
        .arg("show")
        .arg(format!("{commit}:{path}"))
        .output()
        .context("running git show")?;
    if !out.status.success() {
        bail!(
            "git show {commit}:{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{path} is not UTF-8"))
}

/// The CRDs (crds/*.yaml) and RBAC (what config/rbac/kustomization.yaml lists) at `commit`.
fn manifests_at(repo: &Path, commit: &str) -> Result<Manifests> {
    let out = git(repo)
        .args(["ls-tree", "--name-only", commit, "crds/"])
        .output()
        .context("running git ls-tree")?;
    if !out.status.success() {
        bail!("git ls-tree {commit} crds/ failed");
    }
    let crds = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|path| path.ends_with(".yaml"))
        .map(|path| {
            serde_saphyr::from_str(&show(repo, commit, path)?)
                .with_context(|| format!("parsing {path}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if crds.is_empty() {
        bail!("no crds/*.yaml at {commit}");
    }
    let kustomization: serde_json::Value =
        serde_saphyr::from_str(&show(repo, commit, "config/rbac/kustomization.yaml")?)
            .context("parsing config/rbac/kustomization.yaml")?;
    let rbac = kustomization["resources"]
        .as_array()
        .context("config/rbac/kustomization.yaml lists no resources")?
        .iter()
        .map(|file| {
            let file = file.as_str().context("a resource that is not a path")?;
            let path = format!("config/rbac/{file}");
            Ok((path.clone(), show(repo, commit, &path)?))
        })
        .collect::<Result<_>>()?;
    Ok(Manifests { crds, rbac })
}

/// A script that exports `commit` into `<root>/src`, builds the operator there into
/// `<root>/target`, copies it into `out` and removes the rest.
fn build_command(repo: &Path, commit: &str, root: &Path, out: &Path) -> Command {
    const SCRIPT: &str = r#"set -eu
src="$ROOT/src"
rm -rf "$src" "$ROOT/src.tar"
mkdir -p "$src"
git -C "$REPO" archive -o "$ROOT/src.tar" "$COMMIT"
tar -xf "$ROOT/src.tar" -C "$src"
rm "$ROOT/src.tar"
cd "$src"
"$CARGO" build --locked -p tiqzy-operator --bin tiqzy-operator --target-dir "$ROOT/target"
cp "$ROOT/target/debug/tiqzy-operator" "$OUT/tiqzy-operator"
# Only the binary is kept: the sources and the 1.4 GB target directory go.
rm -rf "$src" "$ROOT/target"
"#;
    let mut command = Command::new("sh");
    crate::cargo::remove_cargo_run_env(&mut command);
    command
        .args(["-c", SCRIPT])
        .env("CARGO", crate::cargo::cargo_program())
        .env("REPO", repo)
        .env("COMMIT", commit)
        .env("ROOT", root)
        .env("OUT", out)
        // The script's --target-dir wins over it; clear it so no tool the build runs sees ours.
        .env_remove("CARGO_TARGET_DIR");
    command
}
