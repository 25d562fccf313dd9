//! Dereferencing: everything a reconcile reads besides the Tenant itself (the Platform, the
//! platform's servers and Stripe keys, the tenant's existing Secrets, its Key Vault
//! certificate, the Tenants it may share a host with, its live Deployment), gathered into
//! one struct so the steps after it decide from plain data.

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use tiqzy_crds::Tenant;
use tiqzy_crds::conditions::types;

use super::certificate::{self, Certificate, Polls};
use super::servers::{self, Servers};
use super::status::Observed;
use super::{credentials, hosts, mail, payments, sentry};
use crate::build::STOREFRONT;
use crate::cache::Cached;
use crate::context::Context;
use crate::error::Error;
use crate::tenant::{PlatformView, ValidatedTenant};

/// The Platform named `default`, once every cache holds its first list.
pub async fn platform(ctx: &Context) -> Option<PlatformView> {
    ctx.caches.ready().await;
    let platform = ctx.caches.platforms.get(&ObjectRef::new("default"))?;
    let payments_service_ready = platform.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == types::PAYMENTS_SERVICE_READY && c.status == "True")
    });
    Some(PlatformView {
        spec: platform.spec.clone(),
        route_api: ctx.route_api,
        payments_service_ready,
    })
}

/// What the steps after dereferencing work from.
#[derive(Debug)]
pub struct Found {
    /// The tenant with its Secrets' contents and the certificate to serve.
    pub tenant: ValidatedTenant,
    pub servers: Servers,
    /// `PaymentsReady`.
    pub payments: Observed,
    /// `MailReady`.
    pub mail: Observed,
    pub certificate: Certificate,
    /// An older Tenant claiming one of this tenant's hosts.
    pub conflict: Option<String>,
    /// The storefront Deployment as the cache has it.
    pub live: Option<Deployment>,
}

/// Reads what `v` needs from the cluster, the Platform's Secrets and Key Vault.
pub async fn dereference(
    ctx: &Context,
    polls: &Polls,
    tenant: &Tenant,
    mut v: ValidatedTenant,
    platform: &PlatformView,
) -> Result<Found, Error> {
    let others = ctx.tenant_snapshot();
    let others: Vec<&Tenant> = others.iter().filter_map(|g| g.0.as_ref().ok()).collect();
    let conflict = hosts::conflict(tenant, &v.hosts, &others, &platform.spec.base_domain);
    let servers = servers::servers(ctx, &platform.spec).await;
    let (access, payments) = payments::payments(ctx, platform, &v.name, &v.spec);
    let mut secrets =
        credentials::tenant_secrets(ctx, &v.name, &v.namespace, v.spec.cache.mode, &servers)
            .await?;
    secrets.payments = access.secret;
    let (mail_secret, mail) = mail::mail(ctx, &platform.spec).await;
    secrets.mail = mail_secret;
    secrets.sentry = sentry::sentry(ctx, &platform.spec).await;
    v.payments_namespace = access.namespace;
    v = v.with_secrets(secrets);
    let certificate = certificate::certificate(ctx, polls, &v, &platform.spec).await?;
    v.serve_certificate(certificate.serve.clone());
    let live = <Deployment as Cached>::cached(&ctx.caches, Some(&v.namespace), STOREFRONT);
    Ok(Found {
        tenant: v,
        servers,
        payments,
        mail,
        certificate,
        conflict,
        live,
    })
}
