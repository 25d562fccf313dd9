//! What the alerts and dashboards (config/prometheus, config/grafana) read from the storefront
//! and from the payments service, scraped from their `/metrics`: the storefront served by the
//! runtime's application in this process, `tiqzy-payments` as its own program.

use tiqzy_e2e::monitoring::{Exporter, unexported};
use tiqzy_e2e::sample;

use crate::support::TestApp;
use crate::support::payments::{Network, service_vars};

/// Exported once a failure happened that this test does not cause (a relay refusing mail, Stripe
/// failing): tests/it/mail.rs and tests/it/payments.rs drive them; here only their
/// registration (under the registry's `tiqzy_` prefix) is checked.
const NOT_DRIVEN: [(&str, &str); 3] = [
    ("tiqzy_mail_failed_total", "mail_failed"),
    ("tiqzy_mail_retried_total", "mail_retried"),
    ("tiqzy_stripe_errors_total", "stripe_errors"),
];

#[tokio::test]
async fn the_storefront_exports_what_the_alerts_and_dashboards_read() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(1, 1_000, 2).await;
    // Two tickets of one: refused as sold out, which the dashboard counts apart.
    let refused = app.hold(tt, 2).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(app.hold(tt, 1).await.status(), 201);
    // An order paid (Stripe's event delivered) and its mail sent.
    let (_, other) = app.seed_event(5, 1_000, 2).await;
    app.buy(other, 1, "fan@example.com").await;
    app.mail_settled().await;

    let metrics = app.metrics().await;
    let missing: Vec<String> = unexported(Exporter::Storefront, &metrics)
        .expect("queries")
        .into_iter()
        .filter(|m| {
            !NOT_DRIVEN
                .iter()
                .any(|(n, _)| m.starts_with(&format!("{n} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the storefront does not export {missing:#?}\n{metrics}"
    );
    let registered =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"))
            .expect("metrics.rs");
    for (_, name) in NOT_DRIVEN {
        assert!(registered.contains(&format!("\"{name}\"")), "{name}");
    }
    assert_eq!(
        sample(&metrics, "tiqzy_holds_total{outcome=\"sold_out\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tiqzy_holds_total{outcome=\"held\"}"),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_payments_service_exports_what_the_alerts_and_dashboards_read() {
    let stripe = crate::support::StripeProxy::start().await;
    let network = Network::start().await;
    let database = tiqzy_e2e::payments::fresh_database("pay").await;
    let vars = service_vars(&database, &stripe, &network.url_template);
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let service = tiqzy_e2e::payments::PaymentsProcess::start(&env)
        .await
        .expect("tiqzy-payments starts");

    let metrics = tiqzy_e2e::payments::metrics_with(
        &service.url,
        "tiqzy_payments_outbox_oldest_pending_seconds ",
    )
    .await;
    let missing = unexported(Exporter::Payments, &metrics).expect("queries");
    assert!(
        missing.is_empty(),
        "tiqzy-payments does not export {missing:#?}\n{metrics}"
    );
    // Nothing is waiting for delivery.
    assert_eq!(
        sample(&metrics, "tiqzy_payments_outbox_oldest_pending_seconds"),
        Some(0.0),
        "{metrics}"
    );
}
