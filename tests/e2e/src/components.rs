//! The Go-based components, built once from pinned modules into a cache keyed by what went
//! into them, so later runs start in seconds.
//!
//! | binary         | source                                                                        |
//! |----------------|-------------------------------------------------------------------------------|
//! | `kube`         | `tests/e2e/go/kube`: kube-apiserver, -controller-manager, -scheduler, kubectl, kubelet, kube-proxy |
//! | `etcd`         | `tests/e2e/go/etcd`: etcd server (etcdmain)                                   |
//! | `kwok`         | `sigs.k8s.io/kwok/cmd/kwok@KWOK_VERSION`                                      |
//! | `stripe-mock`  | `github.com/stripe/stripe-mock@STRIPE_MOCK_VERSION`                           |
//! | `olm-validate` | `tests/e2e/go/olm-validate`: the operator-framework bundle validators         |
//! | `keyvault`     | `tests/e2e/go/keyvault`: the Azure SDK's Key Vault fakes behind HTTPS (on demand) |
//! | `containerd`, `cni-plugins` | upstream modules, for the real node (on demand, see [`crate::node`]) |
//! | `traefik`      | `tests/e2e/go/traefik`: Traefik's own command, pinned by that module (on demand) |
//! | `kube-router`  | `tests/e2e/go/kube-router`: kube-router's command, the real node's NetworkPolicy enforcer (on demand) |
//! | `mailpit`      | `tests/e2e/go/mailpit`: Mailpit, the SMTP server tests read mail from (on demand) |
//! | `coredns`      | `tests/e2e/go/coredns`: CoreDNS with the plugins the real node's cluster DNS uses (on demand) |
//! | `promtool`     | `tests/e2e/go/promtool`: Prometheus' rule checker and rule unit tester, without service discovery (on demand) |
//! | `jaeger`       | `tests/e2e/go/jaeger`: Jaeger v2, the trace backend tests read spans from (on demand) |

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub const KWOK_VERSION: &str = "v0.8.0";
pub const STRIPE_MOCK_VERSION: &str = "v0.199.0";

/// Paths of the built programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Multi-call binary: `kube <kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy>`.
    pub kube: PathBuf,
    /// A link to `kube` named `kubectl`, which runs kubectl directly.
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
    pub kwok: PathBuf,
    pub stripe_mock: PathBuf,
    /// The operator-framework bundle validators over a bundle directory (see [`crate::olm`]).
    pub olm_validate: PathBuf,
    /// kwok's stage files (node initialise and heartbeat, pod ready and delete).
    pub kwok_stages: Vec<PathBuf>,
}

/// Where built binaries are cached: `TIQZY_CACHE_DIR`, else `$XDG_CACHE_HOME/tiqzy`, else
/// `~/.cache/tiqzy`. Outside the checkout, so a fresh clone reuses them.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIQZY_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tiqzy");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/tiqzy")
}

fn go_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// Builds whatever is not cached yet. Safe to call from several processes at once: each
/// build holds a lock file, and a finished binary is moved into place atomically.
pub fn ensure_binaries() -> Result<Binaries> {
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;

    let kube = build_module(&bin, "kube", &go)?;
    let kubectl = kube.with_file_name("kubectl");
    if !kubectl.exists() {
        let _ = std::os::unix::fs::symlink("kube", &kubectl);
    }
    let etcd = build_module(&bin, "etcd", &go)?;
    let kwok = install_package(&bin, "kwok", "sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION, &go)?;
    let stripe_mock = install_package(
        &bin,
        "stripe-mock",
        "github.com/stripe/stripe-mock",
        STRIPE_MOCK_VERSION,
        &go,
    )?;
    let olm_validate = build_module(&bin, "olm-validate", &go)?;
    Ok(Binaries {
        kube,
        kubectl,
        etcd,
        kwok,
        stripe_mock,
        olm_validate,
        kwok_stages: kwok_stages()?,
    })
}

/// Everything the tests build on first use, built now: the control plane and the other
/// components of [`ensure_binaries`], the real node's programs, the Key Vault test server,
/// Traefik, Mailpit, Jaeger, promtool and the previous release's operator. `cargo xtask test`
/// runs this alongside its Rust builds, so no test waits for a first build (on a fresh machine
/// they take over half an hour, most of it downloading and compiling Go modules).
pub fn ensure_everything() -> Result<()> {
    ensure_binaries()?;
    crate::node::ensure_node_binaries()?;
    ensure_traefik()?;
    ensure_jaeger()?;
    ensure_keyvault()?;
    ensure_mailpit()?;
    ensure_promtool()?;
    crate::release::previous_release()?;
    Ok(())
}

/// The Key Vault test server, built on first use (tests that need it start it themselves).
pub fn ensure_keyvault() -> Result<PathBuf> {
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    build_module(&bin, "keyvault", &go)
}

/// Traefik, the ingress controller, built on first use from the `tool` its module pins (its
/// first build takes many minutes: tests that need it start it themselves).
pub fn ensure_traefik() -> Result<PathBuf> {
    on_demand_tool("traefik", "github.com/traefik/traefik/v3/cmd/traefik")
}

/// kube-router, which enforces NetworkPolicies on the real node (firewall only), built on first
/// use from the `tool` its module pins.
pub fn ensure_kube_router() -> Result<PathBuf> {
    on_demand_tool(
        "kube-router",
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
    )
}

/// Mailpit, the SMTP server whose API shows what arrived, built on first use from the `tool`
/// its module pins.
pub fn ensure_mailpit() -> Result<PathBuf> {
    on_demand_tool("mailpit", "github.com/axllent/mailpit")
}

/// Jaeger v2 (`cmd/jaeger`), the trace backend whose query API shows the spans that arrived,
/// built on first use from the `tool` its module pins. Its own module, not promtool's: in one
/// module the versions minimal version selection picks for both (Prometheus v0.316's
/// `client_golang` v1.25, `otelhttp` v0.72, collector `pdata` v1.69) no longer compile
/// Jaeger v1.76, which is built against `client_golang` v1.23, `otelhttp` v0.63 and collector
/// v0.140. The packages both use at the same version are still compiled once (Go's build cache).
pub fn ensure_jaeger() -> Result<PathBuf> {
    on_demand_tool("jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger")
}

/// CoreDNS, the real node's cluster DNS, built on first use from `tests/e2e/go/coredns`: the
/// upstream server with only the plugins the node's Corefile uses (upstream's full build links
/// every cloud provider's SDK and took half an hour here).
pub fn ensure_coredns() -> Result<PathBuf> {
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    build_module(&bin, "coredns", &go)
}

/// Build tags of promtool: `remove_all_sd` leaves out Prometheus' service-discovery plugins
/// (`plugins/`), so no cloud provider's SDK is compiled for a program that only checks and
/// tests rules.
pub const PROMTOOL_TAGS: &str = "remove_all_sd";

/// promtool (`promtool check rules`, `promtool test rules`), built on first use from the `tool`
/// its module pins (`github.com/prometheus/prometheus`).
pub fn ensure_promtool() -> Result<PathBuf> {
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    build_tool(
        &bin,
        "promtool",
        "github.com/prometheus/prometheus/cmd/promtool",
        PROMTOOL_TAGS,
        &go,
    )
}

/// A tool built on first use from the `tool` directive of its module in `tests/e2e/go/<name>`.
fn on_demand_tool(name: &str, package: &str) -> Result<PathBuf> {
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    build_tool(&bin, name, package, "", &go)
}

pub(crate) fn go_version() -> Result<String> {
    let out = Command::new("go").arg("version").output().context(
        "running `go version`: Go 1.26 or newer must be on PATH to build the control plane",
    )?;
    if !out.status.success() {
        bail!(
            "`go version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `go build` of a module under `tests/e2e/go/<name>`, cached under a key of its files, the
/// linker flags and the Go version.
fn build_module(bin: &Path, name: &str, go: &str) -> Result<PathBuf> {
    let dir = go_sources().join(name);
    let ldflags = version_ldflags(&std::fs::read_to_string(dir.join("go.mod"))?);
    let mut key = Fnv::new();
    key.write(go.as_bytes());
    key.write(ldflags.as_bytes());
    for file in module_files(&dir)? {
        let path = dir.join(file);
        key.write(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let target = bin.join(format!("{name}-{:016x}", key.finish()));
    cached_or_build(&target, name, |out| {
        let mut cmd = Command::new("go");
        cmd.args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
            .arg(out.join(name))
            .arg(".")
            .current_dir(&dir);
        cmd
    })
}

/// `go build` of `package`, a `tool` of the module `tests/e2e/go/<name>` (which pins its
/// version and dependencies), with the build tags `tags` (comma-separated, may be empty),
/// cached under a key of go.mod, go.sum, the tags and the Go version.
fn build_tool(bin: &Path, name: &str, package: &str, tags: &str, go: &str) -> Result<PathBuf> {
    let dir = go_sources().join(name);
    let mut key = Fnv::new();
    key.write(go.as_bytes());
    key.write(package.as_bytes());
    // Tools built without tags keep the keys they had before tags existed.
    if !tags.is_empty() {
        key.write(b"tags=");
        key.write(tags.as_bytes());
    }
    for file in ["go.mod", "go.sum"] {
        let path = dir.join(file);
        key.write(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let target = bin.join(format!("{name}-{:016x}", key.finish()));
    cached_or_build(&target, name, |out| {
        let mut cmd = Command::new("go");
        cmd.args(["build", "-trimpath", "-ldflags=-s -w"]);
        if !tags.is_empty() {
            cmd.arg(format!("-tags={tags}"));
        }
        cmd.arg("-o")
            .arg(out.join(name))
            .arg(package)
            .current_dir(&dir);
        cmd
    })
}

/// The files a module's build depends on: go.mod, go.sum, main.go, then its other Go files
/// by name (so modules of just those three keep their cache keys).
fn module_files(dir: &Path) -> Result<Vec<String>> {
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".go") && name != "main.go")
        .collect();
    others.sort();
    let mut files: Vec<String> = ["go.mod", "go.sum", "main.go"].map(String::from).into();
    files.extend(others);
    Ok(files)
}

/// Stamps the Kubernetes release a module requires into its version package, as the
/// upstream build does, so `kubectl version` and `/version` report it.
fn version_ldflags(go_mod: &str) -> String {
    let Some(version) = go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let module = if first == "require" {
            words.next()?
        } else {
            first
        };
        (module == "k8s.io/kubernetes")
            .then(|| words.next())
            .flatten()
    }) else {
        return String::new();
    };
    let minor = version.split('.').nth(1).unwrap_or_default();
    [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ]
    .iter()
    .map(|pkg| {
        format!(
            "-X {pkg}.gitVersion={version} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} \
                 -X {pkg}.gitTreeState=clean"
        )
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// `go install <package>@<version>` into the cache.
fn install_package(
    bin: &Path,
    name: &str,
    package: &str,
    version: &str,
    go: &str,
) -> Result<PathBuf> {
    let mut key = Fnv::new();
    key.write(go.as_bytes());
    key.write(package.as_bytes());
    let target = bin.join(format!("{name}-{version}-{:016x}", key.finish()));
    cached_or_build(&target, name, |out| {
        let mut cmd = Command::new("go");
        cmd.args(["install", "-trimpath"])
            .arg(format!("{package}@{version}"))
            .env("GOBIN", out);
        cmd
    })
}

/// `<target>/<name>`, built by `command` into a scratch directory first and renamed into
/// place, under a lock so concurrent runs build once.
fn cached_or_build(
    target: &Path,
    name: &str,
    command: impl FnOnce(&Path) -> Command,
) -> Result<PathBuf> {
    cached_or_build_as(target, name, name, command)
}

/// Like [`cached_or_build`] for a build that yields several programs: `program` is the one
/// whose presence marks the build done, `label` names the build in progress lines.
pub(crate) fn cached_or_build_as(
    target: &Path,
    label: &str,
    program: &str,
    command: impl FnOnce(&Path) -> Command,
) -> Result<PathBuf> {
    let name = label;
    let program = target.join(program);
    if program.exists() {
        return Ok(program);
    }
    let lock_path = PathBuf::from(format!("{}.lock", target.display()));
    let lock = File::create(&lock_path)?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if program.exists() {
        return Ok(program);
    }
    let scratch = PathBuf::from(format!("{}.partial", target.display()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    eprintln!("tiqzy: building {name} (first run only; the control plane takes several minutes)");
    let started = Instant::now();
    // Go prints nothing while it compiles: say every minute that the build goes on, so a
    // long first build (Traefik's takes over ten minutes) does not look hung.
    let log_path = scratch.join("build.log");
    let log = File::create(&log_path)?;
    let mut child = command(&scratch)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("running go to build {name}"))?;
    let mut reported = started;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if reported.elapsed().as_secs() >= 60 {
            reported = Instant::now();
            eprintln!(
                "tiqzy: still building {name} ({:.0?} so far)",
                started.elapsed()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if !status.success()
        || !scratch
            .join(program.file_name().unwrap_or_default())
            .exists()
    {
        bail!(
            "building {name} failed:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_dir_all(target);
    std::fs::rename(&scratch, target)?;
    eprintln!("tiqzy: built {name} in {:.0?}", started.elapsed());
    Ok(program)
}

/// The stage files shipped in kwok's module (downloaded into the Go module cache if needed).
fn kwok_stages() -> Result<Vec<PathBuf>> {
    let out = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("sigs.k8s.io/kwok@{KWOK_VERSION}"))
        .output()
        .context("running go mod download for kwok's stage files")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "reading go mod download output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let dir = info["Dir"]
        .as_str()
        .context("go mod download gave no module directory for kwok")?;
    let stage = Path::new(dir).join("kustomize/stage");
    let files = [
        "node/fast/node-initialize.yaml",
        "node/heartbeat/node-heartbeat.yaml",
        "pod/fast/pod-ready.yaml",
        "pod/fast/pod-complete.yaml",
        "pod/fast/pod-delete.yaml",
    ];
    files
        .iter()
        .map(|f| {
            let path = stage.join(f);
            if path.exists() {
                Ok(path)
            } else {
                bail!("kwok stage file {} is missing", path.display())
            }
        })
        .collect()
}

/// FNV-1a, enough to key a build cache on file contents.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The directory of module `module@version` in the Go module cache, downloaded if needed
/// (CRD manifests shipped inside Go modules are read from there).
pub fn go_module_dir(module: &str, version: &str) -> Result<PathBuf> {
    let out = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("{module}@{version}"))
        // Outside any go.mod, so only the module itself is resolved.
        .current_dir(std::env::temp_dir())
        .output()
        .with_context(|| format!("running go mod download for {module}"))?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "reading go mod download output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(error) = info["Error"].as_str() {
        bail!("go mod download {module}@{version}: {error}");
    }
    let dir = info["Dir"]
        .as_str()
        .with_context(|| format!("go mod download gave no directory for {module}"))?;
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_release_is_stamped_from_go_mod() {
        let flags = version_ldflags("module x\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.36.3\n");
        assert!(
            flags.contains("k8s.io/component-base/version.gitVersion=v1.36.3"),
            "{flags}"
        );
        assert!(
            flags.contains("k8s.io/component-base/version.gitMinor=36"),
            "{flags}"
        );
        assert_eq!(version_ldflags("module x\n"), "");
    }

    #[test]
    fn the_cache_key_changes_with_content() {
        let mut a = Fnv::new();
        a.write(b"go.mod v1");
        let mut b = Fnv::new();
        b.write(b"go.mod v2");
        assert_ne!(a.finish(), b.finish());
    }
}
