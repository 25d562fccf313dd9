//! Traces to the platform's OpenTelemetry collector over OTLP/HTTP (protobuf), off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The `tracing` spans of a binary become OpenTelemetry spans through one extra subscriber
//! layer ([`Tracing::layer`]). That layer only sees spans and events at `INFO` and above and
//! nothing from `sqlx` (whose debug events carry statement text), so what a span carries is
//! exactly the fields the code gives it: route templates, tenants, steps and outcomes, never
//! request bodies, tokens or addresses. W3C trace context (`traceparent`) is read from
//! requests ([`parent_from`]) and written onto outgoing calls ([`inject_into`]).

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::trace::TraceIds;

/// Where traces go and which are kept, as the standard OpenTelemetry variables say.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The collector's traces URL (`…/v1/traces`).
    pub endpoint: String,
    pub sampler: SamplerChoice,
}

/// `OTEL_TRACES_SAMPLER` with its `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    /// Follows the caller's decision; `inner` decides for a trace that starts here.
    ParentBased(ParentlessChoice),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Settings {
    /// From the process environment; `Ok(None)` when no endpoint is set (tracing off).
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `var` (a variable's value by name): the endpoint (the traces endpoint as given,
    /// or the base endpoint with `/v1/traces`), `http/protobuf` as the only protocol, and the
    /// sampler (`parentbased_always_on` by default). Every refusal names the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces),
            (None, Some(base)) => (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
            (None, None) => return Ok(None),
        };
        let (name, url) = endpoint;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{name}: must be an http:// or https:// URL"));
        }
        if let Some(protocol) =
            set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            && protocol != "http/protobuf"
        {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: `{protocol}` is not supported; traces are sent as \
                 `http/protobuf`"
            ));
        }
        let sampler = sampler_choice(
            set("OTEL_TRACES_SAMPLER").as_deref(),
            set("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        Ok(Some(Self {
            endpoint: url,
            sampler,
        }))
    }
}

fn sampler_choice(name: Option<&str>, arg: Option<&str>) -> Result<SamplerChoice, String> {
    let ratio = || -> Result<f64, String> {
        match arg {
            None => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG: `{text}` is not a ratio from 0 to 1")
                }),
        }
    };
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => SamplerChoice::AlwaysOn,
        "always_off" => SamplerChoice::AlwaysOff,
        "traceidratio" => SamplerChoice::Ratio(ratio()?),
        "parentbased_always_on" => SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn),
        "parentbased_always_off" => SamplerChoice::ParentBased(ParentlessChoice::AlwaysOff),
        "parentbased_traceidratio" => SamplerChoice::ParentBased(ParentlessChoice::Ratio(ratio()?)),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER: `{other}` is not one of always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off, \
                 parentbased_traceidratio"
            ));
        }
    })
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        let parentless = |choice| match choice {
            ParentlessChoice::AlwaysOn => Sampler::AlwaysOn,
            ParentlessChoice::AlwaysOff => Sampler::AlwaysOff,
            ParentlessChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
        };
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBased(inner) => Sampler::ParentBased(Box::new(parentless(inner))),
        }
    }
}

/// A running trace export: spans are batched and sent from a thread of the SDK's own.
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    service: &'static str,
}

impl Tracing {
    /// Starts exporting as `service` (`service.name`), every span carrying `attributes` as
    /// resource attributes (the storefront's tenant).
    pub fn start(
        settings: &Settings,
        service: &'static str,
        attributes: &[(&'static str, String)],
    ) -> Result<Self, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .build()
            .map_err(|e| format!("starting the OTLP trace exporter: {e}"))?;
        let resource = Resource::builder_empty()
            .with_service_name(service)
            .with_attributes(
                attributes
                    .iter()
                    .map(|(key, value)| KeyValue::new(*key, value.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(settings.sampler.sampler())
            .with_resource(resource)
            .build();
        Ok(Self { provider, service })
    }

    /// Tracing as the process environment asks ([`Settings::from_env`]): `Ok(None)` when off.
    pub fn from_env(
        service: &'static str,
        attributes: &[(&'static str, String)],
    ) -> Result<Option<Self>, String> {
        Settings::from_env()?
            .map(|settings| Self::start(&settings, service, attributes))
            .transpose()
    }

    /// The subscriber layer that turns spans into OpenTelemetry spans (see the module docs
    /// for what it sees).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let seen = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("sqlx", LevelFilter::OFF);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(self.service))
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(seen)
    }

    /// A subscriber that only traces (no log lines): for a test that installs it on its own
    /// thread with `tracing::subscriber::set_default`.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + use<> {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing_subscriber::registry().with(self.layer())
    }

    /// Sends what is batched now, without waiting for the next batch.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("tiqzy: flushing traces: {e}");
        }
    }

    /// Sends what is batched; called on the way out so the last spans are not lost.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("tiqzy: flushing traces on exit: {e}");
        }
    }
}

/// The caller's trace context from a request's `traceparent`/`tracestate` headers (an empty
/// context when they are absent or malformed).
pub fn parent_from(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s trace context onto an outgoing request's headers (nothing when tracing
/// is off or the span is not recorded).
pub fn inject_into(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// The span a served request runs in, named for its route template (`GET /events/{slug}`),
/// with the ids its log lines carry (see [`request_ids`]). Its fields: `method`, `route`,
/// `trace_id`, `span_id`, and `http.response.status_code` once [`record_response`] ran.
pub fn server_span(
    method: &http::Method,
    route: Option<&str>,
    headers: &http::HeaderMap,
) -> (tracing::Span, TraceIds) {
    let route = route.unwrap_or("unmatched");
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        method = %method,
        route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let ids = request_ids(&span, headers);
    span.record("trace_id", ids.trace_id.as_str());
    span.record("span_id", ids.span_id.as_str());
    (span, ids)
}

/// Records the answer's status on a [`server_span`]; a 5xx marks the span failed.
pub fn record_response(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Makes `span` (a request's) a child of the caller's trace when `headers` carry a valid
/// `traceparent`, and returns the ids its log lines and error reports carry: OpenTelemetry's
/// when tracing is on, otherwise the caller's trace id (or a fresh one) with a fresh span id.
pub fn request_ids(span: &tracing::Span, headers: &http::HeaderMap) -> TraceIds {
    let parent = parent_from(headers);
    if parent.span().span_context().is_valid() {
        // Fails only without the layer (tracing off), where the fallback below applies.
        let _ = span.set_parent(parent);
    }
    ids_of(span).unwrap_or_else(|| {
        TraceIds::for_request(
            headers
                .get("traceparent")
                .and_then(|value| value.to_str().ok()),
        )
    })
}

/// `span`'s OpenTelemetry ids, when tracing is on.
pub fn ids_of(span: &tracing::Span) -> Option<TraceIds> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceIds {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_and_the_base_endpoint_gets_the_traces_path() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .expect("as expected")
            .expect("as expected");
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            on.sampler,
            SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn)
        );
        let traces = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://traces.example/otlp",
            ),
        ])
        .expect("as expected")
        .expect("as expected");
        assert_eq!(traces.endpoint, "https://traces.example/otlp");
    }

    #[test]
    fn the_sampler_is_the_one_asked_for_and_anything_else_is_refused_by_name() {
        let with = |sampler: &str, arg: Option<&str>| {
            let mut vars = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER", sampler),
            ];
            if let Some(arg) = arg {
                vars.push(("OTEL_TRACES_SAMPLER_ARG", arg));
            }
            settings(&vars).map(|s| s.expect("as expected").sampler)
        };
        assert_eq!(
            with("parentbased_traceidratio", Some("0.25")),
            Ok(SamplerChoice::ParentBased(ParentlessChoice::Ratio(0.25)))
        );
        assert_eq!(with("traceidratio", None), Ok(SamplerChoice::Ratio(1.0)));
        assert_eq!(with("always_off", None), Ok(SamplerChoice::AlwaysOff));
        let bad_arg = with("traceidratio", Some("1.5")).expect_err("refused");
        assert!(bad_arg.starts_with("OTEL_TRACES_SAMPLER_ARG"), "{bad_arg}");
        let bad = with("sometimes", None).expect_err("refused");
        assert!(bad.starts_with("OTEL_TRACES_SAMPLER:"), "{bad}");
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect_err("refused");
        assert!(grpc.contains("http/protobuf"), "{grpc}");
        let not_url =
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).expect_err("refused");
        assert!(
            not_url.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{not_url}"
        );
    }

    #[test]
    fn a_callers_trace_context_is_read_and_passed_on() {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("as expected"),
        );
        let parent = parent_from(&incoming);
        let remote = parent.span().span_context().clone();
        assert!(remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let garbage = {
            let mut h = http::HeaderMap::new();
            h.insert("traceparent", "nonsense".parse().expect("as expected"));
            h
        };
        assert!(!parent_from(&garbage).span().span_context().is_valid());
        // Without the layer there is no OpenTelemetry span: nothing is written or claimed.
        let mut outgoing = http::HeaderMap::new();
        inject_into(&tracing::Span::none(), &mut outgoing);
        assert!(outgoing.is_empty());
        assert_eq!(ids_of(&tracing::Span::none()), None);
    }
}
