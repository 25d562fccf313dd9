//! The storefront Deployment: the shared runtime image, configured by env from the tenant's
//! ConfigMap and Secrets, restricted security context, probes and resources. Replicas are
//! left to the HorizontalPodAutoscaler except when suspended.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tiqzy_crds::payments::{AUDIENCE, TOKEN_PATH};

use super::{
    CACHE_SECRET, DATABASE_SECRET, HTTP_PORT, MAIL_SECRET, METRICS_PORT, PAYMENTS_SECRET,
    SENTRY_SECRET, SIGNING_SECRET, STOREFRONT, labels, meta, selector,
};
use crate::tenant::ValidatedTenant;

/// Annotation on the pod template carrying a digest of the configuration, so a change of
/// branding or credentials rolls the pods.
pub const CONFIG_DIGEST_ANNOTATION: &str = "tiqzy.io/config-digest";

/// Extra pods a rollout may start above the autoscaler's count, in percent (rounded up).
const MAX_SURGE_PERCENT: i32 = 25;

/// Most storefront pods that can run at once: the autoscaler's maximum plus a rollout's surge.
pub fn most_pods(tenant: &ValidatedTenant) -> i32 {
    let max = tenant.spec.storefront.replicas.max.max(1);
    max + (max * MAX_SURGE_PERCENT + 99) / 100
}

pub fn deployment(tenant: &ValidatedTenant) -> Deployment {
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: STOREFRONT.to_owned(),
            optional: None,
        }),
        ..EnvFromSource::default()
    }];
    let mut secret_names = vec![SIGNING_SECRET];
    if tenant.secrets.database.is_some() {
        secret_names.push(DATABASE_SECRET);
    }
    if tenant.secrets.cache.is_some() {
        secret_names.push(CACHE_SECRET);
    }
    if tenant.secrets.payments.is_some() {
        secret_names.push(PAYMENTS_SECRET);
    }
    if tenant.secrets.mail.is_some() {
        secret_names.push(MAIL_SECRET);
    }
    if tenant.secrets.sentry.is_some() {
        secret_names.push(SENTRY_SECRET);
    }
    env_from.extend(secret_names.into_iter().map(|name| EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.to_owned(),
            optional: None,
        }),
        ..EnvFromSource::default()
    }));

    let mut volume_mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if tenant.payments_namespace.is_some() {
        let (volume, mount) = payments_token();
        volumes.push(volume);
        volume_mounts.push(mount);
    }

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "runtime".to_owned(),
        image: Some(tenant.runtime_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env_from: Some(env_from),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        startup_probe: Some(probe("/healthz", 2, 30)),
        resources: Some(
            tenant
                .spec
                .storefront
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(restricted()),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let mut pod_labels = labels(&tenant.name);
    pod_labels.extend(selector(&tenant.name));
    Deployment {
        metadata: meta(tenant, STOREFRONT),
        spec: Some(DeploymentSpec {
            // Unset unless suspended: the HorizontalPodAutoscaler owns the replica count.
            replicas: tenant.spec.storefront.suspended.then_some(0),
            revision_history_limit: Some(3),
            // Past it, the deployment controller sets Progressing=False,
            // ProgressDeadlineExceeded: a failed rollout the operator reports and halts.
            progress_deadline_seconds: Some(tenant.progress_deadline_seconds),
            selector: LabelSelector {
                match_labels: Some(selector(&tenant.name)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String(format!("{MAX_SURGE_PERCENT}%"))),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_DIGEST_ANNOTATION.to_owned(),
                        tenant.config_digest.clone(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(STOREFRONT.to_owned()),
                    // The runtime never talks to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Seconds a payments token lasts; the kubelet renews it at 80 % of that.
const PAYMENTS_TOKEN_SECONDS: i64 = 3600;

/// The projected ServiceAccount token the storefront presents to the payments service (its
/// only Kubernetes credential, good for that audience alone), at `tiqzy_crds::payments::TOKEN_PATH`.
fn payments_token() -> (Volume, VolumeMount) {
    let (dir, file) = TOKEN_PATH.rsplit_once('/').expect("an absolute path");
    let volume = Volume {
        name: "payments-token".to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(AUDIENCE.to_owned()),
                    expiration_seconds: Some(PAYMENTS_TOKEN_SECONDS),
                    path: file.to_owned(),
                }),
                ..VolumeProjection::default()
            }]),
            // Readable by the container's user whoever it is (the image's UID on Kubernetes,
            // a namespace-assigned one on OpenShift): the kubelet writes the file as root and
            // chowns it only when the pod names a `runAsUser` or `fsGroup`, which this pod
            // leaves to the cluster. 0440 left the storefront unable to read its token on a
            // real node; the kubelet's own API-access volume uses 0644 for the same reason.
            default_mode: Some(0o444),
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "payments-token".to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// A container as Pod Security `restricted` wants it: no privilege escalation, no
/// capabilities, not root, the runtime's seccomp profile, and a read-only root filesystem.
pub(super) fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

pub(super) fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod payments_tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_storefront_presents_a_token_for_the_payments_service_only() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        let pod = |t: &ValidatedTenant| {
            deployment(t)
                .spec
                .expect("spec")
                .template
                .spec
                .expect("pod")
        };
        assert!(
            !pod(&tenant)
                .volumes
                .expect("volumes")
                .iter()
                .any(|v| v.projected.is_some()),
            "no payments service: no token"
        );
        tenant.payments_namespace = Some("tiqzy-system".to_owned());
        tenant.secrets.payments = Some(Default::default());
        let pod = pod(&tenant);
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "no API token"
        );
        let volume = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "payments-token")
            .expect("token volume");
        let token = volume
            .projected
            .expect("projected")
            .sources
            .expect("sources")[0]
            .service_account_token
            .clone()
            .expect("token");
        assert_eq!(token.audience.as_deref(), Some("tiqzy-payments"));
        assert_eq!(token.expiration_seconds, Some(3600));
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "payments-token")
            .expect("mount");
        assert_eq!(
            format!("{}/{}", mount.mount_path, token.path),
            "/var/run/secrets/tiqzy-payments/token"
        );
        let secrets: Vec<_> = container
            .env_from
            .iter()
            .flatten()
            .filter_map(|e| e.secret_ref.as_ref().map(|s| s.name.as_str()))
            .collect();
        assert!(secrets.contains(&"storefront-payments"), "{secrets:?}");
        assert!(!secrets.contains(&"storefront-stripe"), "{secrets:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn replicas_are_left_to_the_autoscaler() {
        let d = deployment(&fixture::validated(&fixture::tenant("acme")));
        assert_eq!(d.spec.expect("spec").replicas, None);
    }

    #[test]
    fn metrics_have_a_port_of_their_own() {
        let d = deployment(&fixture::validated(&fixture::tenant("acme")));
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        let ports: Vec<_> = pod.containers[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("http".to_owned(), HTTP_PORT),
                ("metrics".to_owned(), METRICS_PORT)
            ]
        );
    }

    #[test]
    fn a_suspended_storefront_scales_to_zero() {
        let mut tenant = fixture::tenant("acme");
        tenant.spec.storefront.suspended = true;
        let d = deployment(&fixture::validated(&tenant));
        assert_eq!(d.spec.expect("spec").replicas, Some(0));
    }

    #[test]
    fn the_pod_passes_restricted_pod_security() {
        let d = deployment(&fixture::validated(&fixture::tenant("acme")));
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    }

    #[test]
    fn the_image_is_the_one_chosen_for_the_tenant() {
        let mut validated = fixture::validated(&fixture::tenant("acme"));
        validated.runtime_image = "quay.io/tiqzy/runtime@sha256:abc".to_owned();
        let d = deployment(&validated);
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("quay.io/tiqzy/runtime@sha256:abc")
        );
    }
}
