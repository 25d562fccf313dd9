//! Writes per tenant by kind, and their bytes, from the API server's own counters
//! (`apiserver_request_total`, `apiserver_request_body_size_bytes`) read before and after a
//! run, plus the Events the operator published about Tenants.
//!
//! The counters do not say who sent a request, so only what the operator alone sends is
//! counted: server-side applies (`APPLY`), patches and deletes of the kinds it owns and of
//! Tenants. kube-controller-manager, the scheduler and kwok create and update (POST, PUT) and
//! patch only pods and nodes; the bench creates its Tenants with POST. Events are the
//! exception (the control plane writes Events too): those are counted from the Events
//! themselves, by reporting controller and the kind they are about.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

/// The resources the operator writes: its tenants' objects and the Tenants themselves.
const OWNED: &[&str] = &[
    "namespaces",
    "secrets",
    "serviceaccounts",
    "configmaps",
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "networkpolicies",
    "ingresses",
    "tenants",
];

/// Verbs only the operator (or the floor) sends to those resources.
const WRITE_VERBS: &[&str] = &["APPLY", "PATCH", "DELETE"];

/// The API server's counters at one moment.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests by (resource[/subresource], verb).
    requests: BTreeMap<(String, String), f64>,
    /// Body bytes by resource (subresources are not told apart here) of patches and deletes.
    bytes: BTreeMap<String, f64>,
}

/// Reads the API server's `/metrics` (as the admin).
pub async fn counters(admin: &kube::Client) -> Result<Counters> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = admin
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Counters {
    let mut counters = Counters::default();
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        match name {
            "apiserver_request_total" => {
                let (Some(resource), Some(verb)) = (labels.get("resource"), labels.get("verb"))
                else {
                    continue;
                };
                if !OWNED.contains(resource) || !WRITE_VERBS.contains(verb) {
                    continue;
                }
                let kind = match labels.get("subresource") {
                    Some(sub) if !sub.is_empty() => format!("{resource}/{sub}"),
                    _ => (*resource).to_owned(),
                };
                *counters
                    .requests
                    .entry((kind, (*verb).to_owned()))
                    .or_default() += value;
            }
            "apiserver_request_body_size_bytes_sum" => {
                let (Some(resource), Some(verb)) = (labels.get("resource"), labels.get("verb"))
                else {
                    continue;
                };
                // `deployments.apps`, `tenants.tiqzy.io`: the resource before its group.
                let resource = resource.split('.').next().unwrap_or_default();
                if OWNED.contains(&resource) && matches!(*verb, "patch" | "delete") {
                    *counters.bytes.entry(resource.to_owned()).or_default() += value;
                }
            }
            _ => {}
        }
    }
    counters
}

/// `name{a="x",b="y"} value` as its parts.
pub(crate) fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let labels = labels
        .split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key, value.trim_end_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

/// What a run wrote, by kind.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    /// Requests by kind (`secrets`, `tenants/status`, `tenants:patch` for a verb other
    /// than apply).
    pub requests: BTreeMap<String, f64>,
    /// Body bytes by resource.
    pub bytes: BTreeMap<String, f64>,
}

impl Writes {
    /// The writes between two readings of the counters.
    pub fn between(before: &Counters, after: &Counters) -> Self {
        let mut writes = Self::default();
        for ((kind, verb), count) in &after.requests {
            let delta = count
                - before
                    .requests
                    .get(&(kind.clone(), verb.clone()))
                    .unwrap_or(&0.0);
            if delta > 0.0 {
                let key = if verb == "APPLY" {
                    kind.clone()
                } else {
                    format!("{kind}:{}", verb.to_lowercase())
                };
                *writes.requests.entry(key).or_default() += delta;
            }
        }
        for (resource, bytes) in &after.bytes {
            let delta = bytes - before.bytes.get(resource).unwrap_or(&0.0);
            if delta > 0.0 {
                writes.bytes.insert(resource.clone(), delta);
            }
        }
        writes
    }

    /// Adds the Events `controller` published about Tenants: one write each, and one more
    /// for each repeat of it (a series is patched).
    pub async fn add_tenant_events(
        &mut self,
        admin: &kube::Client,
        controller: &str,
    ) -> Result<()> {
        let events = Api::<Event>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .context("listing Events")?;
        for mut event in events.items.into_iter().filter(|e| {
            e.reporting_controller.as_deref() == Some(controller)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Tenant")
        }) {
            let repeats = event.series.as_ref().map_or(1, |s| s.count.max(1));
            *self.requests.entry("events".to_owned()).or_default() += f64::from(repeats);
            event.metadata.managed_fields = None;
            let size = serde_json::to_vec(&event).map_or(0, |json| json.len());
            *self.bytes.entry("events".to_owned()).or_default() += size as f64;
        }
        Ok(())
    }

    pub fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    /// `writes tenants=N total=… <kind>=…` per tenant, then the bytes line, KiB per tenant.
    pub fn lines(&self, prefix: &str, tenants: usize) -> [String; 2] {
        let n = tenants.max(1) as f64;
        let mut writes = format!(
            "{prefix}-writes tenants={tenants} total={:.2}",
            self.total() / n
        );
        for (kind, count) in &self.requests {
            let _ = write!(writes, " {kind}={:.2}", count / n);
        }
        let total_bytes: f64 = self.bytes.values().sum();
        let mut bytes = format!(
            "{prefix}-write-kib tenants={tenants} total={:.2}",
            total_bytes / n / 1024.0
        );
        for (resource, b) in &self.bytes {
            let _ = write!(bytes, " {resource}={:.2}", b / n / 1024.0);
        }
        [writes, bytes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_operator_s_verbs_on_its_kinds_count() {
        let before = parse(
            r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 2
apiserver_request_total{code="201",component="apiserver",dry_run="",group="tiqzy.io",resource="tenants",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 1"#,
        );
        let after = parse(
            r#"# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 4
apiserver_request_total{code="201",component="apiserver",dry_run="",group="tiqzy.io",resource="tenants",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="tiqzy.io",resource="tenants",scope="resource",subresource="",verb="PATCH",version="v1alpha1"} 2
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_body_size_bytes_sum{resource="secrets",verb="patch"} 4096
apiserver_request_body_size_bytes_sum{resource="pods",verb="patch"} 999"#,
        );
        let writes = Writes::between(&before, &after);
        assert_eq!(
            writes.requests,
            BTreeMap::from([
                ("secrets".to_owned(), 12.0),
                ("tenants/status".to_owned(), 2.0),
                ("tenants:patch".to_owned(), 2.0),
            ])
        );
        assert_eq!(
            writes.bytes,
            BTreeMap::from([("secrets".to_owned(), 4096.0)])
        );
        let [requests, bytes] = writes.lines("operator", 2);
        assert_eq!(
            requests,
            "operator-writes tenants=2 total=8.00 secrets=6.00 tenants/status=1.00 tenants:patch=1.00"
        );
        assert_eq!(
            bytes,
            "operator-write-kib tenants=2 total=2.00 secrets=2.00"
        );
    }
}
