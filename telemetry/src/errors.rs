//! Error reports to Sentry: off unless `SENTRY_DSN` is set. A [`Reporter`] is a handle on
//! one client (none when off) that the binaries pass where errors are answered; every report
//! carries the service, and where known the tenant, the route template, the trace id and the
//! operator's step, as tags, and passes [`crate::scrub::scrub`] before it leaves.
//!
//! Panics are reported by one process-wide hook: inside [`Reporter::within`] (a request, a
//! reconcile) with that scope's reporter and context, elsewhere with the process's own.

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sentry::protocol::{Event, Exception, Level, Mechanism};
use sentry::{ClientOptions, Scope, Transport, TransportFactory};

/// Where an error happened; each known part becomes a tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Where {
    pub tenant: Option<String>,
    /// The route template (`/orders/{token}`), never the path a client sent.
    pub route: Option<String>,
    pub trace_id: Option<String>,
    /// The operator's reconcile step.
    pub step: Option<String>,
}

impl Where {
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: Some(tenant.into()),
            ..Self::default()
        }
    }
}

/// Reports errors and panics of one service, or nothing when Sentry is off.
#[derive(Clone, Default)]
pub struct Reporter {
    client: Option<Arc<sentry::Client>>,
    service: &'static str,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN holds the project's key: never printed.
        f.debug_struct("Reporter")
            .field("service", &self.service)
            .field("enabled", &self.enabled())
            .finish()
    }
}

/// `SENTRY_DSN`, `SENTRY_ENVIRONMENT` and `SENTRY_SAMPLE_RATE` as read from the environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub dsn: Option<String>,
    pub environment: Option<String>,
    /// Share of errors sent, 0.0 to 1.0 (default 1.0).
    pub sample_rate: Option<String>,
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            dsn: var("SENTRY_DSN"),
            environment: var("SENTRY_ENVIRONMENT"),
            sample_rate: var("SENTRY_SAMPLE_RATE"),
        }
    }
}

impl Reporter {
    /// Reports nothing.
    pub fn off(service: &'static str) -> Self {
        Self {
            client: None,
            service,
        }
    }

    /// A reporter sending to the DSN in `settings`, or one that is off without a DSN. An
    /// invalid DSN or rate is an error naming the variable, never its value.
    pub fn from_settings(service: &'static str, settings: &Settings) -> Result<Self, String> {
        let Some(dsn) = &settings.dsn else {
            return Ok(Self::off(service));
        };
        let dsn = dsn
            .trim()
            .parse()
            .map_err(|_| "SENTRY_DSN: not a Sentry DSN (https://<key>@<host>/<project>)")?;
        let sample_rate = match &settings.sample_rate {
            None => 1.0,
            Some(rate) => match rate.trim().parse::<f32>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => return Err("SENTRY_SAMPLE_RATE: not a number from 0 to 1".to_owned()),
            },
        };
        let options = ClientOptions {
            dsn: Some(dsn),
            environment: settings.environment.clone().map(Cow::Owned),
            sample_rate,
            ..ClientOptions::default()
        };
        Ok(Self::with_options(service, options))
    }

    /// A reporter whose reports go to `transport` (tests pass the crate's `TestTransport`).
    pub fn with_transport<T: Transport>(service: &'static str, transport: Arc<T>) -> Self {
        let factory: Arc<dyn TransportFactory> = Arc::new(transport);
        let options = ClientOptions {
            dsn: "https://public@sentry.invalid/1".parse().ok(),
            transport: Some(factory),
            ..ClientOptions::default()
        };
        Self::with_options(service, options)
    }

    fn with_options(service: &'static str, mut options: ClientOptions) -> Self {
        options.release = Some(Cow::Borrowed(env!("CARGO_PKG_VERSION")));
        options.send_default_pii = false;
        options.before_send = Some(Arc::new(|event| Some(crate::scrub::scrub(event))));
        // The process's own panic hook reports panics (see `catch_panics`); the default
        // integrations add the OS and runtime contexts and process stack traces.
        Self {
            client: Some(Arc::new(sentry::Client::from_config(
                sentry::apply_defaults(options),
            ))),
            service,
        }
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Reports an error answered with a 5xx, or a failed reconcile, with its causes.
    pub fn error(&self, error: &(dyn std::error::Error + 'static), at: &Where) {
        if self.client.is_none() {
            return;
        }
        let mut event = sentry::event_from_error(error);
        event.level = Level::Error;
        self.send(event, at);
    }

    /// Reports a panic with its message and location.
    pub fn panic(&self, message: &str, location: Option<String>, at: &Where) {
        if self.client.is_none() {
            return;
        }
        let exception = Exception {
            ty: "panic".to_owned(),
            value: Some(message.to_owned()),
            stacktrace: sentry::integrations::backtrace::current_stacktrace(),
            mechanism: Some(Mechanism {
                ty: "panic".to_owned(),
                handled: Some(false),
                ..Mechanism::default()
            }),
            ..Exception::default()
        };
        let mut event = Event {
            level: Level::Fatal,
            culprit: location,
            ..Event::default()
        };
        event.exception.values.push(exception);
        self.send(event, at);
    }

    fn send(&self, event: Event<'static>, at: &Where) {
        let Some(client) = &self.client else { return };
        let mut scope = Scope::default();
        scope.set_tag("service", self.service);
        for (name, value) in [
            ("tenant", &at.tenant),
            ("route", &at.route),
            ("trace_id", &at.trace_id),
            ("step", &at.step),
        ] {
            if let Some(value) = value {
                scope.set_tag(name, value);
            }
        }
        if let Some(route) = &at.route {
            scope.set_transaction(Some(route));
        }
        client.capture_event(event, Some(&scope));
    }

    /// Waits up to `timeout` for reports on their way out (before the process exits).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.client.as_ref().is_none_or(|c| c.flush(Some(timeout)))
    }

    /// Runs `work` with this reporter and `at` as the place a panic in it is reported from.
    pub async fn within<F: Future>(&self, at: Where, work: F) -> F::Output {
        CURRENT.scope((self.clone(), at), work).await
    }

    /// Reports panics outside any [`Reporter::within`] through this reporter, and installs
    /// the panic hook if no one has.
    pub fn report_panics_of_process(&self, at: Where) {
        let _ = PROCESS.set((self.clone(), at));
        catch_panics();
    }
}

tokio::task_local! {
    static CURRENT: (Reporter, Where);
}

static PROCESS: OnceLock<(Reporter, Where)> = OnceLock::new();
static HOOK: OnceLock<()> = OnceLock::new();

/// Installs the panic hook (once per process): a panic in a reporter's scope, or in a
/// process with a reporter of its own, is logged as a JSON line and reported; any other
/// panic (a failing test's) goes to the hook there was before.
pub fn catch_panics() {
    HOOK.get_or_init(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scoped = CURRENT.try_with(|(reporter, at)| (reporter.clone(), at.clone()));
            let Some((reporter, at)) = scoped.ok().or_else(|| PROCESS.get().cloned()) else {
                return before(info);
            };
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            tracing::error!(
                panic = %crate::scrub::redact(&message),
                location = location.as_deref().unwrap_or("unknown"),
                "panicked"
            );
            reporter.panic(&message, location, &at);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry::test::TestTransport;

    #[derive(Debug)]
    struct Unreachable(String);

    impl std::fmt::Display for Unreachable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::error::Error for Unreachable {}

    #[test]
    fn without_a_dsn_nothing_is_reported_and_a_bad_dsn_is_refused_without_echoing_it() {
        let off = Reporter::from_settings("runtime", &Settings::default()).expect("off");
        assert!(!off.enabled());
        let bad = Settings {
            dsn: Some("not-a-dsn-secret123".into()),
            ..Settings::default()
        };
        let refused = Reporter::from_settings("runtime", &bad).expect_err("refused");
        assert!(refused.contains("SENTRY_DSN") && !refused.contains("secret123"));
        let bad_rate = Settings {
            dsn: Some("https://key@sentry.example/1".into()),
            sample_rate: Some("2".into()),
            ..Settings::default()
        };
        assert!(Reporter::from_settings("runtime", &bad_rate).is_err());
    }

    #[test]
    fn an_error_carries_its_place_as_tags_and_leaves_scrubbed() {
        let transport = TestTransport::new();
        let reporter = Reporter::with_transport("operator", transport.clone());
        let at = Where {
            tenant: Some("acme".into()),
            step: Some("stores".into()),
            ..Where::default()
        };
        reporter.error(
            &Unreachable("password authentication failed for ann@mail.example".into()),
            &at,
        );
        let events = transport.fetch_and_clear_events();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.tags["tenant"], "acme");
        assert_eq!(event.tags["step"], "stores");
        assert_eq!(event.tags["service"], "operator");
        let value = event.exception.values[0].value.as_deref().unwrap_or("");
        assert_eq!(value, "password authentication failed for [email]");
    }

    #[tokio::test]
    async fn a_panic_in_a_scope_is_reported_with_that_scope_and_scrubbed() {
        catch_panics();
        let transport = TestTransport::new();
        let reporter = Reporter::with_transport("tiqzy-runtime", transport.clone());
        let at = Where {
            tenant: Some("acme".into()),
            route: Some("/orders/{token}".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            step: None,
        };
        let task = tokio::spawn(async move {
            reporter
                .within(at, async { panic!("no order for ann@mail.example") })
                .await
        });
        assert!(task.await.is_err(), "the task panicked");
        let events = transport.fetch_and_clear_events();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.level, Level::Fatal);
        assert_eq!(event.tags["tenant"], "acme");
        assert_eq!(event.tags["route"], "/orders/{token}");
        assert_eq!(event.tags["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            event.exception.values[0].value.as_deref(),
            Some("no order for [email]")
        );
    }
}
