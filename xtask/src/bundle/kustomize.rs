//! A reading of the few kustomize features `config/manager`, `config/rbac` and `config/samples`
//! use (plain `resources:` files and `images:`), enough to take their objects into the bundle.
//! The bundle test compares the result with `kubectl kustomize config/default`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The objects of one kustomization directory, with its `images:` overrides.
#[derive(Debug)]
pub struct Kustomization {
    dir: PathBuf,
    pub objects: Vec<Value>,
    images: Vec<Value>,
}

impl Kustomization {
    /// Reads `resources:` (plain files only) and `images:`; anything else kustomize would do
    /// is refused, so this reading cannot silently differ from `kubectl kustomize`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("kustomization.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let kustomization: Value = serde_saphyr::from_str(&text)?;
        for key in kustomization.as_object().context("a mapping")?.keys() {
            ensure!(
                ["apiVersion", "kind", "resources", "images"].contains(&key.as_str()),
                "{}: `{key}` is not understood by the bundle generator",
                path.display()
            );
        }
        let mut objects = Vec::new();
        for resource in kustomization["resources"].as_array().into_iter().flatten() {
            let file = dir.join(resource.as_str().context("resource")?);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            for document in documents(&text) {
                objects.push(
                    serde_saphyr::from_str(document)
                        .with_context(|| format!("parsing {}", file.display()))?,
                );
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            objects,
            images: kustomization["images"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Applies `images:` to a pod template's containers; returns their resulting images.
    pub fn set_images(&self, deployment_spec: &mut Value) -> Result<Vec<String>> {
        let containers = deployment_spec["template"]["spec"]["containers"]
            .as_array_mut()
            .context("a Deployment without containers")?;
        let mut result = Vec::new();
        for container in containers {
            let image = container["image"].as_str().context("image")?.to_owned();
            let (base, tag) = image.split_once(':').unwrap_or((&image, ""));
            let replaced = match self.images.iter().find(|i| i["name"] == base) {
                Some(set) => {
                    let name = set["newName"].as_str().unwrap_or(base);
                    match (set["digest"].as_str(), set["newTag"].as_str()) {
                        (Some(digest), _) => format!("{name}@{digest}"),
                        (None, Some(tag)) => format!("{name}:{tag}"),
                        (None, None) if tag.is_empty() => name.to_owned(),
                        (None, None) => format!("{name}:{tag}"),
                    }
                }
                None => image.clone(),
            };
            container["image"] = Value::String(replaced.clone());
            result.push(replaced);
        }
        Ok(result)
    }

    /// The rules bound to ServiceAccount `account`: cluster-wide (ClusterRoleBindings) and in
    /// `namespace` (RoleBindings to Roles), as the CSV's clusterPermissions and permissions.
    pub fn rules_bound_to(
        &self,
        account: &str,
        namespace: &str,
    ) -> Result<(Vec<Value>, Vec<Value>)> {
        let binds_account = |binding: &Value| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account
                        && s["namespace"] == namespace
                })
            })
        };
        let role = |kind: &str, name: &Value| {
            self.objects
                .iter()
                .find(|o| o["kind"] == kind && &o["metadata"]["name"] == name)
                .with_context(|| format!("{}: no {kind} {name}", self.dir.display()))
        };
        let (mut cluster, mut namespaced) = (Vec::new(), Vec::new());
        let mut has_account = false;
        for object in &self.objects {
            match kind(object) {
                "ServiceAccount" => has_account |= name(object) == account,
                "ClusterRole" | "Role" => {}
                "ClusterRoleBinding" if binds_account(object) => {
                    let role = role("ClusterRole", &object["roleRef"]["name"])?;
                    cluster.extend(role["rules"].as_array().cloned().unwrap_or_default());
                }
                "RoleBinding" if binds_account(object) => {
                    ensure!(
                        object["metadata"]["namespace"] == namespace,
                        "RoleBinding {} is not in {namespace}",
                        name(object)
                    );
                    ensure!(
                        object["roleRef"]["kind"] == "Role",
                        "RoleBinding {} must bind a Role",
                        name(object)
                    );
                    let role = role("Role", &object["roleRef"]["name"])?;
                    namespaced.extend(role["rules"].as_array().cloned().unwrap_or_default());
                }
                "ClusterRoleBinding" | "RoleBinding" => {}
                other => bail!("config/rbac: OLM bundles have no place for a {other}"),
            }
        }
        ensure!(
            has_account,
            "config/rbac does not declare ServiceAccount {account}"
        );
        ensure!(!cluster.is_empty(), "no ClusterRole is bound to {account}");
        Ok((cluster, namespaced))
    }

    pub fn only(&self, kind_name: &str) -> Result<&Value> {
        let mut found = self.objects.iter().filter(|o| kind(o) == kind_name);
        let first = found
            .next()
            .with_context(|| format!("{}: no {kind_name}", self.dir.display()))?;
        ensure!(
            found.next().is_none(),
            "{}: more than one {kind_name}",
            self.dir.display()
        );
        Ok(first)
    }
}

/// The documents of a multi-document YAML file.
fn documents(text: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            documents.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&text[start..]);
    documents
        .into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_files_split_on_separator_lines_only() {
        let text = "# a comment\n---\na: 1\n---\nb: '---'\n---\n";
        assert_eq!(documents(text), ["a: 1\n", "b: '---'\n"]);
    }

    #[test]
    fn images_are_set_the_way_kustomize_sets_them() {
        let k = Kustomization {
            dir: PathBuf::new(),
            objects: vec![],
            images: vec![
                json!({"name": "op", "newName": "quay.io/x/op", "digest": "sha256:ab"}),
                json!({"name": "rt", "newTag": "2"}),
            ],
        };
        let mut spec = json!({"template": {"spec": {"containers": [
            {"image": "op"}, {"image": "rt:1"}, {"image": "other:3"}
        ]}}});
        assert_eq!(
            k.set_images(&mut spec).expect("images"),
            ["quay.io/x/op@sha256:ab", "rt:2", "other:3"]
        );
    }
}
