//! One log line format for every Tiqzy binary: a JSON object per line on stderr with the
//! agreed fields first (`timestamp`, `level`, `message`, `target`, `tenant`, `trace_id`,
//! `span_id`), then the event's own fields and those of the spans it happened in.
//!
//! JSON unless stderr is a terminal (then readable text); `TIQZY_LOG_FORMAT=json|text`
//! decides instead. Colour only on a terminal, so a log file never holds escape codes.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The agreed field names, for the binaries that set them on spans.
pub mod fields {
    pub const TIMESTAMP: &str = "timestamp";
    pub const LEVEL: &str = "level";
    pub const MESSAGE: &str = "message";
    pub const TARGET: &str = "target";
    pub const TENANT: &str = "tenant";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
}

/// `TIQZY_LOG_FORMAT`: how log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// `json` or `text` as asked; otherwise JSON unless stderr is a terminal.
    pub fn choose(asked: Option<&str>) -> Result<Self, String> {
        match asked.map(str::trim) {
            Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            Some("") | None if std::io::stderr().is_terminal() => Ok(Self::Text),
            Some("") | None => Ok(Self::Json),
            Some(other) => Err(format!(
                "TIQZY_LOG_FORMAT: `{other}` is neither `json` nor `text`"
            )),
        }
    }
}

/// How one binary logs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    /// The `RUST_LOG` directives used when `RUST_LOG` is unset.
    pub default_filter: &'static str,
    /// The tenant every line is about (the storefront runtime serves one); otherwise lines
    /// name the tenant of the span they happened in, if any.
    pub tenant: Option<String>,
    /// Where spans go besides the log lines (`crate::otel`), when tracing is on.
    pub traces: Option<crate::otel::Tracing>,
}

/// Installs the subscriber; a second call (tests starting several apps) keeps the first.
/// `RUST_LOG` (or the default filter) decides which lines are logged; it does not decide what
/// is traced (`crate::otel` has a filter of its own), so quieter logs keep their traces.
pub fn init(settings: Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.default_filter));
    let traces = settings.traces.as_ref().map(crate::otel::Tracing::layer);
    let registry = tracing_subscriber::registry().with(traces);
    let _ = match settings.format {
        Format::Json => registry
            .with(
                SpanFields
                    .and_then(
                        tracing_subscriber::fmt::layer()
                            .with_writer(std::io::stderr)
                            .with_ansi(false)
                            .event_format(JsonLine {
                                tenant: settings.tenant,
                            }),
                    )
                    .with_filter(filter),
            )
            .try_init(),
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init(),
    };
}

/// A span's fields as JSON values, kept in its extensions for [`JsonLine`].
#[derive(Debug, Default)]
struct Recorded(Map<String, Value>);

struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut recorded = Recorded::default();
        attrs.record(&mut JsonVisitor(&mut recorded.0));
        span.extensions_mut().insert(recorded);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(recorded) = extensions.get_mut::<Recorded>() {
            values.record(&mut JsonVisitor(&mut recorded.0));
        }
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Writes one event as one JSON object.
struct JsonLine {
    tenant: Option<String>,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Outer spans first, so the innermost span's value of a field wins.
        let mut context = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(recorded) = span.extensions().get::<Recorded>() {
                    context.extend(recorded.0.clone());
                }
            }
        }
        let mut own = Map::new();
        event.record(&mut JsonVisitor(&mut own));

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(fields::TIMESTAMP.into(), Value::from(timestamp));
        line.insert(fields::LEVEL.into(), Value::from(meta.level().as_str()));
        line.insert(
            fields::MESSAGE.into(),
            own.remove(fields::MESSAGE).unwrap_or(Value::from("")),
        );
        line.insert(fields::TARGET.into(), Value::from(meta.target()));
        let tenant = own
            .remove(fields::TENANT)
            .or_else(|| context.remove(fields::TENANT))
            .or_else(|| self.tenant.clone().map(Value::from));
        for (name, value) in [
            (fields::TENANT, tenant),
            (fields::TRACE_ID, context.remove(fields::TRACE_ID)),
            (fields::SPAN_ID, context.remove(fields::SPAN_ID)),
        ] {
            if let Some(value) = value {
                line.insert(name.into(), value);
            }
        }
        // `otel.*` fields steer the span exporter (a span's name, kind, status), not the log.
        context.retain(|name, _| !name.starts_with("otel."));
        for (name, value) in context.into_iter().chain(own) {
            line.entry(name).or_insert(value);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(tenant: Option<&str>, emit: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(SpanFields).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .event_format(JsonLine {
                    tenant: tenant.map(str::to_owned),
                }),
        );
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn a_line_has_the_agreed_fields_and_the_span_context() {
        let lines = lines_of(None, || {
            let span = tracing::info_span!("reconcile", tenant = "acme", step = "apply");
            let _entered = span.enter();
            let inner = tracing::info_span!("request", trace_id = "4bf92f", span_id = "00f067");
            let _inner = inner.enter();
            tracing::warn!(attempt = 3, "database unreachable");
        });
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "database unreachable");
        assert_eq!(line["tenant"], "acme");
        assert_eq!(line["trace_id"], "4bf92f");
        assert_eq!(line["span_id"], "00f067");
        assert_eq!(line["step"], "apply");
        assert_eq!(line["attempt"], 3);
        assert!(line["target"].as_str().is_some_and(|t| t.contains("logs")));
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z') && &timestamp[10..11] == "T",
            "{timestamp}"
        );
    }

    #[test]
    fn the_process_tenant_names_lines_outside_any_span_and_unknown_ids_are_left_out() {
        let lines = lines_of(Some("acme"), || tracing::info!("serving"));
        assert_eq!(lines[0]["tenant"], "acme");
        assert!(lines[0].get("trace_id").is_none());
        let lines = lines_of(None, || tracing::info!("started"));
        assert!(lines[0].get("tenant").is_none());
    }

    #[test]
    fn the_format_is_what_was_asked_and_anything_else_is_refused() {
        assert_eq!(Format::choose(Some("json")), Ok(Format::Json));
        assert_eq!(Format::choose(Some("text")), Ok(Format::Text));
        assert!(Format::choose(Some("yaml")).is_err());
    }
}
