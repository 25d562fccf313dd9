//! kwok's stage configuration: the stages shipped in kwok's module (a pod becomes Ready, a
//! deleted pod goes), plus failures for images *marked* in their reference, so tests can watch
//! the operator face a storefront that cannot start. The failing pods look as a kubelet
//! leaves them:
//!
//! | marker in the image reference | pod |
//! |---|---|
//! | [`FAIL_PULL`]  | `Pending`, container waiting `ErrImagePull`, then `ImagePullBackOff` |
//! | [`FAIL_CRASH`] | `Running`, container waiting `CrashLoopBackOff`, exit code 1, restarts rising (to 5) |
//! | [`FAIL_READY`] | `Running`, container running but never ready |
//!
//! Every other image behaves as with kwok's own stages.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// An image whose reference contains this cannot be pulled.
pub const FAIL_PULL: &str = "fail-pull";
/// An image whose reference contains this exits with code 1 right after starting, forever.
pub const FAIL_CRASH: &str = "fail-crash";
/// An image whose reference contains this runs but never passes its readiness probe.
pub const FAIL_READY: &str = "fail-ready";

/// A jq expression: whether any container's image carries `marker`.
fn marked(marker: &str) -> String {
    format!(r#"[.spec.containers[].image | contains("{marker}")] | any"#)
}

/// The configuration kwok is started with: kwok's stage files, with its pod-ready stage kept
/// off marked images, followed by the failure stages. Written as JSON documents (which are
/// YAML) separated by `---`.
pub(crate) fn configuration(upstream: &[PathBuf]) -> Result<String> {
    let mut documents = Vec::new();
    let mut ready_found = false;
    for file in upstream {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading kwok stage file {}", file.display()))?;
        let mut stage: Value = serde_saphyr::from_str(&text)
            .with_context(|| format!("parsing kwok stage file {}", file.display()))?;
        if stage["metadata"]["name"] == "pod-ready" {
            ready_found = true;
            let expressions = stage["spec"]["selector"]["matchExpressions"]
                .as_array_mut()
                .context("kwok's pod-ready stage has no matchExpressions")?;
            let any_marker = format!(
                r#"[.spec.containers[].image | (contains("{FAIL_PULL}") or contains("{FAIL_CRASH}") or contains("{FAIL_READY}"))] | any"#
            );
            expressions.push(json!({ "key": any_marker, "operator": "In", "values": ["false"] }));
        }
        documents.push(serde_json::to_string_pretty(&stage)?);
    }
    if !ready_found {
        bail!("kwok's stage files have no pod-ready stage to keep off failing images");
    }
    for stage in failure_stages() {
        documents.push(serde_json::to_string_pretty(&stage)?);
    }
    Ok(documents
        .iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>())
}

/// A stage on pods that are not being deleted, in `phase`, with `extra` selector expressions.
fn pod_stage(name: &str, phase: &str, extra: Vec<Value>, delay_ms: u64, template: &str) -> Value {
    let mut expressions = vec![
        json!({ "key": ".metadata.deletionTimestamp", "operator": "DoesNotExist" }),
        json!({ "key": ".status.phase", "operator": "In", "values": [phase] }),
    ];
    expressions.extend(extra);
    let mut spec = json!({
        "resourceRef": { "apiGroup": "v1", "kind": "Pod" },
        "selector": { "matchExpressions": expressions },
        "next": { "statusTemplate": template },
    });
    if delay_ms > 0 {
        spec["delay"] = json!({ "durationMilliseconds": delay_ms });
    }
    json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": { "name": name },
        "spec": spec,
    })
}

fn is_marked(marker: &str) -> Value {
    json!({ "key": marked(marker), "operator": "In", "values": ["true"] })
}

/// The pod conditions of a scheduled pod whose containers are not ready.
const NOT_READY_CONDITIONS: &str = r#"
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodScheduled
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: Ready
        reason: ContainersNotReady
        message: {{ printf "containers with unready status: [%s]" $names | Quote }}
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: ContainersReady
        reason: ContainersNotReady
        message: {{ printf "containers with unready status: [%s]" $names | Quote }}
"#;

/// Addresses of a pod on its node, as kwok's own pod-ready stage assigns them.
const ADDRESSES: &str = r#"
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      {{ end }}
      {{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ . | Quote }}
      {{ end }}
"#;

const HEAD: &str = r#"
      {{ $now := Now }}
      {{ $root := . }}
      {{ $names := list }}
      {{ range .spec.containers }}{{ $names = append $names .name }}{{ end }}
      {{ $names = join " " $names }}
"#;

fn failure_stages() -> Vec<Value> {
    let waiting_reason = ".status.containerStatuses[]?.state.waiting.reason";
    let pull = format!(
        r#"{HEAD}{NOT_READY_CONDITIONS}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        {{{{ if contains "{FAIL_PULL}" .image }}}}
        state:
          waiting:
            reason: {{{{ $.reason }}}}
            message: {{{{ printf $.format .image .image .image | Quote }}}}
        {{{{ else }}}}
        state:
          waiting:
            reason: ContainerCreating
        {{{{ end }}}}
      {{{{ end }}}}
{ADDRESSES}
      phase: Pending
"#
    );
    let not_found = "rpc error: code = NotFound desc = failed to pull and unpack image %q: \
                     failed to resolve reference %q: %s: not found";
    let first_pull = pull
        .replace("$.reason", "\"ErrImagePull\"")
        .replace("$.format", &format!("{not_found:?}"));
    let backoff = pull
        .replace("$.reason", "\"ImagePullBackOff\"")
        .replace(
            "$.format",
            &format!(
                "{:?}",
                format!("Back-off pulling image %q: ErrImagePull: {not_found}")
            ),
        )
        // The back-off message names the image once more.
        .replace(
            ".image .image .image | Quote",
            ".image .image .image .image | Quote",
        );

    let crash = |restarts: &str| {
        format!(
            r#"{HEAD}{NOT_READY_CONDITIONS}
      containerStatuses:
      {{{{ range $index, $item := .spec.containers }}}}
      {{{{ $restarts := {restarts} }}}}
      - image: {{{{ $item.image | Quote }}}}
        name: {{{{ $item.name | Quote }}}}
        ready: false
        {{{{ if contains "{FAIL_CRASH}" $item.image }}}}
        started: false
        restartCount: {{{{ $restarts }}}}
        state:
          waiting:
            reason: CrashLoopBackOff
            message: {{{{ printf "back-off %ds restarting failed container=%s pod=%s_%s(%s)" ( index ( list 10 10 20 40 80 160 300 ) ( min $restarts 6 ) ) $item.name $root.metadata.name $root.metadata.namespace $root.metadata.uid | Quote }}}}
        lastState:
          terminated:
            exitCode: 1
            reason: Error
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
        {{{{ else }}}}
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
        {{{{ end }}}}
      {{{{ end }}}}
{ADDRESSES}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"#
        )
    };
    let never_ready = format!(
        r#"{HEAD}{NOT_READY_CONDITIONS}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
{ADDRESSES}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"#
    );
    let pulling = json!({
        "key": waiting_reason, "operator": "NotIn", "values": ["ErrImagePull", "ImagePullBackOff"],
    });
    let pull_failed =
        json!({ "key": waiting_reason, "operator": "In", "values": ["ErrImagePull"] });
    let crashing = json!({
        "key": format!(
            r#"[.status.containerStatuses[]? | select(.state.waiting.reason == "CrashLoopBackOff") | .restartCount] | length > 0 and max < 5"#
        ),
        "operator": "In",
        "values": ["true"],
    });
    vec![
        pod_stage(
            "tiqzy-pod-image-pull-error",
            "Pending",
            vec![is_marked(FAIL_PULL), pulling],
            0,
            &first_pull,
        ),
        pod_stage(
            "tiqzy-pod-image-pull-backoff",
            "Pending",
            vec![is_marked(FAIL_PULL), pull_failed],
            1000,
            &backoff,
        ),
        pod_stage(
            "tiqzy-pod-crash",
            "Pending",
            vec![is_marked(FAIL_CRASH)],
            0,
            &crash("1"),
        ),
        pod_stage(
            "tiqzy-pod-crash-again",
            "Running",
            vec![is_marked(FAIL_CRASH), crashing],
            2000,
            &crash("add 1 ( index $root.status.containerStatuses $index ).restartCount"),
        ),
        pod_stage(
            "tiqzy-pod-never-ready",
            "Pending",
            vec![is_marked(FAIL_READY)],
            0,
            &never_ready,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ready_is_kept_off_marked_images_and_the_failures_follow() {
        let dir = std::env::temp_dir().join(format!("tiqzy-kwok-stages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ready = dir.join("pod-ready.yaml");
        std::fs::write(
            &ready,
            "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n  name: pod-ready\n\
             spec:\n  resourceRef:\n    apiGroup: v1\n    kind: Pod\n  selector:\n    \
             matchExpressions:\n    - key: '.status.phase'\n      operator: 'In'\n      \
             values: ['Pending']\n  next:\n    statusTemplate: 'phase: Running'\n",
        )
        .expect("write");
        let text = configuration(std::slice::from_ref(&ready)).expect("configuration");
        let stages: Vec<Value> = text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).expect("a JSON document"))
            .collect();
        let names: Vec<&str> = stages
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names[0], "pod-ready");
        assert!(names.contains(&"tiqzy-pod-image-pull-backoff"));
        let ready_keys = stages[0]["spec"]["selector"]["matchExpressions"]
            .as_array()
            .expect("expressions");
        assert_eq!(ready_keys.len(), 2);
        assert!(
            ready_keys[1]["key"]
                .as_str()
                .expect("key")
                .contains(FAIL_CRASH)
        );
        // Templates keep their Go template actions intact.
        let crash = stages
            .iter()
            .find(|s| s["metadata"]["name"] == "tiqzy-pod-crash-again")
            .expect("crash stage");
        let template = crash["spec"]["next"]["statusTemplate"]
            .as_str()
            .expect("template");
        assert!(template.contains(
            "{{ $restarts := add 1 ( index $root.status.containerStatuses $index ).restartCount }}"
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
