//! Jaeger v2: a real trace backend. It receives spans over OTLP (gRPC and HTTP), keeps them
//! in memory and answers Jaeger's query API, so tests send the operator's and the storefront's
//! traces to it and check which spans arrived, with which attributes and parents.
//!
//! Jaeger v2 is an OpenTelemetry Collector distribution: the harness writes its configuration
//! (`jaeger.yaml` in the run directory: the `otlp` receiver, in-memory storage, the
//! `jaeger_query` extension), every port picked by `ports.rs` (never one of Jaeger's
//! defaults), its own metrics and its self-tracing off. One Jaeger serves every test of a
//! binary ([`Jaeger::shared`]); tests tell their traces apart by service name or by an
//! attribute of their own.
//!
//! A program under test exports to it with the standard variables, e.g.
//! `OTEL_EXPORTER_OTLP_ENDPOINT=<otlp_http_endpoint()>` with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (or [`Jaeger::otlp_grpc_endpoint`] with
//! `grpc`). Spans arrive asynchronously (exporters batch): wait with [`Jaeger::wait_for`], not
//! a sleep.
//!
//! The query API is `/api/services` and `/api/traces` on [`Jaeger::ui_url`], the internal HTTP
//! API Jaeger's UI uses: its trace search filters by attributes (`tags`), which the `api/v3`
//! search of v1.76 does not. Jaeger's web UI is a separate React build that is not in the Go
//! module, so that address shows Jaeger's placeholder page instead of the UI.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ports::{accepting_on, free_port};
use crate::process::Service;

/// A running Jaeger. Dropping it stops the server (and forgets every span).
#[derive(Debug)]
pub struct Jaeger {
    /// Where the OTLP receivers listen: loopback, or the pod bridge's gateway so pods send to it.
    pub otlp_host: String,
    otlp_grpc_port: u16,
    otlp_http_port: u16,
    /// `http://127.0.0.1:<port>`: the query API (and the UI's address).
    query_url: String,
    http: reqwest::Client,
    service: Service,
}

/// One trace as Jaeger returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Ordered by start time.
    pub spans: Vec<Span>,
}

/// One span of a [`Trace`].
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The span's parent in the same trace; `None` for a root span (or one whose parent was
    /// in another trace).
    pub parent_span_id: Option<String>,
    /// The span's name (`operationName` in Jaeger).
    pub operation: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The span's attributes, each value as a string (numbers and booleans in their JSON
    /// form), plus what Jaeger derives from the span: `span.kind` (`server`, `client`, ...),
    /// `otel.status_code` and `error` for an error status, `otel.scope.name`.
    pub tags: BTreeMap<String, String>,
    /// The resource's other attributes (`service.name` is [`Span::service`]).
    pub resource: BTreeMap<String, String>,
    /// Start, in microseconds since the Unix epoch.
    pub start_micros: u64,
    pub duration_micros: u64,
}

impl Span {
    /// The value of attribute `key`, if the span has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

impl Trace {
    /// The spans named `operation`, by start time.
    pub fn spans_named<'a>(&'a self, operation: &'a str) -> impl Iterator<Item = &'a Span> + 'a {
        self.spans.iter().filter(move |s| s.operation == operation)
    }

    /// The first span named `operation`.
    pub fn span<'a>(&'a self, operation: &'a str) -> Option<&'a Span> {
        self.spans_named(operation).next()
    }

    /// The spans whose parent is `parent`.
    pub fn children<'a>(&'a self, parent: &'a Span) -> impl Iterator<Item = &'a Span> + 'a {
        self.spans
            .iter()
            .filter(move |s| s.parent_span_id.as_deref() == Some(parent.span_id.as_str()))
    }

    /// Every span below `parent`: its children, theirs, and so on.
    pub fn descendants<'a>(&'a self, parent: &'a Span) -> Vec<&'a Span> {
        let mut found: Vec<&Span> = self.children(parent).collect();
        let mut next = 0;
        while next < found.len() {
            let below: Vec<&Span> = self.children(found[next]).collect();
            found.extend(below);
            next += 1;
        }
        found
    }

    /// The spans without a parent in this trace.
    pub fn roots(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| {
            s.parent_span_id
                .as_deref()
                .is_none_or(|parent| !self.spans.iter().any(|p| p.span_id == parent))
        })
    }
}

impl Jaeger {
    /// The Jaeger shared by every test of this test binary, started on first use, its OTLP
    /// receivers on loopback.
    pub fn shared() -> &'static Jaeger {
        static SHARED: OnceLock<Result<Jaeger, String>> = OnceLock::new();
        crate::once_per_binary(&SHARED, "starting Jaeger", || async {
            Jaeger::start(&crate::new_run_dir()?.join("jaeger")).await
        })
    }

    /// Builds Jaeger if needed and starts it on free loopback ports, its configuration and
    /// log in `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// The same, with the OTLP receivers on `otlp_host` (the query API stays on loopback).
    pub async fn start_on(dir: &Path, otlp_host: &str) -> Result<Self> {
        let program = tokio::task::spawn_blocking(crate::ensure_jaeger)
            .await
            .context("building Jaeger")??;
        let log_dir = dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let ports = Ports {
            otlp_grpc: free_port()?,
            otlp_http: free_port()?,
            query_http: free_port()?,
            query_grpc: free_port()?,
        };
        let config = dir.join("jaeger.yaml");
        std::fs::write(&config, configuration(otlp_host, &ports))
            .with_context(|| format!("writing {}", config.display()))?;
        let args = vec![format!("--config={}", config.display())];
        // From a thread that outlives the test, so the server dies with the binary only.
        let mut service = Service::spawn_long_lived("jaeger", &program, args, &log_dir)?;
        let query_url = format!("http://127.0.0.1:{}", ports.query_http);
        // No idle connections kept: the client serves tests on many runtimes, and a pooled
        // connection belongs to the runtime that opened it.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let host = otlp_host.to_owned();
        service
            .wait_ready(Duration::from_secs(60), || {
                let (host, http, url) = (host.clone(), http.clone(), query_url.clone());
                async move {
                    accepting_on(&host, ports.otlp_grpc).await?;
                    accepting_on(&host, ports.otlp_http).await?;
                    http.get(format!("{url}/api/services"))
                        .send()
                        .await?
                        .error_for_status()?;
                    Ok(())
                }
            })
            .await?;
        Ok(Self {
            otlp_host: otlp_host.to_owned(),
            otlp_grpc_port: ports.otlp_grpc,
            otlp_http_port: ports.otlp_http,
            query_url,
            http,
            service,
        })
    }

    /// The OTLP/HTTP receiver, `http://<otlp_host>:<port>` (traces go to `/v1/traces`): the
    /// value for `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `http/protobuf` or `http/json`.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}:{}", self.otlp_host, self.otlp_http_port)
    }

    /// The OTLP/gRPC receiver, `http://<otlp_host>:<port>` (plain text): the value for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `grpc`.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://{}:{}", self.otlp_host, self.otlp_grpc_port)
    }

    /// `http://127.0.0.1:<port>`, where Jaeger's query API answers (and its UI would be, see
    /// the module docs).
    pub fn ui_url(&self) -> &str {
        &self.query_url
    }

    /// The server's process id (to see what it listens on).
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// The service names that have sent spans, sorted.
    pub async fn services(&self) -> Result<Vec<String>> {
        let body = self.get("/api/services", &[]).await?;
        let mut services: Vec<String> = body["data"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        services.sort();
        Ok(services)
    }

    /// The traces of the last two days with a span of `service` that carries every one of
    /// `tags` (a span attribute, or an attribute of its resource or scope, compared as
    /// strings), at most 1,000, in the order Jaeger gives. Each trace comes with all of its
    /// spans, of every service.
    pub async fn traces(&self, service: &str, tags: &[(&str, &str)]) -> Result<Vec<Trace>> {
        let mut query = vec![
            ("service", service.to_owned()),
            ("limit", "1000".to_owned()),
        ];
        if !tags.is_empty() {
            let tags: serde_json::Map<String, Value> = tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            query.push(("tags", Value::Object(tags).to_string()));
        }
        let body = self.get("/api/traces", &query).await?;
        parse_traces(&body)
            .with_context(|| format!("reading Jaeger's traces for service {service} {tags:?}"))
    }

    /// [`Jaeger::traces`] again and again until `done` accepts what was found (for example
    /// "one trace with 3 spans"), which it returns. Fails after `timeout` with what was found.
    pub async fn wait_for(
        &self,
        service: &str,
        tags: &[(&str, &str)],
        timeout: Duration,
        done: impl Fn(&[Trace]) -> bool,
    ) -> Result<Vec<Trace>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let traces = self.traces(service, tags).await?;
            if done(&traces) {
                return Ok(traces);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Jaeger's traces for service {service} with {tags:?} were still not as \
                     expected after {timeout:?}; it has {}",
                    describe(&traces)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}{path}", self.query_url);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        let body: Value =
            serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))?;
        if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
            bail!("GET {url}: Jaeger reports errors: {errors:?}");
        }
        Ok(body)
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    otlp_grpc: u16,
    otlp_http: u16,
    query_http: u16,
    query_grpc: u16,
}

/// Jaeger's configuration: OTLP in, memory storage, the query API out, nothing else listening.
fn configuration(otlp_host: &str, ports: &Ports) -> String {
    format!(
        r#"# Written by the Tiqzy test harness (tests/e2e/src/jaeger.rs).
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    # Jaeger's own metrics would open a Prometheus endpoint (8888 by default): off.
    metrics:
      level: none
    logs:
      level: info

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{otlp_host}:{otlp_grpc}"
      http:
        endpoint: "{otlp_host}:{otlp_http}"

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    # On by default in v2: it would export the query service's own spans to localhost:4318.
    enable_tracing: false
    http:
      endpoint: "127.0.0.1:{query_http}"
    grpc:
      endpoint: "127.0.0.1:{query_grpc}"
"#,
        otlp_grpc = ports.otlp_grpc,
        otlp_http = ports.otlp_http,
        query_http = ports.query_http,
        query_grpc = ports.query_grpc,
    )
}

/// The traces in a response of `/api/traces` (`{"data": [{"traceID", "spans", "processes"}]}`).
fn parse_traces(body: &Value) -> Result<Vec<Trace>> {
    let Some(traces) = body["data"].as_array() else {
        bail!("no `data` list in {body}");
    };
    traces.iter().map(parse_trace).collect()
}

fn parse_trace(trace: &Value) -> Result<Trace> {
    let trace_id = text(&trace["traceID"]).context("a trace without traceID")?;
    let processes = &trace["processes"];
    let mut spans = trace["spans"]
        .as_array()
        .context("a trace without spans")?
        .iter()
        .map(|span| {
            let span_id = text(&span["spanID"]).context("a span without spanID")?;
            // OTLP's parent arrives as a CHILD_OF reference (links are FOLLOWS_FROM).
            let parent_span_id = span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| text(&r["spanID"]))
                .or_else(|| text(&span["parentSpanID"]).filter(|p| !p.is_empty()));
            let process = span["processID"]
                .as_str()
                .map_or(&span["process"], |id| &processes[id]);
            Ok(Span {
                span_id,
                parent_span_id,
                operation: text(&span["operationName"]).unwrap_or_default(),
                service: text(&process["serviceName"]).unwrap_or_default(),
                tags: key_values(&span["tags"]),
                resource: key_values(&process["tags"]),
                start_micros: span["startTime"].as_u64().unwrap_or_default(),
                duration_micros: span["duration"].as_u64().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<Span>>>()?;
    // Jaeger's order varies from one answer to the next.
    spans.sort_by(|a, b| (a.start_micros, &a.span_id).cmp(&(b.start_micros, &b.span_id)));
    Ok(Trace { trace_id, spans })
}

/// Jaeger's `[{"key", "type", "value"}]` as key → value text.
fn key_values(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = text(&kv["key"])?;
            let value = match &kv["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((key, value))
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Traces in a line each, for failure messages.
fn describe(traces: &[Trace]) -> String {
    if traces.is_empty() {
        return "no such trace".to_owned();
    }
    let lines: Vec<String> = traces
        .iter()
        .map(|t| {
            let spans: Vec<String> = t
                .spans
                .iter()
                .map(|s| format!("{}/{}", s.service, s.operation))
                .collect();
            format!("trace {}: {}", t.trace_id, spans.join(", "))
        })
        .collect();
    format!("{} trace(s):\n{}", traces.len(), lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `/api/traces` in Jaeger v1.76 (`internal/uimodel`), trimmed.
    fn response() -> Value {
        serde_json::json!({
            "data": [{
                "traceID": "5b8efff798038103d269b633813fc60c",
                "spans": [
                    {
                        "traceID": "5b8efff798038103d269b633813fc60c",
                        "spanID": "eee19b7ec3c1b174",
                        "operationName": "GET /events/{slug}",
                        "references": [],
                        "startTime": 1_700_000_000_000_000_u64,
                        "duration": 2500,
                        "tags": [
                            {"key": "http.response.status_code", "type": "int64", "value": 200},
                            {"key": "tiqzy.tenant", "type": "string", "value": "acme"},
                            {"key": "span.kind", "type": "string", "value": "server"}
                        ],
                        "processID": "p1"
                    },
                    {
                        "traceID": "5b8efff798038103d269b633813fc60c",
                        "spanID": "aaa19b7ec3c1b174",
                        "operationName": "SELECT events",
                        "references": [{
                            "refType": "CHILD_OF",
                            "traceID": "5b8efff798038103d269b633813fc60c",
                            "spanID": "eee19b7ec3c1b174"
                        }],
                        "startTime": 1_700_000_000_000_100_u64,
                        "duration": 900,
                        "tags": [{"key": "error", "type": "bool", "value": true}],
                        "processID": "p1"
                    }
                ],
                "processes": {
                    "p1": {
                        "serviceName": "tiqzy-runtime",
                        "tags": [{"key": "service.version", "type": "string", "value": "0.1.0"}]
                    }
                },
                "warnings": null
            }],
            "total": 0, "limit": 0, "offset": 0, "errors": null
        })
    }

    #[test]
    fn spans_keep_their_service_tags_and_parent() {
        let traces = parse_traces(&response()).expect("traces");
        assert_eq!(traces.len(), 1);
        let trace = &traces[0];
        let request = trace.span("GET /events/{slug}").expect("the request span");
        let query = trace.span("SELECT events").expect("the query span");
        assert_eq!(request.parent_span_id, None);
        assert_eq!(
            query.parent_span_id.as_deref(),
            Some("eee19b7ec3c1b174"),
            "{query:?}"
        );
        assert_eq!(trace.children(request).collect::<Vec<_>>(), [query]);
        assert_eq!(trace.roots().collect::<Vec<_>>(), [request]);
        assert_eq!(request.service, "tiqzy-runtime");
        assert_eq!(request.tag("tiqzy.tenant"), Some("acme"));
        assert_eq!(request.tag("http.response.status_code"), Some("200"));
        assert_eq!(query.tag("error"), Some("true"));
        assert_eq!(
            query.resource.get("service.version").map(String::as_str),
            Some("0.1.0")
        );
        assert_eq!(query.duration_micros, 900);
    }

    #[test]
    fn a_response_without_data_is_an_error() {
        assert!(parse_traces(&serde_json::json!({"errors": null})).is_err());
    }
}
