//! OLM, as far as it runs here: the operator-framework bundle validators
//! (`tests/e2e/go/olm-validate`, the library `operator-sdk bundle validate` uses) and the
//! ClusterServiceVersion CRD from the same pinned module, so a CSV can be checked by the API
//! server against OLM's own schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const MODULE: &str = "github.com/operator-framework/api";

/// One line of the validator's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `error`, `warning`, or `allowed` (a warning the caller allowed).
    pub level: String,
    /// The validator suite (`operatorhub-v2`, `good-practices`, ...) or `load`/`allow-list`.
    pub suite: String,
    pub message: String,
}

/// What the validators said about a bundle directory.
#[derive(Debug)]
pub struct Validation {
    /// True when there was no error, no warning outside `allowed`, and no unused allowance.
    pub passed: bool,
    pub findings: Vec<Finding>,
    /// The full report, as printed.
    pub output: String,
}

/// Runs every validator suite over `bundle`; a warning containing one of `allowed` does not
/// fail the run, but an allowance that matches nothing does.
pub fn validate_bundle(
    olm_validate: &Path,
    bundle: &Path,
    k8s_version: &str,
    allowed: &[&str],
) -> Result<Validation> {
    let mut command = Command::new(olm_validate);
    command.args(["--k8s-version", k8s_version]);
    for text in allowed {
        command.args(["--allow", text]);
    }
    let out = command
        .arg(bundle)
        .output()
        .with_context(|| format!("running {}", olm_validate.display()))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code().is_none_or(|c| c > 1) {
        bail!("olm-validate did not run ({}):\n{output}", out.status);
    }
    let findings = output
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, '\t');
            let level = fields.next()?;
            if !["error", "warning", "allowed"].contains(&level) {
                return None;
            }
            let suite = fields.next()?;
            let _object = fields.next()?;
            Some(Finding {
                level: level.to_owned(),
                suite: suite.to_owned(),
                message: fields.next()?.to_owned(),
            })
        })
        .collect();
    Ok(Validation {
        passed: out.status.success(),
        findings,
        output,
    })
}

/// The operator-framework/api version `tests/e2e/go/olm-validate` pins.
pub fn api_version() -> Result<String> {
    let go_mod = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/olm-validate/go.mod");
    let text = std::fs::read_to_string(&go_mod)
        .with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let module = if first == "require" {
                words.next()?
            } else {
                first
            };
            (module == MODULE).then(|| words.next().map(str::to_owned))?
        })
        .with_context(|| format!("{} does not require {MODULE}", go_mod.display()))
}

/// OLM's ClusterServiceVersion CRD, as shipped in the pinned module's `crds/`.
pub fn cluster_service_version_crd() -> Result<CustomResourceDefinition> {
    let path = module_dir()?.join("crds/operators.coreos.com_clusterserviceversions.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn module_dir() -> Result<PathBuf> {
    crate::go_module_dir(MODULE, &api_version()?)
}
