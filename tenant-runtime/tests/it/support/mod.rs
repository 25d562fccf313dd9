//! Starts the real runtime on port 0 against a fresh database on the harness's PostgreSQL,
//! with a test OAuth2 issuer, and seeds events the way staff would.

pub mod identity;
pub mod issuer;
pub mod payments;
pub mod stripe;

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::Connection;
use tiqzy_e2e::Mailpit;
use tiqzy_e2e::mailpit::Message;
use tiqzy_runtime::Application;
use tiqzy_runtime::config::Config;
use tiqzy_runtime::state::AppState;
use uuid::Uuid;

pub use identity::Session;
pub use issuer::Issuer;
pub use payments::Payments;
pub use stripe::StripeProxy;

pub const SIGNING_KEY_HEX: &str =
    "4f0d3a1c9b8e7f6a5d4c3b2a19080706f5e4d3c2b1a09887766554433221100f";

#[derive(Debug, Clone)]
pub struct Options {
    pub redis: bool,
    pub hold_ttl_secs: u64,
    pub hold_rate_limit: u32,
    pub resale_cap_percent: u32,
    /// Where the runtime finds the payments service; the test's own service when `None`.
    pub payments_url: Option<String>,
    pub tenant_account: bool,
    /// `TIQZY_DB_MAX_CONNECTIONS` and `TIQZY_DB_ACQUIRE_TIMEOUT_MS` when set.
    pub db_pool: Option<(u32, u64)>,
    /// `TIQZY_LOCALE`, as the operator passes the Tenant's `spec.locale`.
    pub locale: &'static str,
    /// `TIQZY_OAUTH_PERMISSION_PREFIX`, unset when `None`.
    pub permission_prefix: Option<&'static str>,
    /// The SMTP port mail goes to; the shared Mailpit's when `None`.
    pub smtp_port: Option<u16>,
    /// More variables, set last.
    pub env: &'static [(&'static str, &'static str)],
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis: false,
            hold_ttl_secs: 600,
            hold_rate_limit: 100_000,
            resale_cap_percent: 120,
            payments_url: None,
            tenant_account: true,
            // Enough for 300 concurrent buyers on a loaded CI machine.
            db_pool: Some((16, 30_000)),
            locale: "en-GB",
            permission_prefix: None,
            smtp_port: None,
            env: &[],
        }
    }
}

pub struct TestApp {
    pub url: String,
    /// `/metrics` on the metrics port.
    pub metrics_url: String,
    pub http: reqwest::Client,
    pub state: AppState,
    /// This tenant's sender address: tests find its mail in Mailpit by it.
    pub mail_from: String,
    pub issuer: Issuer,
    pub prefix: String,
    /// The tenant (`rt-<random>`), its payments service and Stripe behind it.
    pub tenant: String,
    pub payments: Payments,
    pub stripe: StripeProxy,
}

/// A database no other test uses.
pub async fn fresh_database() -> String {
    let h = tiqzy_e2e::Harness::shared();
    let name = format!("rt_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&h.postgres.admin_url("postgres"))
        .await
        .expect("connect as admin");
    // The name is ours (a UUID), never input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    h.postgres.admin_url(&name)
}

pub fn config_vars(
    database_url: &str,
    issuer: &Issuer,
    payments: &Payments,
    options: &Options,
) -> HashMap<String, String> {
    let h = tiqzy_e2e::Harness::shared();
    let prefix = format!("t:{}:", Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = [
        ("TIQZY_DISPLAY_NAME", "ACME Live"),
        ("TIQZY_CURRENCY", "EUR"),
        ("TIQZY_BRAND_PRIMARY_COLOR", "#5b21b6"),
        ("TIQZY_BRAND_ACCENT_COLOR", "#f59e0b"),
        ("TIQZY_BRAND_LOGO_URL", "https://cdn.acme.example/logo.svg"),
        ("TIQZY_SUPPORT_EMAIL", "help@acme.example"),
        ("TIQZY_RESALE_ENABLED", "true"),
        ("TIQZY_RESALE_SELLER_FEE_BPS", "500"),
        ("TIQZY_PUBLIC_URL", "https://acme.example"),
        ("TIQZY_LISTEN_ADDR", "127.0.0.1:0"),
        ("TIQZY_METRICS_ADDR", "127.0.0.1:0"),
        ("TIQZY_OAUTH_AUDIENCE", issuer::AUDIENCE),
        ("TIQZY_TICKET_SIGNING_KEY", SIGNING_KEY_HEX),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert("TIQZY_TENANT".into(), payments.tenant.clone());
    vars.insert("TIQZY_LOCALE".into(), options.locale.to_owned());
    vars.insert("DATABASE_URL".into(), database_url.to_owned());
    vars.insert("TIQZY_OAUTH_ISSUER".into(), issuer.url.clone());
    vars.insert("TIQZY_CACHE_KEY_PREFIX".into(), prefix);
    vars.insert(
        "TIQZY_HOLD_TTL_SECONDS".into(),
        options.hold_ttl_secs.to_string(),
    );
    vars.insert(
        "TIQZY_HOLD_RATE_LIMIT_PER_MINUTE".into(),
        options.hold_rate_limit.to_string(),
    );
    // Tests buy many tickets from one address; the ones about the cap set their own.
    vars.insert(
        "TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT".into(),
        "100000".into(),
    );
    vars.insert(
        "TIQZY_RESALE_PRICE_CAP_PERCENT".into(),
        options.resale_cap_percent.to_string(),
    );
    if let Some((connections, timeout_ms)) = options.db_pool {
        vars.insert("TIQZY_DB_MAX_CONNECTIONS".into(), connections.to_string());
        vars.insert("TIQZY_DB_ACQUIRE_TIMEOUT_MS".into(), timeout_ms.to_string());
    }
    if let Some(prefix) = options.permission_prefix {
        vars.insert("TIQZY_OAUTH_PERMISSION_PREFIX".into(), prefix.into());
    }
    if options.redis {
        vars.insert("REDIS_URL".into(), h.redis.admin_url());
    }
    for (name, value) in options.env {
        vars.insert((*name).into(), (*value).into());
    }
    let smtp_port = options
        .smtp_port
        .unwrap_or_else(|| Mailpit::shared().smtp_port);
    vars.insert("TIQZY_SMTP_HOST".into(), "127.0.0.1".into());
    vars.insert("TIQZY_SMTP_PORT".into(), smtp_port.to_string());
    vars.insert("TIQZY_SMTP_TLS".into(), "none".into());
    vars.insert(
        "TIQZY_MAIL_FROM".into(),
        format!("shop@{}.tiqzy.test", payments.tenant),
    );
    // An outage in a test lasts a minute at most: retry often.
    vars.insert("TIQZY_MAIL_RETRY_MAX_SECONDS".into(), "2".into());
    vars.insert(
        "TIQZY_PAYMENTS_URL".into(),
        options
            .payments_url
            .clone()
            .unwrap_or_else(|| payments.url.clone()),
    );
    vars.insert(
        "TIQZY_PAYMENTS_TOKEN_FILE".into(),
        payments.token_file.display().to_string(),
    );
    vars.insert(
        "TIQZY_PAYMENTS_WEBHOOK_SECRETS".into(),
        format!("{},{}", stripe::WEBHOOK_SECRET, stripe::OLD_WEBHOOK_SECRET),
    );
    if options.tenant_account {
        vars.insert("TIQZY_STRIPE_ACCOUNT".into(), stripe::TENANT_ACCOUNT.into());
    }
    vars.insert(
        "TIQZY_APPLICATION_FEE_BPS".into(),
        stripe::APPLICATION_FEE_BPS.to_string(),
    );
    vars
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        Self::spawn_keeping_vars(options).await.0
    }

    /// The app and the variables it was configured with, for more replicas of it.
    pub async fn spawn_keeping_vars(options: Options) -> (Self, HashMap<String, String>) {
        let issuer = Issuer::start().await;
        let database_url = fresh_database().await;
        let payments = Payments::start_with(options.tenant_account).await;
        let vars = config_vars(&database_url, &issuer, &payments, &options);
        let prefix = vars["TIQZY_CACHE_KEY_PREFIX"].clone();
        let app = Self::spawn_from(
            Config::from_vars(&vars).expect("config"),
            issuer,
            prefix,
            payments,
        )
        .await;
        (app, vars)
    }

    pub async fn spawn_from(
        config: Config,
        issuer: Issuer,
        prefix: String,
        payments: Payments,
    ) -> Self {
        let off = tiqzy_telemetry::Reporter::off(tiqzy_runtime::startup::SERVICE);
        Self::spawn_reporting(config, issuer, prefix, payments, off).await
    }

    /// The app with its panics and 500s reported through `reporter`.
    pub async fn spawn_reporting(
        config: Config,
        issuer: Issuer,
        prefix: String,
        payments: Payments,
        reporter: tiqzy_telemetry::Reporter,
    ) -> Self {
        let mail_from = config.mail.from.email.to_string();
        let app = Application::build(config)
            .await
            .expect("the application starts")
            .reporting_to(reporter);
        let url = format!("http://127.0.0.1:{}", app.port());
        let metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
        let state = app.state().clone();
        tokio::spawn(app.serve(std::future::pending()));
        Self {
            url,
            metrics_url,
            http: reqwest::Client::new(),
            state,
            mail_from,
            issuer,
            prefix,
            tenant: payments.tenant.clone(),
            stripe: payments.stripe.clone(),
            payments,
        }
    }

    /// A token for a staff member allowed everything (`admin`).
    pub async fn staff_token(&self) -> String {
        self.issuer.token_with(Some("admin"), json!({})).await
    }

    /// The text of `/metrics`, from the metrics port.
    pub async fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.admin_as(&self.staff_token().await, method, path, body)
            .await
    }

    /// An admin API request with the given bearer token.
    pub async fn admin_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("admin request")
    }

    /// Creates an event on sale now with one ticket type; returns (slug, ticket type id).
    pub async fn seed_event(
        &self,
        capacity: i32,
        price_minor: i64,
        per_order_limit: i32,
    ) -> (String, Uuid) {
        let slug = format!("show-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let now = Utc::now();
        let created = self
            .admin(
                reqwest::Method::POST,
                "/api/admin/events",
                Some(&json!({
                    "slug": slug, "title": "Night Show", "venue": "Hall 1",
                    "description": "A night to remember.",
                    "starts_at": now + Duration::days(30), "ends_at": now + Duration::days(30) + Duration::hours(4),
                })),
            )
            .await;
        assert_eq!(
            created.status(),
            201,
            "{}",
            created.text().await.unwrap_or_default()
        );
        let tt = self
            .add_ticket_type(&slug, "Standing", price_minor, capacity, per_order_limit)
            .await;
        (slug, tt)
    }

    /// Another ticket type on sale now for the event, added the way staff would.
    pub async fn add_ticket_type(
        &self,
        slug: &str,
        name: &str,
        price_minor: i64,
        capacity: i32,
        per_order_limit: i32,
    ) -> Uuid {
        let now = Utc::now();
        let tt = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/admin/events/{slug}/ticket-types"),
                Some(&json!({
                    "name": name, "price_minor": price_minor, "currency": "EUR",
                    "capacity": capacity, "per_order_limit": per_order_limit,
                    "sales_start": now - Duration::hours(1), "sales_end": now + Duration::days(29),
                })),
            )
            .await;
        assert_eq!(tt.status(), 201, "{}", tt.text().await.unwrap_or_default());
        let tt: Value = tt.json().await.expect("ticket type");
        tt["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// A hold over several ticket types: `(ticket type, quantity)` in the order given.
    pub async fn hold_basket(&self, items: &[(Uuid, i64)]) -> reqwest::Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(tt, q)| json!({ "ticket_type_id": tt, "quantity": q }))
            .collect();
        self.post("/api/holds", &json!({ "items": items })).await
    }

    /// Orders a hold: returns the pending order's JSON.
    pub async fn order(&self, hold: &Value, email: &str) -> Value {
        let order = self
            .post(
                "/api/orders",
                &json!({ "hold_id": hold["id"], "email": email }),
            )
            .await;
        assert_eq!(order.status(), 201);
        order.json().await.expect("order")
    }

    /// A hold as the router forwards it for the client at `forwarded`.
    pub async fn hold_via(&self, forwarded: &str, tt: Uuid, quantity: i64) -> reqwest::Response {
        hold_at(&self.http, &self.url, forwarded, tt, quantity).await
    }

    pub async fn hold(&self, ticket_type_id: Uuid, quantity: i64) -> reqwest::Response {
        self.post(
            "/api/holds",
            &json!({ "ticket_type_id": ticket_type_id, "quantity": quantity }),
        )
        .await
    }

    /// Holds, orders and pays: returns the order's JSON page.
    pub async fn buy(&self, ticket_type_id: Uuid, quantity: i64, email: &str) -> Value {
        let hold = self.hold(ticket_type_id, quantity).await;
        assert_eq!(hold.status(), 201);
        let hold: Value = hold.json().await.expect("hold");
        let order = self.order(&hold, email).await;
        self.pay(&order).await;
        self.order_page(&order).await
    }

    /// The order's JSON page, by the secret link the buyer got.
    pub async fn order_page(&self, order: &Value) -> Value {
        self.get(&format!(
            "/api/orders/{}",
            order["access_token"].as_str().expect("token")
        ))
        .await
        .json()
        .await
        .expect("order page")
    }

    /// Pays an order the way a buyer does: Stripe Checkout is opened through the API, then
    /// Stripe's signed `checkout.session.completed` arrives at the webhook.
    pub async fn pay(&self, order: &Value) {
        let checkout = self.checkout(order).await;
        assert_eq!(
            checkout.status(),
            200,
            "{}",
            checkout.text().await.unwrap_or_default()
        );
        self.notify_paid(order).await;
    }

    /// Stripe's signed `checkout.session.completed` for the order, in a fresh event.
    pub async fn notify_paid(&self, order: &Value) {
        let session = stripe::session_event("checkout.session.completed", order, true).await;
        let (_, delivered) = self.deliver("checkout.session.completed", session).await;
        assert_eq!(
            delivered.status(),
            200,
            "{}",
            delivered.text().await.unwrap_or_default()
        );
    }

    pub async fn checkout(&self, order: &Value) -> reqwest::Response {
        let token = order["access_token"].as_str().expect("order token");
        self.post(&format!("/api/orders/{token}/checkout"), &json!({}))
            .await
    }

    /// Posts a signed delivery to the webhook. A paid `checkout.session.completed` is what
    /// Stripe says once the buyer has paid: from then on Stripe (the proxy) reports the order's
    /// session paid when the payments service reads it back.
    pub async fn webhook(&self, payload: &str, signature: &str) -> reqwest::Response {
        self.stripe_learns_of(payload).await;
        self.http
            .post(format!("{}/webhooks/stripe", self.url))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(payload.to_owned())
            .send()
            .await
            .expect("webhook delivery")
    }

    async fn stripe_learns_of(&self, payload: &str) {
        let Ok(event) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        let session = &event["data"]["object"];
        if event["type"] != "checkout.session.completed" || session["payment_status"] != "paid" {
            return;
        }
        let (Some(order), Some(amount), Some(intent)) = (
            session["client_reference_id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok()),
            session["amount_total"].as_i64(),
            session["payment_intent"].as_str(),
        ) else {
            return;
        };
        let opened: Option<Option<String>> =
            sqlx::query_scalar("SELECT checkout_session_id FROM orders WHERE id = $1")
                .bind(order)
                .fetch_optional(&self.state.db)
                .await
                .expect("the order's session");
        if let Some(Some(id)) = opened {
            self.stripe.pay(&id, amount, intent);
        }
    }

    /// A fresh event of `kind` around `object`, signed and delivered: (event id, response).
    pub async fn deliver(&self, kind: &str, object: Value) -> (String, reqwest::Response) {
        let (id, payload) = stripe::event(None, kind, object);
        let signature = stripe::sign(&payload, stripe::WEBHOOK_SECRET, None);
        (id, self.webhook(&payload, &signature).await)
    }

    /// Sets up payouts for the holder of a ticket, signed in as them: an account through the
    /// API, then Stripe's `account.updated` saying onboarding is finished. Returns the account id.
    pub async fn onboard(&self, ticket_token: &str, holder: &Session) -> String {
        let started = self
            .post_as(
                holder,
                &format!("/api/tickets/{ticket_token}/payouts"),
                &json!({}),
            )
            .await;
        assert_eq!(
            started.status(),
            200,
            "{}",
            started.text().await.unwrap_or_default()
        );
        let started: Value = started.json().await.expect("onboarding");
        let account = started["account_id"].as_str().expect("account").to_owned();
        let object = stripe::account_object(&account, true).await;
        let (_, delivered) = self.deliver("account.updated", object).await;
        assert_eq!(
            delivered.status(),
            200,
            "{}",
            delivered.text().await.unwrap_or_default()
        );
        account
    }

    /// Waits until the outbox has sent (or given up on) everything queued so far.
    pub async fn mail_settled(&self) {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL",
            )
            .fetch_one(&self.state.db)
            .await
            .expect("pending mail");
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} mails still unsent after a minute"
            );
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
    }

    /// Every mail this tenant sent to `to` whose subject contains `subject_part`, once the
    /// outbox has settled, newest first, as Mailpit received them.
    pub async fn mails_to(&self, to: &str, subject_part: &str) -> Vec<Message> {
        self.mail_settled().await;
        let mailpit = Mailpit::shared();
        let found = mailpit
            .search(&format!("to:\"{to}\" from:\"{}\"", self.mail_from))
            .await
            .expect("Mailpit search");
        let mut mails = Vec::new();
        for summary in found {
            if summary.subject.contains(subject_part) {
                mails.push(mailpit.message(&summary.id).await.expect("a message"));
            }
        }
        mails
    }

    /// The path (on this storefront) of the first link under `path_prefix` (`/orders/`) in
    /// the newest mail this tenant sent to `to` that has one: what a buyer clicks.
    pub async fn link_in_last_mail(&self, to: &str, path_prefix: &str) -> String {
        let mails = self.mails_to(to, "").await;
        assert!(!mails.is_empty(), "no mail to {to}");
        let base = &self.state.config.public_url;
        // Newest first; two mails sent within the same second (the order's, then its
        // tickets') may be listed either way, so the newest one with such a link is taken.
        mails
            .iter()
            .find_map(|mail| {
                mail.links()
                    .iter()
                    .filter_map(|link| link.strip_prefix(base.as_str()))
                    .find(|path| path.starts_with(path_prefix))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                let texts: Vec<&str> = mails.iter().map(|m| m.text.as_str()).collect();
                panic!("no {path_prefix} link in any mail to {to}: {texts:?}")
            })
    }

    /// (capacity, sold, held) straight from the table.
    pub async fn stock(&self, ticket_type_id: Uuid) -> (i32, i32, i32) {
        let row: (i32, i32, i32) =
            sqlx::query_as("SELECT capacity, sold, held FROM ticket_types WHERE id = $1")
                .bind(ticket_type_id)
                .fetch_one(&self.state.db)
                .await
                .expect("stock");
        row
    }
}

/// A hold sent to the storefront at `url` as the router forwards it for `forwarded`.
pub async fn hold_at(
    http: &reqwest::Client,
    url: &str,
    forwarded: &str,
    tt: Uuid,
    quantity: i64,
) -> reqwest::Response {
    http.post(format!("{url}/api/holds"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "ticket_type_id": tt, "quantity": quantity }))
        .send()
        .await
        .expect("hold")
}

pub async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    (status, body)
}
