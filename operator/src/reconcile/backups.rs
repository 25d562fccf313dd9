//! Backups and restores in the reconcile. A backup runs in a task of its own, at most
//! [`MAX_CONCURRENT`] across all tenants, so a dump streaming for minutes never holds up a
//! reconcile; the tenant is looked at again every few seconds while its backup runs and picks
//! up the outcome. When the next one is due follows from the cron schedule and the newest
//! complete backup (from the status, so a restarted operator neither repeats nor skips one).
//! A restore runs inside the reconcile, before the storefront's Deployment is applied.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tiqzy_crds::conditions::{BACKUP_NOW_ANNOTATION, Reason, types};
use tiqzy_crds::{
    BackupAuthMethod, BackupRecord, BackupStatus, BackupStorage, PlatformSpec, RestoredFrom, Tenant,
};
use tokio::sync::Semaphore;

use super::servers::{self, Servers};
use super::status::Observed;
use crate::backup::{self, BackupError, RestoreError};
use crate::context::Context;
use crate::error::backoff;
use crate::external::blob::{BlobAuth, Container};
use crate::external::keyvault::{Credential, KeyVault, VaultConfig};
use crate::external::postgres::PostgresServer;

/// Backups and restores running at once across all tenants.
pub const MAX_CONCURRENT: usize = 4;
/// How soon a tenant whose backup runs, or waits for a slot, is looked at again.
const POLL: Duration = Duration::from_secs(2);

/// Per tenant: the backup running and the last outcome, in memory.
#[derive(Debug)]
pub struct Backups {
    by_tenant: Arc<Mutex<HashMap<String, State>>>,
    slots: Arc<Semaphore>,
}

impl Default for Backups {
    fn default() -> Self {
        Self {
            by_tenant: Arc::default(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    running: bool,
    /// The annotation value the running backup serves.
    running_for: Option<String>,
    last_success: Option<BackupRecord>,
    /// The annotation value the newest successful backup served.
    handled_request: Option<String>,
    /// The last failure and when it happened, cleared by a success.
    failure: Option<(Reason, String, Instant)>,
    failures: u32,
}

/// What the backup step adds to the status, and when it wants to look again.
#[derive(Debug, Default)]
pub struct Step {
    pub observed: Option<Observed>,
    pub status: Option<BackupStatus>,
    pub requeue_in: Option<Duration>,
}

impl Backups {
    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        self.by_tenant.lock().expect("backups lock").remove(tenant);
    }

    fn state(&self, tenant: &str) -> State {
        self.by_tenant
            .lock()
            .expect("backups lock")
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a backup when one is due and reports where the tenant's backups stand.
    pub async fn step(
        &self,
        ctx: &Context,
        tenant: &Tenant,
        platform: &PlatformSpec,
        servers: &Servers,
        database_ready: bool,
    ) -> Step {
        let name = tenant.name_any();
        let previous = tenant
            .status
            .as_ref()
            .and_then(|s| s.backup.clone())
            .unwrap_or_default();
        let state = self.state(&name);
        let newest = newest(previous.last_backup.clone(), state.last_success.clone());
        let handled = state
            .handled_request
            .clone()
            .or(previous.last_request.clone());
        let status = BackupStatus {
            last_backup: newest.clone(),
            last_request: handled.clone(),
        };
        let request = tenant.annotations().get(BACKUP_NOW_ANNOTATION).cloned();
        let requested = request.is_some() && request != handled;
        let spec = tenant.spec.backup.as_ref();
        if spec.is_none() && !requested {
            ctx.metrics.forget_backup(&name);
            let status = (status != BackupStatus::default()).then_some(status);
            return Step {
                status,
                ..Step::default()
            };
        }
        let failed =
            |reason, message: String| Observed::failed(types::BACKUP_READY, reason, message);
        let Some(storage) = platform.backup.as_ref() else {
            return Step {
                observed: Some(failed(
                    Reason::BackupNotConfigured,
                    "the Platform has no spec.backup".into(),
                )),
                status: Some(status),
                requeue_in: None,
            };
        };
        let now = Timestamp::now();
        let mut due_in = if requested {
            Some(Duration::ZERO)
        } else {
            None
        };
        if let Some(spec) = spec {
            let schedule = match croner::Cron::from_str(&spec.schedule) {
                Ok(schedule) => schedule,
                Err(e) => {
                    let message = format!("spec.backup.schedule {:?}: {e}", spec.schedule);
                    return Step {
                        observed: Some(failed(Reason::InvalidBackupSchedule, message)),
                        status: Some(status),
                        requeue_in: None,
                    };
                }
            };
            let since = newest
                .as_ref()
                .and_then(|b| b.time.parse::<Timestamp>().ok())
                .or_else(|| tenant.creation_timestamp().map(|t| t.0))
                .unwrap_or(now);
            let next = next_run(&schedule, since);
            let interval = next
                .and_then(|n| next_run(&schedule, n).map(|after| after.as_second() - n.as_second()))
                .unwrap_or(0);
            ctx.metrics.backup(&name, since.as_second(), interval);
            if let Some(next) = next {
                let wait = Duration::from_secs(
                    u64::try_from(next.as_second() - now.as_second()).unwrap_or(0),
                );
                due_in = Some(due_in.map_or(wait, |d| d.min(wait)));
            }
        }
        // A failure is retried with backoff, whatever made the backup due.
        if let Some((_, _, at)) = &state.failure {
            let retry = backoff(state.failures.saturating_sub(1)).saturating_sub(at.elapsed());
            due_in = due_in.map(|d| d.max(retry));
        }
        let outcome = match (&state.failure, &newest) {
            (Some((reason, message, _)), _) => failed(*reason, message.clone()),
            (None, Some(last)) => Observed::ok(
                types::BACKUP_READY,
                Reason::BackupSucceeded,
                format!(
                    "last backup {} ({} bytes) at {}",
                    last.name, last.size_bytes, last.time
                ),
            ),
            (None, None) => failed(Reason::Progressing, "no backup taken yet".into()),
        };
        let mut step = Step {
            observed: Some(outcome),
            status: Some(status),
            requeue_in: due_in,
        };
        if state.running {
            step.requeue_in = Some(POLL);
            return step;
        }
        if due_in != Some(Duration::ZERO) {
            return step;
        }
        // Due, but the database is not there yet: look again soon, not in a hot loop.
        step.requeue_in = Some(POLL);
        let server = match servers.postgres() {
            Some(Ok(server)) if database_ready => server.clone(),
            _ => return step,
        };
        let container = match container(ctx, storage).await {
            Ok(container) => container,
            Err(message) => {
                step.observed = Some(failed(Reason::BackupNotConfigured, message));
                step.requeue_in = None;
                return step;
            }
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            step.requeue_in = Some(POLL + jitter());
            return step;
        };
        self.spawn(
            permit,
            name,
            server,
            container,
            tenant.spec.backup.clone(),
            request,
        );
        step.requeue_in = Some(POLL);
        step
    }

    fn spawn(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        name: String,
        server: PostgresServer,
        container: Container,
        spec: Option<tiqzy_crds::Backup>,
        request: Option<String>,
    ) {
        {
            let mut states = self.by_tenant.lock().expect("backups lock");
            let state = states.entry(name.clone()).or_default();
            state.running = true;
            state.running_for = request.clone();
        }
        let states = self.by_tenant.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = backup::backup(&server, &container, &name).await;
            let pruned = match (&result, &spec) {
                (Ok(_), Some(spec)) => backup::prune(
                    &container,
                    &name,
                    spec.retention.count,
                    spec.retention.days,
                    Timestamp::now(),
                )
                .await
                .map_err(
                    |e| tracing::warn!(tenant = %name, error = %e, "pruning old backups failed"),
                ),
                _ => Ok(Vec::new()),
            };
            let mut states = states.lock().expect("backups lock");
            let state = states.entry(name.clone()).or_default();
            state.running = false;
            match result {
                Ok(written) => {
                    tracing::info!(tenant = %name, backup = %written.name, bytes = written.size,
                        seconds = started.elapsed().as_secs_f64(), pruned = ?pruned.unwrap_or_default(),
                        "backup written");
                    state.last_success = Some(BackupRecord {
                        name: written.name,
                        time: written.time.to_string(),
                        size_bytes: i64::try_from(written.size).unwrap_or(i64::MAX),
                        sha256: written.sha256,
                    });
                    if state.running_for.is_some() {
                        state.handled_request = state.running_for.take();
                    }
                    state.failure = None;
                    state.failures = 0;
                }
                Err(e) => {
                    tracing::warn!(tenant = %name, error = %e, "backup failed");
                    let reason = match &e {
                        BackupError::Storage(_) => Reason::BackupStorageUnreachable,
                        _ => Reason::BackupFailed,
                    };
                    state.failure = Some((reason, format!("backup failed: {e}"), Instant::now()));
                    state.failures += 1;
                }
            }
            drop(permit);
        });
    }

    /// Restores the tenant's database when `spec.restoreFrom` asks for it and it was not done
    /// yet. `Ok` when the storefront may start; `Err` with the reason it may not.
    pub async fn restore(
        &self,
        ctx: &Context,
        tenant: &Tenant,
        platform: &PlatformSpec,
        servers: &Servers,
        database: &Observed,
    ) -> Result<Option<RestoredFrom>, (Reason, String)> {
        let previous = tenant.status.as_ref().and_then(|s| s.restored_from.clone());
        let Some(from) = tenant.spec.restore_from.as_ref() else {
            return Ok(previous);
        };
        if previous.is_some() {
            return Ok(previous);
        }
        if !database.ok {
            return Err((
                Reason::Progressing,
                format!(
                    "waiting for the database before restoring: {}",
                    database.message
                ),
            ));
        }
        let Some(storage) = platform.backup.as_ref() else {
            return Err((
                Reason::BackupNotConfigured,
                "spec.restoreFrom is set but the Platform has no spec.backup".into(),
            ));
        };
        let container = container(ctx, storage)
            .await
            .map_err(|m| (Reason::BackupNotConfigured, m))?;
        let Some(Ok(server)) = servers.postgres() else {
            return Err((Reason::Progressing, "waiting for the database".into()));
        };
        let name = tenant.name_any();
        let source = from.tenant.clone().unwrap_or_else(|| name.clone());
        let _permit = self
            .slots
            .acquire()
            .await
            .expect("the semaphore stays open");
        let started = Instant::now();
        match backup::restore(server, &container, &name, &source, &from.backup).await {
            Ok(restored) => {
                tracing::info!(tenant = %name, source = %restored.tenant, backup = %restored.backup,
                    seconds = started.elapsed().as_secs_f64(), "database restored");
                Ok(Some(RestoredFrom {
                    tenant: restored.tenant,
                    backup: restored.backup,
                }))
            }
            Err(e) => {
                tracing::warn!(tenant = %name, error = %e, "restore did not happen");
                let reason = match &e {
                    RestoreError::Refused(_) => Reason::RestoreRefused,
                    RestoreError::NotFound(_) => Reason::BackupNotFound,
                    RestoreError::Corrupt(_) => Reason::BackupCorrupt,
                    RestoreError::Failed(_) => Reason::RestoreFailed,
                };
                Err((reason, e.to_string()))
            }
        }
    }
}

/// The newer of two records.
fn newest(a: Option<BackupRecord>, b: Option<BackupRecord>) -> Option<BackupRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.time > a.time { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The first run of `schedule` after `since`.
fn next_run(schedule: &croner::Cron, since: Timestamp) -> Option<Timestamp> {
    let since = chrono::DateTime::<chrono::Utc>::from_timestamp(since.as_second(), 0)?;
    let next = schedule.find_next_occurrence(&since, false).ok()?;
    Timestamp::from_second(next.timestamp()).ok()
}

fn jitter() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(0..3000))
}

/// The Platform's container with its credentials. The message names the Secret, never a value.
pub async fn container(ctx: &Context, storage: &BackupStorage) -> Result<Container, String> {
    let auth = match storage.auth.method {
        BackupAuthMethod::SharedKey => {
            let secret = storage
                .auth
                .shared_key_secret_ref
                .as_ref()
                .ok_or("Platform spec.backup.auth.sharedKeySecretRef is not set")?;
            let [account, key] =
                servers::secret_fields(ctx, secret, ["accountName", "accountKey"]).await?;
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| {
                    format!(
                        "Secret {}/{} key \"accountKey\" is not base64",
                        secret.namespace, secret.name
                    )
                })?;
            BlobAuth::SharedKey { account, key }
        }
        BackupAuthMethod::WorkloadIdentity => {
            let config = VaultConfig {
                vault_url: storage.account_url.clone(),
                authority_host: storage.auth.authority_host.clone(),
                tenant_id: storage.auth.tenant_id.clone().unwrap_or_default(),
                client_id: storage.auth.client_id.clone().unwrap_or_default(),
                credential: Credential::WorkloadIdentity {
                    token_file: storage
                        .auth
                        .federated_token_file
                        .clone()
                        .or_else(|| std::env::var("AZURE_FEDERATED_TOKEN_FILE").ok())
                        .unwrap_or_else(|| {
                            "/var/run/secrets/azure/tokens/azure-identity-token".into()
                        })
                        .into(),
                },
            };
            let client = KeyVault::with_transport(config, &ctx.settings.key_vault_transport)?;
            let token = client
                .token("https://storage.azure.com/.default")
                .await
                .map_err(|e| format!("signing in to Entra ID for Blob storage: {e}"))?;
            BlobAuth::Bearer(token)
        }
    };
    Container::new(&storage.account_url, &storage.container, auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_follows_the_schedule() {
        let schedule = croner::Cron::from_str("0 3 * * *").expect("a schedule");
        let since: Timestamp = "2026-12-01T10:00:00Z".parse().expect("a time");
        let next = next_run(&schedule, since).expect("a next run");
        assert_eq!(next.to_string(), "2026-12-02T03:00:00Z");
        assert!(croner::Cron::from_str("every day").is_err());
    }
}
