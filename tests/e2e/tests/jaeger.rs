//! Jaeger v2 as the harness starts it (`tiqzy_e2e::Jaeger`): a trace sent over OTLP/HTTP comes
//! back from its query API by service and by attribute, each span with its service, attributes
//! and parent; and Jaeger listens on nothing but the loopback ports the harness gave it.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tiqzy_e2e::Jaeger;

/// A name no other test (or earlier run against the same Jaeger) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// `bytes` bytes as lowercase hex, derived from `seed` (OTLP/JSON spells ids in hex).
fn hex_id(seed: &str, bytes: usize) -> String {
    Sha256::digest(seed.as_bytes())[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn attribute(key: &str, value: Value) -> Value {
    let value = match value {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        // OTLP/JSON carries 64-bit integers as strings.
        other => json!({ "intValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

#[tokio::test]
async fn a_trace_sent_over_otlp_http_is_found_by_service_and_attribute_with_its_parents() {
    let jaeger = Jaeger::shared();
    let service = unique("e2e-storefront");
    let trace_id = hex_id(&format!("{service}/trace"), 16);
    let request_id = hex_id(&format!("{service}/request"), 8);
    let query_id = hex_id(&format!("{service}/query"), 8);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    let (start, end) = (now - 5_000_000, now);
    let body = json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                attribute("service.name", json!(service)),
                attribute("service.version", json!("0.1.0")),
            ]},
            "scopeSpans": [{
                "scope": { "name": "tiqzy-e2e" },
                "spans": [
                    {
                        "traceId": trace_id,
                        "spanId": request_id,
                        "name": "GET /events/{slug}",
                        "kind": 2,
                        "startTimeUnixNano": start.to_string(),
                        "endTimeUnixNano": end.to_string(),
                        "attributes": [
                            attribute("tiqzy.tenant", json!("acme-arena")),
                            attribute("http.response.status_code", json!(200)),
                        ],
                    },
                    {
                        "traceId": trace_id,
                        "spanId": query_id,
                        "parentSpanId": request_id,
                        "name": "SELECT events",
                        "kind": 3,
                        "startTimeUnixNano": (start + 1_000_000).to_string(),
                        "endTimeUnixNano": (start + 3_000_000).to_string(),
                        "attributes": [
                            attribute("db.system.name", json!("postgresql")),
                            attribute("tiqzy.cached", json!(false)),
                        ],
                    },
                ],
            }],
        }],
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", jaeger.otlp_http_endpoint()))
        .json(&body)
        .send()
        .await
        .expect("posting the trace to Jaeger's OTLP/HTTP receiver");
    let status = response.status();
    let answer = response.text().await.expect("the receiver's answer");
    assert!(status.is_success(), "{status}: {answer}");
    assert!(
        !answer.contains("rejected"),
        "the receiver refused spans: {answer}"
    );

    let traces = jaeger
        .wait_for(&service, &[], Duration::from_secs(30), |traces| {
            traces.iter().any(|t| t.spans.len() == 2)
        })
        .await
        .expect("both spans in Jaeger");
    assert_eq!(traces.len(), 1, "{traces:#?}");
    let trace = &traces[0];
    assert_eq!(trace.trace_id, trace_id);
    let request = trace.span("GET /events/{slug}").expect("the request span");
    let query = trace.span("SELECT events").expect("the query span");
    assert_eq!(request.span_id, request_id);
    assert_eq!(request.parent_span_id, None, "{request:#?}");
    assert_eq!(query.parent_span_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(trace.roots().collect::<Vec<_>>(), [request]);
    assert_eq!(trace.children(request).collect::<Vec<_>>(), [query]);
    for span in [request, query] {
        assert_eq!(span.service, service, "{span:#?}");
        assert_eq!(
            span.resource.get("service.version").map(String::as_str),
            Some("0.1.0"),
            "{span:#?}"
        );
    }
    assert_eq!(request.tag("tiqzy.tenant"), Some("acme-arena"));
    assert_eq!(request.tag("http.response.status_code"), Some("200"));
    assert_eq!(request.tag("span.kind"), Some("server"));
    assert_eq!(query.tag("db.system.name"), Some("postgresql"));
    assert_eq!(query.tag("tiqzy.cached"), Some("false"));
    assert_eq!(query.tag("span.kind"), Some("client"));
    assert_eq!(query.tag("tiqzy.tenant"), None, "{query:#?}");
    assert_eq!(request.duration_micros, 5_000);
    assert_eq!(query.duration_micros, 2_000);

    // By attribute: of either span, the whole trace comes back; a value nobody sent finds none.
    for tags in [
        [("tiqzy.tenant", "acme-arena")].as_slice(),
        &[("db.system.name", "postgresql")],
        &[("tiqzy.cached", "false"), ("db.system.name", "postgresql")],
        &[("service.version", "0.1.0")],
    ] {
        let found = jaeger.traces(&service, tags).await.expect("searching");
        assert_eq!(found, traces, "searched by {tags:?}");
    }
    for tags in [
        [("tiqzy.tenant", "another-tenant")].as_slice(),
        // Every attribute must be on one span.
        &[
            ("tiqzy.tenant", "acme-arena"),
            ("db.system.name", "postgresql"),
        ],
    ] {
        let found = jaeger.traces(&service, tags).await.expect("searching");
        assert_eq!(found, [], "searched by {tags:?}");
    }
    let other = unique("e2e-nobody");
    assert_eq!(jaeger.traces(&other, &[]).await.expect("searching"), []);

    let services = jaeger.services().await.expect("Jaeger's services");
    assert!(services.contains(&service), "{services:?}");
    assert!(!services.contains(&other), "{services:?}");
}

/// The TCP ports process `pid` listens on, with the address each is bound to (hex, as in
/// /proc/net/tcp).
fn listening(pid: u32) -> BTreeSet<(String, u16)> {
    let sockets: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut found = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).expect("the socket table");
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A is LISTEN), inode.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "0A" || !sockets.contains(*inode) {
                continue;
            }
            let (address, port) = local.split_once(':').expect("address:port");
            found.insert((
                address.to_owned(),
                u16::from_str_radix(port, 16).expect("a hex port"),
            ));
        }
    }
    found
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[test]
fn jaeger_listens_only_on_loopback_ports_of_the_harness() {
    let jaeger = Jaeger::shared();
    let ports = listening(jaeger.pid());
    // 127.0.0.1 as /proc/net/tcp spells it (little-endian).
    let loopback = "0100007F";
    for expected in [
        jaeger.otlp_http_endpoint(),
        jaeger.otlp_grpc_endpoint(),
        jaeger.ui_url().to_owned(),
    ] {
        assert!(
            ports.contains(&(loopback.to_owned(), port_of(&expected))),
            "{expected} not among {ports:?}"
        );
    }
    // The OTLP receivers, the query API's HTTP and gRPC servers, all on loopback; none of
    // Jaeger's defaults (OTLP, query, its own metrics, health check, sampling, zpages).
    assert_eq!(ports.len(), 4, "{ports:?}");
    for (address, port) in &ports {
        assert_eq!(
            address, loopback,
            "port {port} bound to {address}: {ports:?}"
        );
        assert!(
            ![
                4317, 4318, 16685, 16686, 8888, 13133, 5778, 5779, 55679, 1777
            ]
            .contains(port),
            "Jaeger listens on its default port {port}: {ports:?}"
        );
    }
}
