//! Sign-in links and sessions, stored as hashes of their secrets, and the mail limits counted
//! from the links sent in the last hour.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::AppResult;

type Tx<'a> = Transaction<'a, Postgres>;

/// A sign-in link about to be mailed.
#[derive(Debug, Clone, Copy)]
pub struct NewSignIn<'a> {
    pub token_hash: &'a [u8],
    pub email: &'a str,
    pub client_hash: &'a [u8],
    pub ttl_secs: f64,
    /// Links one address may receive per hour.
    pub per_address: u32,
    /// Links one client may ask for per hour.
    pub per_client: u32,
}

/// What asking for a link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInStored {
    Stored,
    /// Nothing stored: the address had its links for this hour; one more in `retry_after_secs`.
    AddressLimited {
        retry_after_secs: i64,
    },
    /// Nothing stored: the client asked for its links for this hour.
    ClientLimited {
        retry_after_secs: i64,
    },
}

/// Stores the link unless the address or the client is over its hourly limit. Concurrent
/// requests for one address (and one client) are serialised by advisory locks, always taken
/// address first, so the counts are exact across replicas.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn store_sign_in(tx: &mut Tx<'_>, new: &NewSignIn<'_>) -> AppResult<SignInStored> {
    sqlx::query_scalar!(
        "SELECT 1 AS \"locked!\" FROM (SELECT pg_advisory_xact_lock(1, hashtext($1))) address,
                (SELECT pg_advisory_xact_lock(2, hashtext(encode($2, 'hex')))) client",
        new.email,
        new.client_hash,
    )
    .fetch_one(&mut **tx)
    .await?;
    // The newest `limit`-th link of the last hour: while it exists the limit is reached, and
    // once it is an hour old the next link may go.
    let by_address = sqlx::query_scalar!(
        "SELECT greatest(1, ceil(extract(epoch FROM created_at + interval '1 hour' - now())))::bigint
                AS \"retry_after!\"
         FROM sign_in_tokens
         WHERE email = $1 AND created_at > now() - interval '1 hour'
         ORDER BY created_at DESC OFFSET $2 LIMIT 1",
        new.email,
        i64::from(new.per_address) - 1,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(retry_after_secs) = by_address {
        return Ok(SignInStored::AddressLimited { retry_after_secs });
    }
    let by_client = sqlx::query_scalar!(
        "SELECT greatest(1, ceil(extract(epoch FROM created_at + interval '1 hour' - now())))::bigint
                AS \"retry_after!\"
         FROM sign_in_tokens
         WHERE client_hash = $1 AND created_at > now() - interval '1 hour'
         ORDER BY created_at DESC OFFSET $2 LIMIT 1",
        new.client_hash,
        i64::from(new.per_client) - 1,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(retry_after_secs) = by_client {
        return Ok(SignInStored::ClientLimited { retry_after_secs });
    }
    sqlx::query!(
        "INSERT INTO sign_in_tokens (token_hash, email, client_hash, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        new.token_hash,
        new.email,
        new.client_hash,
        new.ttl_secs,
    )
    .execute(&mut **tx)
    .await?;
    Ok(SignInStored::Stored)
}

/// Uses up a live link: its address, once; `None` when it is unknown, used or expired.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn use_sign_in(tx: &mut Tx<'_>, token_hash: &[u8]) -> AppResult<Option<String>> {
    Ok(sqlx::query_scalar!(
        "UPDATE sign_in_tokens SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING email",
        token_hash,
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// Starts a session for a verified address; returns when it ends.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn start_session(
    tx: &mut Tx<'_>,
    token_hash: &[u8],
    email: &str,
    ttl_secs: f64,
) -> AppResult<DateTime<Utc>> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO sessions (token_hash, email, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING expires_at",
        token_hash,
        email,
        ttl_secs,
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// The live session's address and end.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_session(
    db: &PgPool,
    token_hash: &[u8],
) -> AppResult<Option<(String, DateTime<Utc>)>> {
    Ok(sqlx::query!(
        "SELECT email, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > now()",
        token_hash,
    )
    .fetch_optional(db)
    .await?
    .map(|r| (r.email, r.expires_at)))
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn end_session(db: &PgPool, token_hash: &[u8]) -> AppResult<()> {
    sqlx::query!("DELETE FROM sessions WHERE token_hash = $1", token_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets ended sessions, and links old enough to count for no limit.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn forget_stale(db: &PgPool) -> AppResult<()> {
    sqlx::query!("DELETE FROM sessions WHERE expires_at <= now()")
        .execute(db)
        .await?;
    sqlx::query!("DELETE FROM sign_in_tokens WHERE created_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    Ok(())
}
