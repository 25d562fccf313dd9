//! The platform's PostgreSQL and Redis servers, with the admin credentials the Platform points
//! at: read once per reconcile (Secrets through a short-lived cache), never logged.

use tiqzy_crds::{PlatformSpec, RedisServer as RedisSpec, SecretRef};

use crate::context::Context;
use crate::external::StoreError;
use crate::external::postgres::PostgresServer;
use crate::external::redis::{self, RedisServer};
use crate::names;

/// The servers of the platform: `None` when the Platform has no such section, an error when
/// its credentials or address cannot be used.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    pub postgres: Option<Result<PostgresServer, String>>,
    pub redis: Option<Result<RedisServer, String>>,
}

impl Servers {
    pub fn postgres(&self) -> Option<Result<&PostgresServer, StoreError>> {
        self.postgres
            .as_ref()
            .map(|r| r.as_ref().map_err(|e| StoreError::Admin(e.clone())))
    }

    pub fn redis(&self) -> Option<Result<&RedisServer, StoreError>> {
        self.redis
            .as_ref()
            .map(|r| r.as_ref().map_err(|e| StoreError::Admin(e.clone())))
    }
}

/// Reads the admin credentials the Platform points at.
pub async fn servers(ctx: &Context, platform: &PlatformSpec) -> Servers {
    let postgres = match &platform.postgres {
        None => None,
        Some(pg) => Some(
            credentials(ctx, &pg.admin_secret_ref)
                .await
                .map(|(user, password)| PostgresServer {
                    host: pg.host.clone(),
                    port: u16::try_from(pg.port).unwrap_or(5432),
                    admin_user: user,
                    admin_password: password,
                    admin_database: "postgres".to_owned(),
                    ssl_mode: serde_json::to_value(pg.ssl_mode)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "require".into()),
                }),
        ),
    };
    let redis = match &platform.redis {
        None => None,
        Some(r) => Some(redis_server(ctx, r).await),
    };
    Servers { postgres, redis }
}

/// The Redis server of `r`: its address, admin and, for `rediss://`, the CA to trust. A CA
/// that cannot be read is an error, never a reason to connect without it.
async fn redis_server(ctx: &Context, r: &RedisSpec) -> Result<RedisServer, String> {
    let (admin_user, admin_password) = credentials(ctx, &r.admin_secret_ref).await?;
    let (host, port) = names::redis_address(&r.url)?;
    let tls = r.url.starts_with("rediss://");
    let ca_pem = match &r.ca_secret_ref {
        None => None,
        Some(ca) => {
            let [pem] = secret_fields(ctx, ca, [redis::CA_KEY]).await?;
            redis::check_ca_pem(&pem).map_err(|e| {
                format!(
                    "Secret {}/{} key {:?} {e}",
                    ca.namespace,
                    ca.name,
                    redis::CA_KEY
                )
            })?;
            Some(pem)
        }
    };
    Ok(RedisServer {
        host,
        port,
        admin_user,
        admin_password,
        tls,
        ca_pem,
    })
}

async fn credentials(ctx: &Context, r: &SecretRef) -> Result<(String, String), String> {
    let [user, password] = secret_fields(ctx, r, ["username", "password"]).await?;
    Ok((user, password))
}

/// The values of `keys` in a Secret the Platform refers to; the error names the Secret and
/// the missing key, never a value.
pub async fn secret_fields<const N: usize>(
    ctx: &Context,
    r: &SecretRef,
    keys: [&str; N],
) -> Result<[String; N], String> {
    let data = ctx.platform_secrets.get(&ctx.client, r).await?;
    let mut values = Vec::with_capacity(N);
    for key in keys {
        let value = data
            .get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("Secret {}/{} has no key {key:?}", r.namespace, r.name))?;
        values.push(value);
    }
    Ok(values.try_into().expect("one value per key"))
}
