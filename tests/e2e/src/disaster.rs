//! Disaster recovery the way docs/disaster-recovery.md tells an administrator to do it: save
//! with `kubectl get -o yaml`, and after the cluster is rebuilt, restore with `kubectl apply`
//! what was saved, stripped of what only the old cluster knew (uid, resourceVersion, status,
//! owner references, finalizers).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ControlPlane;

/// What the runbook has the administrator save regularly, as the file `kubectl` wrote. The
/// tenants' ticket-signing keys are not in it: the operator keeps a copy of them in each
/// tenant's own database and recreates the Secret from it.
#[derive(Debug, Clone)]
pub struct Saved {
    /// `kubectl get platforms.tiqzy.io,tenants.tiqzy.io -o yaml`
    pub tiqzy: PathBuf,
}

/// Saves the Platform and the Tenants into `dir`.
pub fn save(kube: &ControlPlane, dir: &Path) -> Result<Saved> {
    std::fs::create_dir_all(dir)?;
    let saved = Saved {
        tiqzy: dir.join("tiqzy.yaml"),
    };
    let tiqzy = kubectl(
        kube,
        &["get", "platforms.tiqzy.io,tenants.tiqzy.io", "-o", "yaml"],
    )?;
    std::fs::write(&saved.tiqzy, tiqzy)?;
    Ok(saved)
}

/// Restores into a fresh cluster where the operator is installed: the Platform and the Tenants.
pub fn restore(kube: &ControlPlane, saved: &Saved) -> Result<()> {
    let tiqzy = for_fresh_cluster(&std::fs::read_to_string(&saved.tiqzy)?)?;
    apply(kube, &tiqzy, &saved.tiqzy.with_extension("json"))
}

/// The saved `kubectl get -o yaml` list without what belongs to the old cluster: status,
/// uid, resourceVersion, generation, creation time, managed fields, owner references (their
/// owners' uids are gone: the garbage collector would delete the object) and finalizers.
pub fn for_fresh_cluster(saved_yaml: &str) -> Result<Value> {
    let mut saved: Value = serde_saphyr::from_str(saved_yaml).context("reading saved YAML")?;
    let Some(objects) = saved.get_mut("items").and_then(Value::as_array_mut) else {
        bail!("the saved YAML is not a list (`kubectl get ... -o yaml` of several kinds)");
    };
    for object in objects {
        if let Some(object) = object.as_object_mut() {
            object.remove("status");
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "ownerReferences",
                "finalizers",
            ] {
                meta.remove(field);
            }
        }
    }
    if let Some(meta) = saved.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    Ok(saved)
}

/// `kubectl apply -f` of `objects`, written to `file` first (as an administrator would).
fn apply(kube: &ControlPlane, objects: &Value, file: &Path) -> Result<()> {
    std::fs::write(file, serde_json::to_vec_pretty(objects)?)?;
    let path = file.display().to_string();
    kubectl(kube, &["apply", "-f", &path]).map(drop)
}

fn kubectl(kube: &ControlPlane, args: &[&str]) -> Result<Vec<u8>> {
    let output = Command::new(&kube.kubectl)
        .arg("--kubeconfig")
        .arg(&kube.kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("running kubectl {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}
