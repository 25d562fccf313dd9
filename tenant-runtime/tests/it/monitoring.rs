//! What the alerts and dashboards (config/prometheus, config/grafana) read from the storefront
//! and from the payments service, scraped from their `/metrics`: the storefront served by the
//! runtime's application in this process, `tiqzy-payments` as its own program.

use tiqzy_e2e::monitoring::{Exporter, unexported};
use tiqzy_e2e::sample;

use crate::support::TestApp;
use crate::support::payments::{Network, service_vars};

#[tokio::test]
async fn the_storefront_exports_what_the_alerts_and_dashboards_read() {
    let app = TestApp::spawn().await;
    let (_, tt) = app.seed_event(1, 1_000, 2).await;
    // Two tickets of one: refused as sold out, which the dashboard counts apart.
    let refused = app.hold(tt, 2).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(app.hold(tt, 1).await.status(), 201);

    let metrics = app.metrics().await;
    let missing = unexported(Exporter::Storefront, &metrics).expect("queries");
    assert!(
        missing.is_empty(),
        "the storefront does not export {missing:#?}\n{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tiqzy_holds_total{outcome=\"sold_out\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tiqzy_holds_total{outcome=\"held\"}"),
        Some(1.0),
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
