//! What `config/prometheus` and `config/grafana` ask of Prometheus: the alert rules as the
//! plain rules file promtool reads, every PromQL query of the alerts and dashboards, the
//! metric names those queries read, and which of Tiqzy's programs must export each name.
//!
//! The programs' tests scrape their real `/metrics` and call [`unexported`]: a query naming a
//! metric nobody exports shows nothing on a dashboard and never fires as an alert.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The PrometheusRule `config/prometheus/alerts.yaml`.
pub fn prometheus_rule() -> Result<Value> {
    let path = repo().join("config/prometheus/alerts.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The rule groups of the PrometheusRule as a Prometheus rules file (JSON, which is YAML):
/// what the Prometheus Operator hands to Prometheus.
pub fn rules_file_text() -> Result<String> {
    let rule = prometheus_rule()?;
    let groups = rule["spec"]["groups"].clone();
    if !groups.is_array() {
        bail!("config/prometheus/alerts.yaml has no spec.groups");
    }
    Ok(serde_json::to_string_pretty(&json!({ "groups": groups }))?)
}

/// The alerting rules by name.
pub fn alerts() -> Result<BTreeMap<String, Value>> {
    let rule = prometheus_rule()?;
    let mut alerts = BTreeMap::new();
    for group in rule["spec"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let Some(name) = rule["alert"].as_str() {
                alerts.insert(name.to_owned(), rule.clone());
            }
        }
    }
    Ok(alerts)
}

/// One PromQL query and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `alert TiqzyBackupTooOld`, `storefront.json panel "Latency" target B`, ...
    pub origin: String,
    pub expr: String,
}

/// Every alert's expression.
pub fn alert_queries() -> Result<Vec<Query>> {
    alerts()?
        .into_iter()
        .map(|(name, rule)| {
            let expr = rule["expr"]
                .as_str()
                .with_context(|| format!("alert {name} has no expr"))?;
            Ok(Query {
                origin: format!("alert {name}"),
                expr: expr.trim().to_owned(),
            })
        })
        .collect()
}

/// The dashboards of `config/grafana`, by file name.
pub fn dashboards() -> Result<BTreeMap<String, Value>> {
    let dir = repo().join("config/grafana");
    let mut dashboards = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let dashboard = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            dashboards.insert(name, dashboard);
        }
    }
    Ok(dashboards)
}

/// The values Grafana gives its variables when it sends a query, so the query can be parsed
/// as Prometheus will receive it.
const GRAFANA_VARIABLES: [(&str, &str); 4] = [
    ("$__rate_interval", "2m"),
    ("$__interval", "1m"),
    ("$__range", "6h"),
    ("$tenant", "jazz-club"),
];

/// Every panel target's expression (Grafana's variables replaced by values it could send),
/// and the metric of every `label_values(metric, label)` variable query.
pub fn dashboard_queries() -> Result<Vec<Query>> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards()? {
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                bail!("{file}: panel {title:?} has no query");
            }
            for target in targets {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                let origin = format!("{file} panel {title:?} target {ref_id}");
                let expr = target["expr"]
                    .as_str()
                    .with_context(|| format!("{origin} has no expr"))?;
                queries.push(Query {
                    origin,
                    expr: substitute(expr)?,
                });
            }
        }
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str());
            if let Some(metric) = query
                .and_then(|q| q.strip_prefix("label_values("))
                .and_then(|q| q.split_once(','))
                .map(|(metric, _)| metric.trim())
            {
                queries.push(Query {
                    origin: format!(
                        "{file} variable {}",
                        variable["name"].as_str().unwrap_or("?")
                    ),
                    expr: metric.to_owned(),
                });
            }
        }
    }
    Ok(queries)
}

fn substitute(expr: &str) -> Result<String> {
    let mut expr = expr.to_owned();
    for (variable, value) in GRAFANA_VARIABLES {
        expr = expr.replace(variable, value);
    }
    if expr.contains('$') {
        bail!("a Grafana variable the tests cannot fill in: {expr}");
    }
    Ok(expr)
}

/// The metric names `expr` selects; an error when it is not valid PromQL.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(selector) => selector,
                Expr::MatrixSelector(matrix) => &matrix.vs,
                _ => return Ok(true),
            };
            match &selector.name {
                Some(name) => {
                    self.0.insert(name.clone());
                    Ok(true)
                }
                None => Err(format!("a selector without a metric name: {selector}")),
            }
        }
    }
    let parsed = parser::parse(expr).map_err(|e| anyhow::anyhow!("{e}: {expr}"))?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(names.0)
}

/// Who exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exporter {
    /// `tiqzy-operator`'s `/metrics`.
    Operator,
    /// The storefront's (`tiqzy-runtime`) metrics port.
    Storefront,
    /// `tiqzy-payments`' `/metrics`.
    Payments,
    /// Prometheus itself, for every target it scrapes (`up`).
    Prometheus,
}

impl fmt::Display for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Operator => "tiqzy-operator",
            Self::Storefront => "the storefront",
            Self::Payments => "tiqzy-payments",
            Self::Prometheus => "Prometheus",
        })
    }
}

/// Which program a metric name belongs to, by the prefixes each program registers under
/// (operator/src/metrics.rs, tenant-runtime/src/metrics.rs' `tiqzy` registry,
/// payments/src/metrics.rs' `tiqzy_payments` registry).
pub fn exporter_of(name: &str) -> Option<Exporter> {
    const OPERATOR: [&str; 5] = [
        "controller_runtime_",
        "tiqzy_operator_",
        "tiqzy_tenants",
        "tiqzy_backup_",
        "tiqzy_certificate_",
    ];
    if name == "up" {
        Some(Exporter::Prometheus)
    } else if OPERATOR.iter().any(|p| name.starts_with(p)) {
        Some(Exporter::Operator)
    } else if name.starts_with("tiqzy_payments_") {
        Some(Exporter::Payments)
    } else if name.starts_with("tiqzy_") {
        Some(Exporter::Storefront)
    } else {
        None
    }
}

/// Every metric name any alert or dashboard reads, with the queries that read it.
pub fn names_in_use() -> Result<BTreeMap<String, Vec<String>>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for query in alert_queries()?.into_iter().chain(dashboard_queries()?) {
        for name in metric_names(&query.expr).with_context(|| query.origin.clone())? {
            names.entry(name).or_default().push(query.origin.clone());
        }
    }
    Ok(names)
}

/// The series names a scrape can hold, from the families `text` (Prometheus' text format or
/// OpenMetrics) declares with `# TYPE` and the samples it carries: a counter `x` is sampled as
/// `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`. prometheus-client writes a
/// labelled family only once it has a series: the event behind it must have happened.
pub fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut words = declaration.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" if family.ends_with("_total") => &[""],
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The metric names the alerts and dashboards expect from `exporter` that its scrape `text`
/// lacks, each with the queries that read it; empty when everything is there.
pub fn unexported(exporter: Exporter, text: &str) -> Result<Vec<String>> {
    let exported = exported_names(text);
    Ok(names_in_use()?
        .into_iter()
        .filter(|(name, _)| exporter_of(name) == Some(exporter) && !exported.contains(name))
        .map(|(name, used_by)| format!("{name} (read by {})", used_by.join(", ")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_selectors_not_labels_or_functions() {
        let names = metric_names(
            "histogram_quantile(0.99, sum by (tenant, le) \
             (rate(tiqzy_http_request_duration_seconds_bucket{status=~\"5..\"}[5m]))) \
             / on (tenant) group_left max(up{job=\"x\"}) > bool 1",
        )
        .expect("parses");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["tiqzy_http_request_duration_seconds_bucket", "up"]
        );
        assert!(metric_names("sum(rate(x[5m])").is_err());
    }

    #[test]
    fn a_family_declares_the_series_of_its_type() {
        let text = "# HELP tiqzy_holds Hold attempts by outcome.\n\
                    # TYPE tiqzy_holds counter\n\
                    # TYPE tiqzy_http_request_duration_seconds histogram\n\
                    # TYPE tiqzy_tenants gauge\n\
                    tiqzy_tenants{phase=\"Ready\"} 3\n\
                    process_open_fds 9\n\
                    # EOF\n";
        let names = exported_names(text);
        for name in [
            "tiqzy_holds_total",
            "tiqzy_http_request_duration_seconds_bucket",
            "tiqzy_http_request_duration_seconds_count",
            "tiqzy_tenants",
            "process_open_fds",
        ] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
        assert!(!names.contains("tiqzy_holds"));
        assert!(!names.contains("tiqzy_http_request_duration_seconds"));
    }

    #[test]
    fn grafana_variables_are_filled_in() {
        assert_eq!(
            substitute("rate(x{tenant=\"$tenant\"}[$__rate_interval])").expect("known"),
            "rate(x{tenant=\"jazz-club\"}[2m])"
        );
        assert!(substitute("x{pod=\"$pod\"}").is_err());
    }
}
