//! A released operator, built from its release commit, for the upgrade test
//! (docs/upgrades.md).
//!
//! The release before this checkout's is named in `operator/PREVIOUS_RELEASE` as its tag and
//! commit (`v0.1.0 d438…`); `TIQZY_PREVIOUS_RELEASE` overrides it for a local run. The release's
//! source is exported beside the machine's cache of built components and built there into a target
//! directory of its own, of which only the binary is kept: Cargo fingerprints a workspace member the same at any path, so building the old source
//! into the checkout's target directory would overwrite the current build's artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::operator::Manifests;

/// Names the previous release's tag and commit, relative to the repository.
pub const PREVIOUS_RELEASE_FILE: &str = "operator/PREVIOUS_RELEASE";

/// A released operator: its program and what it installs before any Platform.
#[derive(Debug, Clone)]
pub struct Release {
    pub tag: String,
    /// The commit the release was cut from.
    pub commit: String,
    /// `tiqzy-operator` built (debug) from the release's source.
    pub operator: PathBuf,
    /// The release's crds/*.yaml and the config/rbac its kustomization lists.
    pub manifests: Manifests,
}

/// A release as `operator/PREVIOUS_RELEASE` names it: `<tag> <commit>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseName {
    pub tag: String,
    /// The full commit id; `None` when only a tag was given (`TIQZY_PREVIOUS_RELEASE=v0.1.0`).
    pub commit: Option<String>,
}

impl ReleaseName {
    /// Reads `<tag> [<commit>]`; the commit, when given, is 40 hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let mut words = text.split_whitespace();
        let tag = words.next().context("no release tag")?.to_owned();
        let commit = words.next().map(str::to_owned);
        if let Some(commit) = &commit
            && (commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()))
        {
            bail!("{commit:?} after the tag {tag} is not a full commit id (40 hex digits)");
        }
        if let Some(extra) = words.next() {
            bail!("unexpected {extra:?} after the release's tag and commit");
        }
        Ok(Self { tag, commit })
    }
}

fn repository() -> PathBuf {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_owned())
}

/// The release before this checkout: `TIQZY_PREVIOUS_RELEASE`, else `operator/PREVIOUS_RELEASE`.
pub fn previous_release_name() -> Result<ReleaseName> {
    if let Ok(name) = std::env::var("TIQZY_PREVIOUS_RELEASE") {
        return ReleaseName::parse(&name).context("TIQZY_PREVIOUS_RELEASE");
    }
    let path = repository().join(PREVIOUS_RELEASE_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ReleaseName::parse(&text).with_context(|| format!("{}", path.display()))
}

/// The previous release (see [`previous_release_name`]), its operator built on first use.
/// Blocks for minutes the first time; safe to call from several processes at once.
pub fn previous_release() -> Result<Release> {
    release(&previous_release_name()?)
}

/// The release `name`, its operator built on first use and cached by the release's commit.
pub fn release(name: &ReleaseName) -> Result<Release> {
    let repo = repository();
    let tag = &name.tag;
    let commit = release_commit(&repo, name)?;
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
        "tiqzy-operator {tag} (commit {}, cargo build in {})",
        commit.get(..12).unwrap_or(&commit),
        root.display()
    );
    let operator =
        crate::components::cached_or_build_as(&cached, &label, "tiqzy-operator", |out| {
            build_command(&repo, &commit, &root, out)
        })?;
    Ok(Release {
        tag: tag.clone(),
        commit,
        operator,
        manifests,
    })
}

/// The commit the release was cut from. A clone (as CI makes of `main`) need not carry tags,
/// but it carries the release's commit, an ancestor of `main`: the commit is what is built.
/// Where the tag is present too it must name the same commit. A clone lacking both (shallow,
/// or another branch) runs one `git fetch --tags` and, if shallow, `git fetch --unshallow`.
fn release_commit(repo: &Path, name: &ReleaseName) -> Result<String> {
    let tag = &name.tag;
    let resolve = |rev: String| {
        let out = git(repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(rev)
            .output()
            .context("running git rev-parse")?;
        anyhow::Ok(
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        )
    };
    let lookup = || -> Result<Option<String>> {
        let tagged = resolve(format!("refs/tags/{tag}^{{commit}}"))?;
        let Some(commit) = &name.commit else {
            return Ok(tagged);
        };
        if let Some(tagged) = &tagged
            && tagged != commit
        {
            bail!(
                "the tag {tag} names {tagged} but {PREVIOUS_RELEASE_FILE} says the release is \
                 {commit}: a release tag never moves; fix the file or the tag"
            );
        }
        resolve(format!("{commit}^{{commit}}"))
    };
    if let Some(commit) = lookup()? {
        return Ok(commit);
    }
    let wanted = name.commit.as_deref().unwrap_or(tag);
    eprintln!("tiqzy: the release {tag} ({wanted}) is not in this clone; fetching it");
    let mut fetched = vec![run_git(repo, &["fetch", "--tags"])];
    if git(repo)
        .args(["rev-parse", "--is-shallow-repository"])
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"true"))
    {
        fetched.push(run_git(repo, &["fetch", "--unshallow"]));
    }
    if let Some(commit) = lookup()? {
        return Ok(commit);
    }
    bail!(
        "the release {tag} ({wanted}), named by {PREVIOUS_RELEASE_FILE} or \
         TIQZY_PREVIOUS_RELEASE, is not in {} ({}); the upgrade test builds the previous \
         operator from it: fetch it, or name another release in TIQZY_PREVIOUS_RELEASE",
        repo.display(),
        fetched.join(", ")
    )
}

/// Runs `git <args>` and says how it went, for an error message.
fn run_git(repo: &Path, args: &[&str]) -> String {
    let what = format!("git {}", args.join(" "));
    match git(repo).args(args).status() {
        Ok(status) if status.success() => format!("{what} succeeded"),
        Ok(status) => format!("{what} failed: {status}"),
        Err(e) => format!("{what} did not run: {e}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_named_by_its_tag_and_commit() {
        let commit = "d43833181dc781de313b312a2b2f4a7663536861";
        assert_eq!(
            ReleaseName::parse(&format!("v0.1.0 {commit}\n")).expect("as expected"),
            ReleaseName {
                tag: "v0.1.0".into(),
                commit: Some(commit.into())
            }
        );
        assert_eq!(
            ReleaseName::parse("v0.1.0").expect("as expected").commit,
            None
        );
        let short = ReleaseName::parse("v0.1.0 d438331").expect_err("refused");
        assert!(short.to_string().contains("40 hex digits"), "{short}");
        assert!(ReleaseName::parse(&format!("v0.1.0 {commit} x")).is_err());
        assert!(ReleaseName::parse("  \n").is_err());
    }

    #[test]
    fn the_file_names_a_release_this_clone_can_build() {
        let name = previous_release_name().expect("as expected");
        let commit = name
            .commit
            .clone()
            .expect("operator/PREVIOUS_RELEASE names the commit");
        assert_eq!(
            release_commit(&repository(), &name).expect("as expected"),
            commit
        );
    }
}
