//! What the operator's subcommands (`replay`, `outbox`) need: the service's database, and for
//! placing events the Tenants as the service sees them.

use secrecy::ExposeSecret;

use crate::replay::{Placing, Replayed, Selection};

/// The database, without migrating it (the running service did).
pub async fn connect(config: &crate::Config) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(config.database_url.expose_secret())
        .await
        .map_err(|e| anyhow::anyhow!("connecting to DATABASE_URL: {e}"))
}

#[derive(Debug, Clone)]
pub struct Tools {
    pub db: sqlx::PgPool,
    pub placing: Placing,
}

impl Tools {
    pub async fn connect(config: &crate::Config, kube: kube::Client) -> anyhow::Result<Self> {
        let db = connect(config).await?;
        let registry = crate::registry::Registry::start(kube).await?;
        Ok(Self {
            db,
            placing: Placing {
                registry,
                livemode: crate::webhook::key_is_live(&config.stripe_secret_key),
            },
        })
    }

    /// The selection the command line names; a tenant may be given by its namespace.
    pub fn selection(
        &self,
        event: Option<String>,
        rejected: bool,
        unroutable: bool,
        tenant: Option<&str>,
    ) -> Selection {
        let tenant = tenant.map(|t| self.tenant_named(t));
        match (event, rejected, unroutable) {
            (Some(id), _, _) => Selection::Event(id),
            (None, true, _) => Selection::Rejected { tenant },
            (None, false, _) => Selection::Unroutable { tenant },
        }
    }

    fn tenant_named(&self, given: &str) -> String {
        let registry = &self.placing.registry;
        match given.strip_prefix("tiqzy-") {
            Some(name) if !registry.exists(given) && registry.exists(name) => name.to_owned(),
            _ => given.to_owned(),
        }
    }

    pub async fn replay(&self, selection: &Selection) -> anyhow::Result<Replayed> {
        crate::replay::replay(&self.db, &self.placing, selection).await
    }
}
