//! Why a storefront rollout failed, in the words of the pod and the Deployment: an image that
//! cannot be pulled, a container that keeps exiting, or no progress within the deadline.
//! Pods are read only while the Deployment has not settled, so a converged tenant costs no
//! request.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use tiqzy_crds::conditions::Reason;

use super::status;
use crate::context::Context;

/// A failed storefront rollout: one of `ImagePullBackOff`, `CrashLoopBackOff`,
/// `ProgressDeadlineExceeded`, and what the pod or the Deployment says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// The runtime image that failed.
    pub image: String,
}

/// Kubelet messages are short; anything longer is cut, so a condition stays readable.
const MESSAGE_LIMIT: usize = 1024;

/// Reads the storefront's pods when its Deployment has not settled, and says whether the
/// rollout failed. A pod list that fails leaves the Deployment's own word.
pub async fn diagnose(ctx: &Context, namespace: &str, deployment: &Deployment) -> Option<Failure> {
    if !status::rolling(deployment) {
        return None;
    }
    let image = super::rollout::image(deployment)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = ListParams::default().labels(&storefront_selector());
    let pods = match pods.list(&selector).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(namespace, error = %e, "could not list storefront pods");
            Vec::new()
        }
    };
    classify(deployment, &pods, &image)
}

/// Label selector of every storefront's pods.
pub fn storefront_selector() -> String {
    format!(
        "app.kubernetes.io/name=tiqzy-storefront,{}",
        crate::cache::MANAGED_SELECTOR
    )
}

/// What of a storefront pod can change the tenant's report: its containers' waiting
/// reasons and readiness. Feeds a watch predicate, so a crash loop's rising restart count
/// does not reconcile the tenant each time.
pub fn pod_state(pod: &Pod) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    for c in statuses {
        c.image.hash(&mut hasher);
        c.ready.hash(&mut hasher);
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        waiting.and_then(|w| w.reason.as_deref()).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// The failure of a rollout to `image`, from its pods first (they say why), else from the
/// Deployment's `Progressing` condition.
pub fn classify(deployment: &Deployment, pods: &[Pod], image: &str) -> Option<Failure> {
    let failure = |reason, message: String| Failure {
        reason,
        message: cut(message),
        image: image.to_owned(),
    };
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for c in statuses.iter().filter(|c| c.image == image) {
            if let Some((reason, message)) = container_failure(name, c) {
                return Some(failure(reason, message));
            }
        }
    }
    let stuck = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some(Reason::ProgressDeadlineExceeded.as_str())
        })?;
    let mut message = stuck.message.clone().unwrap_or_default();
    if let Some(why) = pods.iter().find_map(not_ready) {
        message = format!("{message}; {why}");
    }
    Some(failure(Reason::ProgressDeadlineExceeded, message))
}

/// An image pull or crash loop of one container, as the kubelet reports it.
fn container_failure(pod: &str, c: &ContainerStatus) -> Option<(Reason, String)> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let said = waiting.message.as_deref().unwrap_or("no message");
    match waiting.reason.as_deref()? {
        why @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull") => {
            Some((
                Reason::ImagePullBackOff,
                format!(
                    "pod {pod}: container {} cannot pull image {}: {why}: {said}",
                    c.name, c.image
                ),
            ))
        }
        "CrashLoopBackOff" => {
            // The exit code and the kubelet's reason, never the termination message: that is
            // the program's own output and may quote its configuration.
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        ", last exit code {} ({})",
                        t.exit_code,
                        t.reason.as_deref().unwrap_or("no reason")
                    )
                })
                .unwrap_or_default();
            Some((
                Reason::CrashLoopBackOff,
                format!(
                    "pod {pod}: container {} restarted {} times{last}: {said}",
                    c.name, c.restart_count
                ),
            ))
        }
        _ => None,
    }
}

/// Why a pod is not ready, from its `Ready` condition.
fn not_ready(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref()?;
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "False")?;
    Some(format!(
        "pod {name} is not ready: {}",
        ready.message.as_deref().unwrap_or("no message")
    ))
}

fn cut(mut message: String) -> String {
    if message.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMAGE: &str = "quay.io/tiqzy/runtime@sha256:bad";

    fn deployment(conditions: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "storefront", "generation": 2 },
            "spec": {
                "selector": {},
                "template": { "spec": { "containers": [{ "name": "runtime", "image": IMAGE }] } },
            },
            "status": { "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
                        "availableReplicas": 1, "conditions": conditions },
        }))
        .expect("deployment")
    }

    fn pod(image: &str, container: serde_json::Value) -> Pod {
        let mut status = json!({ "name": "runtime", "image": image, "imageID": "",
                                 "ready": false, "restartCount": 0 });
        status
            .as_object_mut()
            .expect("object")
            .extend(container.as_object().expect("object").clone());
        serde_json::from_value(json!({
            "metadata": { "name": "storefront-abc" },
            "status": {
                "conditions": [{ "type": "Ready", "status": "False",
                                 "message": "containers with unready status: [runtime]" }],
                "containerStatuses": [status],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn a_pull_error_names_the_image_and_quotes_the_kubelet() {
        let pulling = pod(
            IMAGE,
            json!({ "state": { "waiting": { "reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"x\": not found" } } }),
        );
        let failure = classify(&deployment(json!([])), &[pulling], IMAGE).expect("a failure");
        assert_eq!(failure.reason, Reason::ImagePullBackOff);
        assert!(
            failure
                .message
                .contains("cannot pull image quay.io/tiqzy/runtime@sha256:bad")
        );
        assert!(
            failure
                .message
                .contains("Back-off pulling image \"x\": not found")
        );
    }

    #[test]
    fn a_crash_loop_gives_restarts_and_exit_code_but_not_the_program_output() {
        let crashing = pod(
            IMAGE,
            json!({ "restartCount": 4,
                    "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } },
                    "lastState": { "terminated": { "exitCode": 3, "reason": "Error",
                                                   "message": "DATABASE_URL=postgres://u:secret@db" } } }),
        );
        let failure = classify(&deployment(json!([])), &[crashing], IMAGE).expect("a failure");
        assert_eq!(failure.reason, Reason::CrashLoopBackOff);
        assert!(
            failure
                .message
                .contains("restarted 4 times, last exit code 3 (Error)")
        );
        assert!(failure.message.contains("back-off 40s"));
        assert!(!failure.message.contains("secret"), "{}", failure.message);
    }

    #[test]
    fn the_deadline_counts_only_once_passed_and_old_pods_say_nothing() {
        let old = pod(
            "quay.io/tiqzy/runtime@sha256:old",
            json!({ "state": { "waiting": { "reason": "CrashLoopBackOff" } } }),
        );
        let running = pod(IMAGE, json!({ "state": { "running": {} } }));
        let pods = [old, running];
        assert_eq!(classify(&deployment(json!([])), &pods, IMAGE), None);
        let stuck = deployment(json!([{ "type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"storefront-abc\" has timed out progressing." }]));
        let failure = classify(&stuck, &pods, IMAGE).expect("a failure");
        assert_eq!(failure.reason, Reason::ProgressDeadlineExceeded);
        assert!(failure.message.contains("has timed out progressing"));
        assert!(
            failure
                .message
                .contains("containers with unready status: [runtime]")
        );
    }
}
