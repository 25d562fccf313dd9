//! Installing Tiqzy the way platform engineers do: the Containerfile that builds the images
//! (read, since no container engine runs here) and the kustomize trees under `config/`, built
//! with the release's kubectl and applied with server-side dry-run to the harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tiqzy_e2e::Harness;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------
// The Containerfile
// ---------------------------------------------------------------------------------------

// A crate root looks for modules beside itself; this one belongs to this test alone.
#[path = "install/containerfile.rs"]
mod containerfile;

use containerfile::{Containerfile, words, workspace};

const TARGETS: [(&str, &str); 2] = [("operator", "tiqzy-operator"), ("runtime", "tiqzy-runtime")];

#[test]
fn containerfile_has_an_operator_and_a_runtime_target_on_ubi() {
    let file = Containerfile::read();
    assert!(file.stages.len() >= 3, "a build stage and two targets");
    for (target, _) in TARGETS {
        let image = file.base_image(target);
        assert!(
            image.starts_with("registry.access.redhat.com/ubi9/ubi-micro")
                || image.starts_with("registry.access.redhat.com/ubi9/ubi-minimal"),
            "target {target} rests on {image}, not a minimal UBI 9 image"
        );
        assert!(
            file.chain(target).iter().all(|s| s.name != "builder"),
            "target {target} must not be the build stage"
        );
    }
}

#[test]
fn containerfile_images_run_as_non_root_and_write_nothing() {
    let file = Containerfile::read();
    for (target, binary) in TARGETS {
        let instructions = file.instructions(target);
        let user = instructions
            .iter()
            .rev()
            .find(|(_, keyword, _)| *keyword == "USER")
            .map(|(_, _, args)| args.to_string())
            .unwrap_or_else(|| panic!("target {target} sets no USER (it would run as root)"));
        let uid: u32 = user
            .split(':')
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("USER {user}: Kubernetes' runAsNonRoot needs a numeric UID"));
        assert_ne!(uid, 0, "target {target} runs as root");
        // No RUN in the final image: nothing is made writable (by group 0 or anyone) and
        // nothing needs a shell; an arbitrary UID finds exactly what was copied in.
        let runs: Vec<_> = instructions
            .iter()
            .filter(|(_, k, _)| *k == "RUN")
            .collect();
        assert!(runs.is_empty(), "target {target} runs commands: {runs:?}");
        let entrypoint = instructions
            .iter()
            .rev()
            .find(|(_, keyword, _)| *keyword == "ENTRYPOINT")
            .map(|(_, _, args)| serde_json::from_str::<Vec<String>>(args).expect("exec form"))
            .unwrap_or_else(|| panic!("target {target} has no ENTRYPOINT"));
        assert_eq!(entrypoint[0], format!("/usr/local/bin/{binary}"));
    }
}

#[test]
fn containerfile_labels_both_images_for_oci_and_openshift() {
    let file = Containerfile::read();
    let workspace = workspace();
    let license = std::fs::read_to_string(repo().join("LICENSE")).expect("a LICENSE file");
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
    for (target, binary) in TARGETS {
        let labels = file.labels(target);
        for key in [
            "org.opencontainers.image.title",
            "org.opencontainers.image.description",
            "org.opencontainers.image.vendor",
            "org.opencontainers.image.version",
            "org.opencontainers.image.licenses",
            "org.opencontainers.image.source",
            "name",
            "vendor",
            "version",
            "release",
            "summary",
            "description",
            "maintainer",
            "io.k8s.display-name",
            "io.k8s.description",
            "io.openshift.tags",
        ] {
            let value = labels.get(key).map(String::as_str).unwrap_or_default();
            assert!(
                !value.is_empty() && !value.contains('$'),
                "target {target}: label {key} is {value:?}"
            );
        }
        assert_eq!(labels["org.opencontainers.image.title"], binary);
        assert_eq!(labels["version"], workspace.version, "{target}: version");
        assert_eq!(
            labels["org.opencontainers.image.version"],
            workspace.version
        );
        assert_eq!(
            labels["org.opencontainers.image.licenses"],
            workspace.license
        );
        let ships_license = file.instructions(target).iter().any(|(_, keyword, args)| {
            *keyword == "COPY"
                && words(args)
                    .last()
                    .is_some_and(|d| d.starts_with("/licenses"))
        });
        assert!(ships_license, "target {target} has no /licenses");
    }
    assert_ne!(
        file.labels("operator")["name"],
        file.labels("runtime")["name"],
        "each image needs its own name"
    );
}

#[test]
fn containerfile_builds_dependencies_first_offline_locked_and_released() {
    let file = Containerfile::read();
    let workspace = workspace();
    let builder = file.stage("builder");
    let env = builder
        .instructions
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, args)| words(args))
        .collect::<Vec<_>>();
    assert!(env.contains(&"SQLX_OFFLINE=true".to_owned()), "ENV {env:?}");
    let position = |wanted: &dyn Fn(&str, &str) -> bool| {
        builder.instructions.iter().position(|(k, a)| wanted(k, a))
    };
    let build = "cargo build --release --locked -p tiqzy-operator -p tiqzy-runtime";
    let first_build = position(&|k, a| k == "RUN" && a.contains(build))
        .unwrap_or_else(|| panic!("no `{build}` in the build stage"));
    let sources =
        position(&|k, a| k == "COPY" && words(a).first().is_some_and(|w| w == "operator/"))
            .expect("the operator sources are copied");
    assert!(
        first_build < sources,
        "dependencies are not built before the sources are copied"
    );
    let last_build = builder
        .instructions
        .iter()
        .rposition(|(k, a)| k == "RUN" && a.contains(build))
        .expect("a build");
    assert!(last_build > sources, "the real sources are never built");
    // `--locked` fails unless every member's manifest is present for the dependency layer.
    let lock_files = ["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for manifest in workspace.manifests.iter().chain(&lock_files) {
        let copied = builder.instructions[..first_build]
            .iter()
            .any(|(k, a)| k == "COPY" && words(a).iter().any(|w| w == manifest));
        assert!(
            copied,
            "{manifest} is not copied before the dependency build"
        );
    }
}

#[test]
fn containerfile_copies_only_binaries_the_workspace_builds() {
    let file = Containerfile::read();
    let workspace = workspace();
    for (target, binary) in TARGETS {
        let copies = file.copies_from(target);
        let from_builder: Vec<_> = copies
            .iter()
            .filter(|(from, ..)| from == "builder")
            .collect();
        assert!(
            !from_builder.is_empty(),
            "{target} copies nothing from the build"
        );
        for (_, sources, _) in from_builder {
            for source in sources {
                let name = source
                    .strip_prefix("/src/target/release/")
                    .unwrap_or_else(|| panic!("{target} copies {source}, not a release binary"));
                let package = workspace.binaries.get(name).unwrap_or_else(|| {
                    panic!("{target} copies {name}, which no workspace package builds")
                });
                assert!(
                    file.stage("builder")
                        .instructions
                        .iter()
                        .any(|(k, a)| k == "RUN" && a.contains(&format!("-p {package}"))),
                    "{name} comes from {package}, which the build stage does not build"
                );
            }
        }
        assert!(
            copies.iter().any(|(_, sources, dest)| sources
                .iter()
                .any(|s| s.ends_with(&format!("/{binary}")))
                && dest.ends_with(binary)),
            "{target} does not ship {binary}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// config/ (kustomize)
// ---------------------------------------------------------------------------------------

fn kubectl(args: &[&str]) -> Output {
    Harness::shared()
        .kube
        .kubectl()
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running kubectl")
}

fn assert_success(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr.into_owned()
}

/// The objects `kubectl kustomize <dir>` renders.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = kubectl(&["kustomize", dir]);
    assert_success(&out, &format!("kubectl kustomize {dir}"));
    String::from_utf8_lossy(&out.stdout)
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).expect("kustomize output is YAML"))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Server-side dry-run apply of a kustomization; returns kubectl's stdout and stderr.
fn dry_run_apply(dir: &str) -> (String, String) {
    let out = kubectl(&["apply", "--server-side", "--dry-run=server", "-k", dir]);
    let stderr = assert_success(&out, &format!("kubectl apply --dry-run=server -k {dir}"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Creates `tiqzy-system` for real, as config/manager declares it: a dry-run creates nothing,
/// and namespaced objects cannot be dry-run into a namespace that does not exist.
fn create_operator_namespace() {
    let namespace = find(&kustomize("config/manager"), "Namespace", "tiqzy-system").clone();
    let path = Harness::shared().dir.join("tiqzy-system-namespace.json");
    std::fs::write(&path, namespace.to_string()).expect("writing the namespace");
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=tiqzy-e2e-install",
        "-f",
        path.to_str().expect("utf-8 path"),
    ]);
    assert_success(&out, "creating tiqzy-system");
}

#[test]
fn every_kustomization_under_config_builds() {
    let mut built = Vec::new();
    for entry in std::fs::read_dir(repo().join("config")).expect("config/") {
        let path = entry.expect("entry").path();
        if path.join("kustomization.yaml").exists() {
            let dir = format!(
                "config/{}",
                path.file_name().expect("name").to_string_lossy()
            );
            assert!(!kustomize(&dir).is_empty(), "{dir} renders nothing");
            built.push(dir);
        }
    }
    built.sort();
    assert_eq!(
        built,
        [
            "config/crd",
            "config/default",
            "config/grafana",
            "config/manager",
            "config/openshift",
            "config/prometheus",
            "config/rbac",
            "config/samples"
        ]
    );
}

#[test]
fn default_installs_crds_rbac_and_a_restricted_two_replica_operator() {
    let objects = kustomize("config/default");
    find(&objects, "CustomResourceDefinition", "tenants.tiqzy.io");
    find(&objects, "CustomResourceDefinition", "platforms.tiqzy.io");
    find(&objects, "ClusterRole", "tiqzy-operator");
    let account = find(&objects, "ServiceAccount", "tiqzy-operator");
    let namespace = find(&objects, "Namespace", "tiqzy-system");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let deployment = find(&objects, "Deployment", "tiqzy-operator");
    assert_eq!(deployment["metadata"]["namespace"], "tiqzy-system");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["securityContext"]["runAsUser"].is_null(),
        "OpenShift assigns the UID"
    );
    let container = &pod["containers"][0];
    let image = container["image"].as_str().expect("image");
    let digest = image
        .strip_prefix("quay.io/tiqzy/tiqzy-operator@sha256:")
        .unwrap_or_else(|| panic!("{image} is not pinned by digest"));
    assert!(
        digest.len() == 64
            && digest.chars().all(|c| c.is_ascii_hexdigit())
            && digest.chars().any(|c| c != '0'),
        "{image}"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name"), e))
        .collect();
    assert_eq!(env["TIQZY_LEADER_ELECT"]["value"], "true");
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["resources"]["requests"]["cpu"], "50m");
    assert_eq!(container["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(container["resources"]["limits"]["memory"], "128Mi");
    let service = find(&objects, "Service", "tiqzy-operator-metrics");
    let selector = service["spec"]["selector"].as_object().expect("selector");
    for (key, value) in selector {
        assert_eq!(&pod_label(deployment, key), value, "Service selects {key}");
    }
}

fn pod_label(deployment: &Value, key: &str) -> Value {
    deployment["spec"]["template"]["metadata"]["labels"][key].clone()
}

#[test]
fn default_applies_to_the_api_server_within_pod_security_restricted() {
    create_operator_namespace();
    let (stdout, stderr) = dry_run_apply("config/default");
    for applied in [
        "customresourcedefinition.apiextensions.k8s.io/tenants.tiqzy.io",
        "clusterrole.rbac.authorization.k8s.io/tiqzy-operator",
        "deployment.apps/tiqzy-operator",
        "service/tiqzy-operator-metrics",
    ] {
        assert!(stdout.contains(applied), "{applied} not applied:\n{stdout}");
    }
    assert!(!stderr.contains("PodSecurity"), "{stderr}");
}

#[test]
fn openshift_overlay_applies_and_keeps_the_default_install() {
    create_operator_namespace();
    let default = kustomize("config/default");
    let openshift = kustomize("config/openshift");
    assert_eq!(
        default.len(),
        openshift.len(),
        "the overlay adds or drops objects"
    );
    let namespace = find(&openshift, "Namespace", "tiqzy-system");
    assert_eq!(
        namespace["metadata"]["annotations"]["openshift.io/display-name"],
        "Tiqzy"
    );
    assert_eq!(
        find(&openshift, "Deployment", "tiqzy-operator"),
        find(&default, "Deployment", "tiqzy-operator")
    );
    let (stdout, stderr) = dry_run_apply("config/openshift");
    assert!(
        stdout.contains("deployment.apps/tiqzy-operator"),
        "{stdout}"
    );
    assert!(!stderr.contains("PodSecurity"), "{stderr}");
}

#[tokio::test]
async fn prometheus_config_applies_with_the_prometheus_operator_crds() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    tiqzy_e2e::install_prometheus_operator_crds(&client)
        .await
        .expect("Prometheus Operator CRDs");
    tokio::task::spawn_blocking(|| {
        create_operator_namespace();
        let (stdout, _) = dry_run_apply("config/prometheus");
        for applied in [
            "servicemonitor.monitoring.coreos.com/tiqzy-operator",
            "podmonitor.monitoring.coreos.com/tiqzy-storefronts",
            "podmonitor.monitoring.coreos.com/tiqzy-payments",
            "prometheusrule.monitoring.coreos.com/tiqzy",
        ] {
            assert!(stdout.contains(applied), "{applied} not applied:\n{stdout}");
        }
    })
    .await
    .expect("dry run");
}

#[test]
fn prometheus_config_scrapes_what_the_operator_and_storefronts_serve() {
    let monitoring = kustomize("config/prometheus");
    let manager = kustomize("config/manager");
    let service = find(&manager, "Service", "tiqzy-operator-metrics");
    let monitor = find(&monitoring, "ServiceMonitor", "tiqzy-operator");
    assert_eq!(monitor["metadata"]["namespace"], "tiqzy-system");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );

    let storefronts = find(&monitoring, "PodMonitor", "tiqzy-storefronts");
    assert_eq!(storefronts["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(
        storefronts["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "tiqzy-storefront"
    );
    // The storefront container's port `metrics` (operator/src/build/deployment.rs), which no
    // Route or Ingress reaches.
    assert_eq!(
        storefronts["spec"]["podMetricsEndpoints"][0]["port"],
        "metrics"
    );
    // Storefront series carry the tenant's name as `tenant`, from the pods' `tiqzy.io/tenant`
    // label (Prometheus' sanitised `__meta_kubernetes_pod_label_tiqzy_io_tenant`).
    let relabeling = &storefronts["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    assert_eq!(
        relabeling["sourceLabels"][0],
        "__meta_kubernetes_pod_label_tiqzy_io_tenant"
    );
    assert_eq!(relabeling["targetLabel"], "tenant");

    // The payments service's pods (operator/src/build/payments_service.rs: label
    // `app.kubernetes.io/name: tiqzy-payments`, container port `http`, which serves /metrics).
    let payments = find(&monitoring, "PodMonitor", "tiqzy-payments");
    assert_eq!(
        payments["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "tiqzy-payments"
    );
    assert_eq!(payments["spec"]["podMetricsEndpoints"][0]["port"], "http");

    let rules = find(&monitoring, "PrometheusRule", "tiqzy");
    let alerts: BTreeMap<&str, &Value> = rules["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .map(|r| (r["alert"].as_str().expect("alert name"), r))
        .collect();
    let metrics_source =
        std::fs::read_to_string(repo().join("operator/src/metrics.rs")).expect("metrics.rs");
    let job = format!(
        "job=\"{}\"",
        service["metadata"]["name"].as_str().expect("name")
    );
    for (alert, metric, registered, duration) in [
        (
            "TiqzyTenantNotReady",
            "tiqzy_tenants",
            "tiqzy_tenants",
            "10m",
        ),
        (
            "TiqzyReconcileErrors",
            "controller_runtime_reconcile_errors_total",
            "controller_runtime_reconcile_errors",
            "15m",
        ),
    ] {
        let rule = alerts
            .get(alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        let expr = rule["expr"].as_str().expect("expr");
        assert!(
            expr.contains(metric) && expr.contains(&job),
            "{alert}: {expr}"
        );
        assert_eq!(rule["for"], duration, "{alert}");
        // An alert on a metric the operator does not export never fires.
        assert!(
            metrics_source.contains(&format!("\"{registered}\"")),
            "{alert} watches {metric}, which the operator does not register"
        );
    }
    let certificate = alerts
        .get("TiqzyCertificateExpiring")
        .expect("a certificate expiry alert");
    assert!(
        certificate["expr"]
            .as_str()
            .is_some_and(|e| e.contains("tiqzy_certificate_expiry_seconds"))
    );
}

#[test]
fn crds_directory_still_applies_with_kubectl_apply_f() {
    // crds/ carries the Kustomization config/crd builds on; it must not be read as a manifest.
    let out = kubectl(&["apply", "--server-side", "--dry-run=server", "-f", "crds/"]);
    assert_success(&out, "kubectl apply -f crds/");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}
