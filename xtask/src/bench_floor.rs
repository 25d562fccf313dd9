//! `cargo xtask bench operator --floor`: what this machine can do at all, on a fresh platform
//! of the same kind as the operator's run (real API server and etcd, controllers and kwok,
//! PostgreSQL, Redis).
//!
//! For each of N tenants it writes what the operator writes: the objects built by the
//! operator's own builders (`tiqzy_operator::build::desired`) from the same Platform,
//! server-side applied with the operator's field manager, owner reference and labels, as the
//! operator's ServiceAccount, through the operator's default request limit and as many tenants
//! at once; the database, role and Redis user, provisioned by the operator's own store
//! functions; the Tenant's finalizer; and, once the storefront is available, one status (the
//! operator's own for a tenant of its run, renamed). Nothing else: no watch caches, no reads
//! before writes, no Events, no reconcile.
//!
//! Per tenant, in the order the operator's invariants ask for (credentials before the stores
//! use them, the database before the storefront starts): the finalizer, the namespace, the
//! Secrets together, the database and the Redis user together, then the workload and the
//! Ingress together.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tiqzy_crds::conditions::FINALIZER;
use tiqzy_crds::payments::{WEBHOOK_SECRETS_VAR, delivery_secret};
use tiqzy_crds::{CacheMode, Platform, PlatformSpec, Tenant};
use tiqzy_e2e::Harness;
use tiqzy_operator::apply::FIELD_MANAGER;
use tiqzy_operator::build::{self, Credentials, Desired, Exposure, TENANT_LABEL, Workload};
use tiqzy_operator::external::postgres::{self, PostgresServer};
use tiqzy_operator::external::redis::{self, RedisServer};
use tiqzy_operator::reconcile::credentials;
use tiqzy_operator::tenant::{PlatformView, TenantSecrets, ValidatedTenant};

use crate::bench::{self, StatusSample};
use crate::bench_writes::{self, Writes};

/// The operator's `--concurrency` default: tenants reconciled at once.
const TENANTS_AT_ONCE: usize = 32;
/// The operator's `--max-requests` default: requests to the API server in flight at once.
const MAX_REQUESTS: usize = 24;
/// The namespace the operator (and its payments service) runs in.
const OPERATOR_NAMESPACE: &str = "tiqzy-system";

/// What the floor run measured.
#[derive(Debug)]
pub struct Floor {
    /// From the first Tenant created to the last status written.
    pub floor_s: f64,
    /// Until every tenant's objects and stores were written.
    pub objects_s: f64,
    pub writes: Writes,
}

pub async fn floor(tenants: usize, with_stores: bool, sample: &StatusSample) -> Result<Floor> {
    let h = Harness::start().await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let admin = h.kube.client().await?;
    if !with_stores {
        bench::remove_stores(&admin).await?;
    }
    let platform = Api::<Platform>::all(admin.clone())
        .get("default")
        .await
        .context("reading the Platform")?;
    let shared = Shared::new(&h, platform.spec)?;
    let writer = operator_client(&kubeconfig).await?;

    let before = bench_writes::counters(&admin).await?;
    let started = Instant::now();
    let created = futures::stream::iter(0..tenants)
        .map(|i| bench::create_tenant(&admin, i))
        .buffer_unordered(TENANTS_AT_ONCE);
    let (to, with) = (&writer, &shared);
    let mut written = created
        .map(move |tenant| async move { write_tenant(to, with, tenant?).await })
        .buffer_unordered(TENANTS_AT_ONCE);
    // The tenants' Deployments: those with a tenant label.
    let mut deployments = watcher(
        Api::<Deployment>::all(admin.clone()),
        watcher::Config::default().labels(TENANT_LABEL),
    )
    .default_backoff()
    .applied_objects()
    .boxed();

    // A tenant's status is written once both its writes are done and its Deployment is
    // available, whichever comes last.
    let (mut waiting_for_pods, mut available) = (HashSet::new(), HashSet::new());
    let mut statuses = FuturesUnordered::new();
    let (mut writing, mut objects_written, mut objects_s, mut done) = (true, 0, 0.0, 0);
    let deadline = tokio::time::sleep(Duration::from_secs(1800));
    tokio::pin!(deadline);
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    while done < tenants {
        tokio::select! {
            next = written.next(), if writing => match next {
                Some(name) => {
                    let name = name?;
                    objects_written += 1;
                    if objects_written == tenants {
                        objects_s = started.elapsed().as_secs_f64();
                    }
                    if available.contains(&name) {
                        statuses.push(write_status(&writer, name, sample));
                    } else {
                        waiting_for_pods.insert(name);
                    }
                }
                None => writing = false,
            },
            Some(deployment) = deployments.next() => {
                let Ok(deployment) = deployment else { continue };
                let serving = deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    >= 1;
                let tenant = deployment.labels().get(TENANT_LABEL).cloned();
                if let Some(tenant) = tenant.filter(|_| serving)
                    && available.insert(tenant.clone())
                    && waiting_for_pods.remove(&tenant)
                {
                    statuses.push(write_status(&writer, tenant, sample));
                }
            }
            Some(result) = statuses.next() => {
                result?;
                done += 1;
            }
            _ = progress.tick() => eprintln!(
                "floor: {done}/{tenants} tenants with their status after {:.0?}",
                started.elapsed()
            ),
            () = &mut deadline => bail!(
                "floor: only {done} of {tenants} tenants done after 30 minutes; logs in {}",
                h.log_dir().display()
            ),
        }
    }
    let floor_s = started.elapsed().as_secs_f64();
    let writes = Writes::between(&before, &bench_writes::counters(&admin).await?);
    drop((written, deployments, statuses));
    bench::finish(h);
    Ok(Floor {
        floor_s,
        objects_s,
        writes,
    })
}

/// The operator's client: its ServiceAccount (the same authorization and API priority and
/// fairness as the operator's requests), the same limit of requests in flight.
async fn operator_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS))
        .build())
}

/// What every tenant's writes need from the Platform.
struct Shared {
    view: PlatformView,
    postgres: Option<PostgresServer>,
    redis: Option<RedisServer>,
    /// The payments service's delivery key, when the Platform takes payments.
    delivery_key: Option<String>,
}

impl Shared {
    fn new(h: &Harness, spec: PlatformSpec) -> Result<Self> {
        // What the floor does not write yet: a Platform with these would be compared unfairly.
        if spec.mail.is_some() || spec.observability.is_some() || spec.ca_secret_ref.is_some() {
            bail!("the floor does not copy mail, Sentry or CA Secrets; this Platform has one");
        }
        let postgres = spec.postgres.as_ref().map(|pg| PostgresServer {
            host: pg.host.clone(),
            port: u16::try_from(pg.port).unwrap_or(5432),
            admin_user: h.postgres.admin_user.clone(),
            admin_password: h.postgres.admin_password.clone(),
            admin_database: "postgres".to_owned(),
            ssl_mode: serde_json::to_value(pg.ssl_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "require".into()),
        });
        let redis = match &spec.redis {
            None => None,
            Some(r) => {
                let (host, port) =
                    tiqzy_operator::names::redis_address(&r.url).map_err(anyhow::Error::msg)?;
                Some(RedisServer {
                    host,
                    port,
                    admin_user: h.redis.admin_user.clone(),
                    admin_password: h.redis.admin_password.clone(),
                    tls: r.url.starts_with("rediss://"),
                    ca_pem: None,
                })
            }
        };
        let delivery_key = spec.stripe.as_ref().map(|_| new_delivery_key());
        Ok(Self {
            view: PlatformView {
                spec,
                route_api: false,
                payments_service_ready: true,
            },
            postgres,
            redis,
            delivery_key,
        })
    }

    /// The tenant as the builders take it, with new credentials (as for a new tenant).
    fn validated(&self, tenant: &Tenant) -> Result<ValidatedTenant> {
        let mut v = tiqzy_operator::reconcile::validate(tenant, &self.view)
            .with_context(|| format!("validating {}", tenant.name_any()))?;
        let name = v.name.clone();
        let database = self
            .postgres
            .as_ref()
            .and_then(|server| credentials::database_secret(server, &name, None));
        let cache = match &self.redis {
            Some(server) if v.spec.cache.mode == CacheMode::Shared => {
                credentials::cache_secret(server, &name, None)
            }
            _ => None,
        };
        let payments = self.delivery_key.as_ref().map(|key| {
            BTreeMap::from([(
                WEBHOOK_SECRETS_VAR.to_owned(),
                delivery_secret(key.as_bytes(), &name),
            )])
        });
        v.payments_namespace = payments.as_ref().map(|_| OPERATOR_NAMESPACE.to_owned());
        Ok(v.with_secrets(TenantSecrets {
            signing: credentials::new_signing_secret(),
            database,
            cache,
            payments,
            ..TenantSecrets::default()
        }))
    }
}

/// A random key of the payments service's kind (64 hex digits).
fn new_delivery_key() -> String {
    use sha2::Digest;
    let random = credentials::new_signing_secret();
    hex::encode(sha2::Sha256::digest(
        random[credentials::SIGNING_KEY].as_bytes(),
    ))
}

/// Everything of one tenant except its status; returns its name.
async fn write_tenant(writer: &kube::Client, shared: &Shared, tenant: Tenant) -> Result<String> {
    let name = tenant.name_any();
    let finalizer = serde_json::json!({ "metadata": { "finalizers": [FINALIZER] } });
    let (api, params) = (Api::<Tenant>::all(writer.clone()), PatchParams::default());
    let patch = Patch::Merge(&finalizer);
    send(|| api.patch(&name, &params, &patch))
        .await
        .with_context(|| format!("adding the finalizer of {name}"))?;

    let v = shared.validated(&tenant)?;
    let objects = Objects {
        client: writer.clone(),
        owner: tenant
            .controller_owner_ref(&())
            .context("the Tenant has a uid")?,
        labels: build::labels(&name),
    };
    let Desired {
        credentials: Credentials { namespace, secrets },
        workload:
            Workload {
                service_account,
                config_map,
                deployment,
                service,
                hpa,
                pdb,
                network_policies,
            },
        exposure,
    } = build::desired(&v);
    let Exposure::Ingress(ingress) = exposure else {
        bail!("the floor writes Ingresses only (this platform serves no Routes)");
    };
    objects.apply_cluster(namespace).await?;
    futures::future::try_join_all(secrets.into_iter().map(|s| objects.apply(s))).await?;
    tokio::try_join!(database(shared, &v), cache_user(shared, &v))?;
    tokio::try_join!(
        objects.apply(service_account),
        objects.apply(config_map),
        objects.apply(deployment),
        objects.apply(service),
        async {
            match hpa {
                Some(hpa) => objects.apply(hpa).await,
                None => Ok(()),
            }
        },
        objects.apply(pdb),
        futures::future::try_join_all(network_policies.into_iter().map(|p| objects.apply(p))),
        objects.apply(*ingress),
    )?;
    Ok(name)
}

async fn database(shared: &Shared, v: &ValidatedTenant) -> Result<()> {
    let Some(server) = &shared.postgres else {
        return Ok(());
    };
    let password = v
        .secrets
        .database
        .as_ref()
        .and_then(|s| s.get("PGPASSWORD"))
        .context("a database password")?;
    let limit = v.spec.database.connection_limit;
    postgres::ensure_database(server, &v.name, password, limit)
        .await
        .with_context(|| format!("the database of {}", v.name))?;
    if let Some(keys) = v.secrets.signing.get(credentials::SIGNING_KEY) {
        postgres::save_signing_keys(server, &v.name, keys)
            .await
            .with_context(|| format!("the signing keys of {}", v.name))?;
    }
    Ok(())
}

async fn cache_user(shared: &Shared, v: &ValidatedTenant) -> Result<()> {
    let (Some(server), Some(secret)) = (&shared.redis, &v.secrets.cache) else {
        return Ok(());
    };
    let password = secret.get("REDIS_PASSWORD").context("a cache password")?;
    redis::ensure_cache_user(server, &v.name, password)
        .await
        .with_context(|| format!("the cache user of {}", v.name))?;
    Ok(())
}

/// The status the operator wrote for the sample tenant, renamed to `name`.
async fn write_status(writer: &kube::Client, name: String, sample: &StatusSample) -> Result<()> {
    let text = sample.status.to_string();
    let text = text
        .replace(&sample.tenant, &name)
        .replace(&sample.tenant.replace('-', "_"), &name.replace('-', "_"));
    let status: serde_json::Value = serde_json::from_str(&text)?;
    let patch = serde_json::json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "status": status
    });
    let (api, params) = (
        Api::<Tenant>::all(writer.clone()),
        PatchParams::apply(FIELD_MANAGER).force(),
    );
    let patch = Patch::Apply(&patch);
    send(|| api.patch_status(&name, &params, &patch))
        .await
        .with_context(|| format!("the status of {name}"))?;
    Ok(())
}

/// Applies objects of one tenant as the operator's applier does: its owner reference and
/// labels added, server-side apply with its field manager, forced.
struct Objects {
    client: kube::Client,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
}

impl Objects {
    fn decorate<K: Resource>(&self, object: &mut K) {
        tiqzy_operator::apply::decorate(object, &self.owner, &self.labels);
    }

    async fn apply<K>(&self, mut object: K) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
    {
        self.decorate(&mut object);
        let api =
            Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        apply_with(api, &object).await
    }

    async fn apply_cluster<K>(&self, mut object: K) -> Result<()>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
    {
        self.decorate(&mut object);
        apply_with(Api::<K>::all(self.client.clone()), &object).await
    }
}

async fn apply_with<K>(api: Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(object);
    send(|| api.patch(&name, &params, &patch))
        .await
        .with_context(|| format!("applying {} {name}", K::kind(&())))?;
    Ok(())
}

/// Sends a request, again when the API server asks for it (429, or unavailable for a moment).
async fn send<T, F, Fut>(request: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(kube::Error::Api(status))
                if matches!(status.code, 429 | 500 | 503 | 504) && attempt < 5 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            other => return other,
        }
    }
}
