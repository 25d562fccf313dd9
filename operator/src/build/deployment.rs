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
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    CACHE_SECRET, DATABASE_SECRET, HTTP_PORT, METRICS_PORT, PAYMENTS_SECRET, SIGNING_SECRET,
    STOREFRONT, labels, meta, selector,
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
    env_from.extend(secret_names.into_iter().map(|name| EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.to_owned(),
            optional: None,
        }),
        ..EnvFromSource::default()
    }));

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
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
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
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("64Mi".to_owned())),
                            ..EmptyDirVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn runtime_default() -> SeccompProfile {
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
