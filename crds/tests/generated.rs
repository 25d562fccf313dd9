//! The committed `crds/*.yaml` must be what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, generated) in tiqzy_crds::crd_files() {
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("{} is missing: run `cargo xtask gen crds`", path.display())
        });
        assert!(
            committed == generated,
            "crds/{file} has drifted from crds/src: run `cargo xtask gen crds` and commit the result"
        );
    }
}

#[test]
fn every_field_is_documented() {
    // `kubectl explain` shows descriptions: a field without one is a gap in the API's docs.
    for (file, yaml) in tiqzy_crds::crd_files() {
        let crd: serde_json::Value = serde_saphyr::from_str(&yaml).expect("yaml");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        undocumented(&schema["properties"]["spec"], "spec", &mut missing);
        assert!(
            missing.is_empty(),
            "{file}: fields without a description: {missing:?}"
        );
    }
}

fn undocumented(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if child["description"].as_str().is_none_or(str::is_empty) {
                missing.push(child_path.clone());
            }
            // Kubernetes' own types (resources) document themselves upstream.
            if name != "resources" {
                undocumented(child, &child_path, missing);
            }
        }
    }
    if schema["items"].is_object() {
        undocumented(&schema["items"], &format!("{path}[]"), missing);
    }
}
