//! The configuration rules, each tried with one variable changed from a valid environment.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::*;

fn valid() -> HashMap<String, String> {
    [
        ("TIQZY_TENANT", "acme"),
        ("TIQZY_DISPLAY_NAME", "ACME Live"),
        ("TIQZY_CURRENCY", "EUR"),
        ("TIQZY_LOCALE", "de-DE"),
        ("TIQZY_BRAND_PRIMARY_COLOR", "#1A2B3C"),
        ("TIQZY_BRAND_ACCENT_COLOR", "#ffcc00"),
        ("TIQZY_SUPPORT_EMAIL", "help@acme.example"),
        ("TIQZY_RESALE_ENABLED", "true"),
        ("TIQZY_RESALE_PRICE_CAP_PERCENT", "120"),
        ("TIQZY_RESALE_SELLER_FEE_BPS", "500"),
        ("TIQZY_PUBLIC_URL", "https://acme.example/"),
        ("DATABASE_URL", "postgres://acme:pg-password-1f2e@db/acme"),
        ("TIQZY_CACHE_KEY_PREFIX", "t:acme:"),
        ("TIQZY_OAUTH_ISSUER", "https://login.example/acme/"),
        ("TIQZY_OAUTH_AUDIENCE", "tiqzy-acme"),
        ("TIQZY_TICKET_SIGNING_KEY", &"ab".repeat(32)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn error_for(name: &str, value: Option<&str>) -> String {
    let mut vars = valid();
    match value {
        Some(v) => vars.insert(name.to_owned(), v.to_owned()),
        None => vars.remove(name),
    };
    match Config::from_vars(&vars) {
        Ok(_) => panic!("{name}={value:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_complete_environment_parses_with_defaults() {
    let config = Config::from_vars(&valid()).expect("valid");
    assert_eq!(config.listen_addr.port(), 8080);
    assert_eq!(config.hold_ttl, Duration::from_secs(600));
    assert_eq!(config.branding.primary_color, "#1a2b3c");
    assert_eq!(config.public_url, "https://acme.example");
    let oauth = config.oauth.as_ref().expect("staff sign-in");
    assert_eq!(oauth.issuer, "https://login.example/acme");
    assert_eq!(oauth.permission_prefix, "");
    assert_eq!(config.resale.price_cap.percent(), 120);
    assert!(config.redis_url.is_none());
    assert_eq!(config.ticket_signing_keys.len(), 1);
    assert_eq!(config.ticket_signing_keys[0].expose_secret().len(), 32);
    assert_eq!(config.db_max_connections, 10);
    assert_eq!(config.db_acquire_timeout, Duration::from_secs(5));
}

#[test]
fn the_pool_follows_what_the_operator_wrote() {
    let mut vars = valid();
    vars.insert("TIQZY_DB_MAX_CONNECTIONS".to_owned(), "4".to_owned());
    vars.insert("TIQZY_DB_ACQUIRE_TIMEOUT_MS".to_owned(), "750".to_owned());
    let config = Config::from_vars(&vars).expect("valid");
    assert_eq!(config.db_max_connections, 4);
    assert_eq!(config.db_acquire_timeout, Duration::from_millis(750));
    assert_eq!(
        error_for("TIQZY_DB_MAX_CONNECTIONS", Some("many")),
        "TIQZY_DB_MAX_CONNECTIONS: must be a whole number between 1 and 500"
    );
}

#[test]
fn every_error_names_its_variable() {
    for (name, value) in [
        ("TIQZY_TENANT", None),
        ("DATABASE_URL", None),
        ("TIQZY_CURRENCY", Some("euro")),
        ("TIQZY_BRAND_PRIMARY_COLOR", Some("red")),
        ("TIQZY_RESALE_ENABLED", Some("yes")),
        ("TIQZY_RESALE_PRICE_CAP_PERCENT", Some("12.5")),
        ("TIQZY_RESALE_SELLER_FEE_BPS", Some("20000")),
        ("TIQZY_PUBLIC_URL", Some("acme.example")),
        ("TIQZY_LISTEN_ADDR", Some("8080")),
        ("TIQZY_METRICS_ADDR", Some("9090")),
        ("TIQZY_TICKET_SIGNING_KEY", Some("c2hvcnQ=")),
        ("TIQZY_HOLD_TTL_SECONDS", Some("0")),
        ("TIQZY_HOLD_TTL_SECONDS", Some("86400")),
        ("TIQZY_DB_MAX_CONNECTIONS", Some("0")),
        ("TIQZY_DB_MAX_CONNECTIONS", Some("501")),
        ("TIQZY_DB_ACQUIRE_TIMEOUT_MS", Some("-5")),
        ("TIQZY_HOLD_RATE_LIMIT_PER_MINUTE", Some("0")),
        ("TIQZY_HOLD_RATE_LIMIT_PER_MINUTE", Some("many")),
        ("TIQZY_SIGN_IN_MAILS_PER_ADDRESS_PER_HOUR", Some("0")),
        ("TIQZY_SIGN_IN_MAILS_PER_CLIENT_PER_HOUR", Some("0")),
        ("TIQZY_SIGN_IN_MAILS_PER_CLIENT_PER_HOUR", Some("lots")),
        ("TIQZY_LOCALE", None),
        ("TIQZY_LOCALE", Some("de DE")),
        ("TIQZY_OAUTH_PERMISSION_PREFIX", Some("tiqzy admin.")),
        ("TIQZY_TRUSTED_PROXIES", Some("-1")),
        ("TIQZY_TRUSTED_PROXIES", Some("9")),
        ("TIQZY_TRUSTED_PROXIES", Some("router")),
        ("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", Some("0")),
        ("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", Some("ten")),
        ("TIQZY_OAUTH_ISSUER", Some("http://login.example/acme")),
        ("TIQZY_OAUTH_ISSUER", Some("http://127.0.0.1.evil.example/")),
        ("TIQZY_OAUTH_ISSUER", Some("http://127.0.0.1@evil.example/")),
        ("TIQZY_OAUTH_ISSUER", Some("ftp://login.example")),
        ("TIQZY_STAFF_KEYS_REFRESH_SECONDS", Some("0")),
    ] {
        let message = error_for(name, value);
        assert!(message.starts_with(name), "{message}");
    }
}

#[test]
fn scalper_limits_and_staff_key_refresh_have_sensible_defaults() {
    let config = Config::from_vars(&valid()).expect("valid");
    assert_eq!(config.trusted_proxies, 1, "the router");
    assert_eq!(config.max_tickets_per_client, 10);
    let oauth = config.oauth.expect("staff sign-in");
    assert_eq!(oauth.keys_refresh, Duration::from_secs(300));
    assert_eq!(oauth.tenant_claim, None);
}

#[test]
fn the_tenant_claim_defaults_to_the_tenants_name() {
    let mut vars = valid();
    vars.insert(
        "TIQZY_STAFF_TENANT_CLAIM".to_owned(),
        "tiqzy_tenant".to_owned(),
    );
    let oauth = Config::from_vars(&vars)
        .expect("valid")
        .oauth
        .expect("oauth");
    assert_eq!(
        oauth.tenant_claim,
        Some(TenantClaim {
            name: "tiqzy_tenant".to_owned(),
            value: "acme".to_owned(),
        })
    );
    vars.insert(
        "TIQZY_STAFF_TENANT_CLAIM_VALUE".to_owned(),
        "acme-box-office".to_owned(),
    );
    // A value without a claim to hold it is a mistake, named by the missing variable.
    assert_eq!(
        error_for("TIQZY_STAFF_TENANT_CLAIM_VALUE", Some("acme")),
        "TIQZY_STAFF_TENANT_CLAIM: is not set, but TIQZY_STAFF_TENANT_CLAIM_VALUE is"
    );
    let oauth = Config::from_vars(&vars)
        .expect("valid")
        .oauth
        .expect("oauth");
    assert_eq!(oauth.tenant_claim.expect("claim").value, "acme-box-office");
}

#[test]
fn plain_http_reaches_only_a_loopback_issuer() {
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:9/realms/x",
        "http://[::1]:443",
        "https://login.example",
    ] {
        assert!(secure_url(url).is_ok(), "{url}");
    }
    for url in [
        "http://login.example",
        "http://10.0.0.1",
        "http://localhost.evil.example",
        "http://127.0.0.1@evil.example",
        "https://",
        "login.example",
    ] {
        assert!(secure_url(url).is_err(), "{url}");
    }
}

#[test]
fn sign_in_mail_limits_default_to_five_per_address_and_twenty_per_client_an_hour() {
    let limits = Config::from_vars(&valid()).expect("valid").sign_in_limits;
    assert_eq!((limits.per_address, limits.per_client), (5, 20));
}

#[test]
fn a_locale_the_storefront_has_no_table_for_is_still_accepted() {
    let mut vars = valid();
    vars.insert("TIQZY_LOCALE".to_owned(), "de_LU".to_owned());
    let locale = Config::from_vars(&vars).expect("valid").locale;
    assert_eq!((locale.tag(), locale.formats_as()), ("de-LU", "de-DE"));
    vars.insert("TIQZY_LOCALE".to_owned(), "sw-KE".to_owned());
    let locale = Config::from_vars(&vars).expect("valid").locale;
    assert_eq!((locale.tag(), locale.formats_as()), ("sw-KE", "en-GB"));
}

#[test]
fn the_signing_key_never_appears_in_errors_or_debug_output() {
    let key = "not-base64-and-not-hex-but-secret!";
    let message = error_for("TIQZY_TICKET_SIGNING_KEY", Some(key));
    assert!(!message.contains(key), "{message}");
    let config = Config::from_vars(&valid()).expect("valid");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(&"ab".repeat(32)) && !debug.contains("pg-password-1f2e"),
        "{debug}"
    );
}

#[test]
fn no_secret_appears_in_the_debug_output_of_a_full_configuration() {
    let mut vars = valid();
    for (k, v) in [
        ("REDIS_URL", "redis://t-acme:redis-password-9c8d@redis:6379"),
        (
            "TIQZY_PAYMENTS_WEBHOOK_SECRETS",
            "whsec_hook-one-5e4f,whsec_hook-two-3c2d",
        ),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }
    let config = Config::from_vars(&vars).expect("valid");
    let debug = format!("{config:?}");
    for secret in [
        "ab".repeat(32),
        "pg-password-1f2e".to_owned(),
        "redis-password-9c8d".to_owned(),
        "hook-one-5e4f".to_owned(),
        "hook-two-3c2d".to_owned(),
    ] {
        assert!(!debug.contains(&secret), "{secret} in {debug}");
    }
    // What is not secret is still there to help whoever reads the log.
    assert!(debug.contains("acme.example"), "{debug}");
}

#[test]
fn payments_settings_parse_with_defaults_and_several_webhook_secrets() {
    let config = Config::from_vars(&valid()).expect("valid");
    assert!(
        config.payments.service_url.is_none(),
        "no service: no payments"
    );
    assert_eq!(
        config.payments.token_file,
        std::path::Path::new("/var/run/secrets/tiqzy-payments/token")
    );
    assert_eq!(config.payments.application_fee_bps, 0);

    let mut vars = valid();
    for (k, v) in [
        (
            "TIQZY_PAYMENTS_URL",
            "http://tiqzy-payments.tiqzy-system.svc:8080/",
        ),
        ("TIQZY_PAYMENTS_TOKEN_FILE", "/run/token"),
        (
            "TIQZY_PAYMENTS_WEBHOOK_SECRETS",
            " whsec_new1234 ,whsec_old5678,",
        ),
        ("TIQZY_STRIPE_ACCOUNT", "acct_1Tenant"),
        ("TIQZY_APPLICATION_FEE_BPS", "250"),
        // The platform's Stripe settings are the payments service's, not the storefront's.
        ("STRIPE_SECRET_KEY", "sk_test_abcdef123"),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }
    let payments = Config::from_vars(&vars).expect("valid").payments;
    let webhook_secrets: Vec<&str> = payments
        .webhook_secrets
        .iter()
        .map(ExposeSecret::expose_secret)
        .collect();
    assert_eq!(webhook_secrets, ["whsec_new1234", "whsec_old5678"]);
    assert_eq!(
        payments.service_url.as_deref(),
        Some("http://tiqzy-payments.tiqzy-system.svc:8080")
    );
    assert_eq!(payments.token_file, std::path::Path::new("/run/token"));
    assert_eq!(payments.connected_account.as_deref(), Some("acct_1Tenant"));
    assert_eq!(payments.application_fee_bps, 250);
    let debug = format!("{payments:?}");
    assert!(
        !debug.contains("sk_test_abcdef123") && !debug.contains("whsec_"),
        "{debug}"
    );
}

#[test]
fn bad_payments_settings_name_their_variable_but_never_echo_the_secret() {
    for (name, value) in [
        (
            "TIQZY_PAYMENTS_WEBHOOK_SECRETS",
            "whsec_good123,s3cr3t-not-whsec",
        ),
        ("TIQZY_PAYMENTS_URL", "tiqzy-payments.tiqzy-system.svc"),
        ("TIQZY_STRIPE_ACCOUNT", "acct_with spaces"),
        ("TIQZY_APPLICATION_FEE_BPS", "10001"),
        ("TIQZY_APPLICATION_FEE_BPS", "-1"),
    ] {
        let message = error_for(name, Some(value));
        assert!(message.starts_with(name), "{message}");
        assert!(!message.contains(value), "{message}");
    }
}

#[test]
fn a_permission_prefix_is_read() {
    let mut vars = valid();
    vars.insert(
        "TIQZY_OAUTH_PERMISSION_PREFIX".to_owned(),
        "tiqzy.".to_owned(),
    );
    let config = Config::from_vars(&vars).expect("valid");
    assert_eq!(
        config.oauth.expect("staff sign-in").permission_prefix,
        "tiqzy."
    );
}

#[test]
fn staff_sign_in_and_the_support_address_are_optional_but_sign_in_comes_whole() {
    let mut vars = valid();
    for name in [
        "TIQZY_OAUTH_ISSUER",
        "TIQZY_OAUTH_AUDIENCE",
        "TIQZY_SUPPORT_EMAIL",
    ] {
        vars.remove(name);
    }
    let config = Config::from_vars(&vars).expect("a storefront without staff sign-in");
    assert!(config.oauth.is_none());
    assert!(config.branding.support_email.is_none());
    assert_eq!(
        error_for("TIQZY_OAUTH_AUDIENCE", None),
        "TIQZY_OAUTH_AUDIENCE: is not set, but TIQZY_OAUTH_ISSUER is"
    );
    assert_eq!(
        error_for("TIQZY_OAUTH_ISSUER", None),
        "TIQZY_OAUTH_ISSUER: is not set, but TIQZY_OAUTH_AUDIENCE is"
    );
}

/// A self-signed CA certificate (public, made for this test), as an operator would deliver a
/// private CA.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBlDCCATugAwIBAgIUcmM2FSnfof2qZlnM5KM32dn81acwCgYIKoZIzj0EAwIw\nHzEdMBsGA1UEAwwUVGlxenkgY29uZmlnIHRlc3QgQ0EwIBcNMjYxMjAxMDQwODEy\nWhgPMjEyNjExMDcwNDA4MTJaMB8xHTAbBgNVBAMMFFRpcXp5IGNvbmZpZyB0ZXN0\nIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEISCFV2oIPQ1LhuZL6FrPIDNI\nB/B2rsS60qTKdR1qTJDDEV7JTC0fhen9t365Y0VYp2YopFalnsoAcu87ZPwjeaNT\nMFEwHQYDVR0OBBYEFCjytiNyhUunEqvn8PkN/868kLwdMB8GA1UdIwQYMBaAFCjy\ntiNyhUunEqvn8PkN/868kLwdMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID\nRwAwRAIgX0DZSA6kcqEaaBHs1rrVD865Gm3OJdvaFclFSaFqUuMCICASAr/Kg4oQ\nKI+WWwnHtgR20Ogz9z19mCmprFwen5nq\n-----END CERTIFICATE-----";

#[test]
fn private_cas_for_staff_sign_in_are_read_and_bad_ones_named() {
    let mut vars = valid();
    vars.insert(
        "TIQZY_TRUSTED_CA_PEM".to_owned(),
        format!("{TEST_CA}\n{TEST_CA}\n"),
    );
    let oauth = Config::from_vars(&vars)
        .expect("a storefront trusting two CAs")
        .oauth
        .expect("staff sign-in");
    assert_eq!(oauth.trusted_cas.len(), 2);
    assert!(
        Config::from_vars(&valid())
            .expect("valid")
            .oauth
            .expect("staff sign-in")
            .trusted_cas
            .is_empty()
    );
    for bad in [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    ] {
        assert_eq!(
            error_for("TIQZY_TRUSTED_CA_PEM", Some(bad)),
            "TIQZY_TRUSTED_CA_PEM: must hold PEM certificates"
        );
    }
}

#[test]
fn a_redis_ca_needs_a_rediss_url_and_a_certificate() {
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    let mut vars = valid();
    vars.insert(
        "REDIS_URL".to_owned(),
        "rediss://t:pw@cache:6380/".to_owned(),
    );
    vars.insert("REDIS_CA_PEM".to_owned(), format!("{CA}\n"));
    let config = Config::from_vars(&vars).expect("valid");
    assert_eq!(config.redis_ca_pem.as_deref(), Some(CA));

    vars.insert(
        "REDIS_URL".to_owned(),
        "redis://t:pw@cache:6379/".to_owned(),
    );
    let err = Config::from_vars(&vars).expect_err("a CA with plain text");
    assert_eq!(
        err.to_string(),
        "REDIS_CA_PEM: is set, but REDIS_URL is not a rediss:// URL"
    );
    assert!(!err.to_string().contains("pw@"), "no password in errors");

    vars.insert(
        "REDIS_URL".to_owned(),
        "rediss://t:pw@cache:6380/".to_owned(),
    );
    vars.insert("REDIS_CA_PEM".to_owned(), "not a certificate".to_owned());
    let err = Config::from_vars(&vars).expect_err("no certificate");
    assert_eq!(err.to_string(), "REDIS_CA_PEM: holds no PEM certificate");
}

#[test]
fn without_a_relay_mail_is_logged_from_the_tenant_name_and_replies_go_to_support() {
    let config = Config::from_vars(&valid()).expect("valid");
    assert!(config.mail.smtp.is_none());
    assert_eq!(
        config.mail.from.to_string(),
        "ACME Live <noreply@acme.example>"
    );
    assert_eq!(
        config
            .mail
            .reply_to
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("help@acme.example")
    );
    assert_eq!(config.mail.retry_max, Duration::from_secs(300));
}

#[test]
fn a_relay_is_read_with_its_tls_mode_default_port_and_credentials() {
    let mut vars = valid();
    for (k, v) in [
        ("TIQZY_SMTP_HOST", "smtp.mail.example"),
        ("TIQZY_SMTP_USERNAME", "acme"),
        ("TIQZY_SMTP_PASSWORD", "smtp-pass-5e6f"),
        ("TIQZY_MAIL_FROM", "tickets@acme.example"),
        ("TIQZY_MAIL_FROM_NAME", "ACME Box Office"),
        ("TIQZY_MAIL_REPLY_TO", "crew@acme.example"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let config = Config::from_vars(&vars).expect("valid");
    let smtp = config.mail.smtp.as_ref().expect("a relay");
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.tls),
        ("smtp.mail.example", 587, SmtpTls::StartTls)
    );
    let credentials = smtp.credentials.as_ref().expect("credentials");
    assert!(
        matches!(&credentials.password, SecretSource::Value(p) if p.expose_secret() == "smtp-pass-5e6f")
    );
    assert_eq!(
        config.mail.from.to_string(),
        "ACME Box Office <tickets@acme.example>"
    );
    assert_eq!(
        config
            .mail
            .reply_to
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("crew@acme.example")
    );
    assert!(!format!("{config:?}").contains("smtp-pass-5e6f"));

    for (tls, port) in [("tls", 465), ("none", 25), ("STARTTLS", 587)] {
        vars.insert("TIQZY_SMTP_TLS".into(), tls.into());
        let config = Config::from_vars(&vars).expect("valid");
        assert_eq!(config.mail.smtp.expect("relay").port, port, "{tls}");
    }
    vars.insert("TIQZY_SMTP_PORT".into(), "2525".into());
    vars.remove("TIQZY_SMTP_PASSWORD");
    vars.remove("TIQZY_SMTP_USERNAME");
    vars.insert(
        "TIQZY_SMTP_USERNAME_FILE".into(),
        "/run/secrets/mail/username".into(),
    );
    vars.insert(
        "TIQZY_SMTP_PASSWORD_FILE".into(),
        "/run/secrets/mail/password".into(),
    );
    let smtp = Config::from_vars(&vars)
        .expect("valid")
        .mail
        .smtp
        .expect("relay");
    assert_eq!(smtp.port, 2525);
    assert!(matches!(
        smtp.credentials.expect("credentials").password,
        SecretSource::File(p) if p.ends_with("password")
    ));
}

#[test]
fn bad_mail_settings_name_their_variable_and_never_echo_a_password() {
    let with_relay = |extra: &[(&str, &str)]| {
        let mut vars = valid();
        vars.insert("TIQZY_SMTP_HOST".into(), "smtp.mail.example".into());
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        Config::from_vars(&vars)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for (extra, name) in [
        (vec![("TIQZY_SMTP_TLS", "ssl")], "TIQZY_SMTP_TLS"),
        (vec![("TIQZY_SMTP_PORT", "0")], "TIQZY_SMTP_PORT"),
        (vec![("TIQZY_SMTP_HOST", "smtp host")], "TIQZY_SMTP_HOST"),
        (
            vec![("TIQZY_MAIL_FROM", "not an address")],
            "TIQZY_MAIL_FROM",
        ),
        (vec![("TIQZY_MAIL_REPLY_TO", "@@")], "TIQZY_MAIL_REPLY_TO"),
        (
            vec![("TIQZY_MAIL_RETRY_MAX_SECONDS", "0")],
            "TIQZY_MAIL_RETRY_MAX_SECONDS",
        ),
        (vec![("TIQZY_SMTP_USERNAME", "acme")], "TIQZY_SMTP_PASSWORD"),
        (
            vec![("TIQZY_SMTP_PASSWORD", "hunter2-secret")],
            "TIQZY_SMTP_USERNAME",
        ),
        (
            vec![
                ("TIQZY_SMTP_USERNAME", "acme"),
                ("TIQZY_SMTP_PASSWORD", "hunter2-secret"),
                ("TIQZY_SMTP_PASSWORD_FILE", "/run/p"),
            ],
            "TIQZY_SMTP_PASSWORD",
        ),
    ] {
        let error = with_relay(&extra).expect_err(name);
        assert!(error.starts_with(name), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
    assert!(
        error_for("TIQZY_SMTP_PORT", Some("2525")).starts_with("TIQZY_SMTP_HOST"),
        "a port without a host"
    );
}
