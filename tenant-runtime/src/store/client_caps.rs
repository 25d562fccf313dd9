//! The per-client cap on tickets held at once in one event: live holds plus reserved resale
//! listings (an unpaid order keeps its hold or reservation, so it counts until paid or lapsed).
//!
//! A client's hold or reservation is counted and placed inside one transaction that first takes
//! an advisory lock named after the client, so two requests of one client are decided one after
//! the other and never both see room for the last tickets of their allowance. Different clients
//! never wait for each other (unless their hashes collide, which only makes them take turns).

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// The class of every advisory lock taken here (`pg_advisory_xact_lock(class, key)`), apart
/// from the single-number keys sqlx's migrator uses.
pub(super) const LOCK_CLASS: i32 = 0x7471_6363;

/// One client and how many tickets of one event they may hold at once.
#[derive(Debug, Clone)]
pub struct ClientCap {
    /// What is stored for the client: a hash of their address, never the address.
    pub client_hash: Vec<u8>,
    pub max_tickets: i32,
}

impl ClientCap {
    pub fn new(client: &str, max_tickets: u32) -> Self {
        Self {
            client_hash: Sha256::digest(client.as_bytes()).to_vec(),
            max_tickets: i32::try_from(max_tickets).unwrap_or(i32::MAX),
        }
    }

    /// A transaction in which this client's holds and reservations are counted and placed
    /// alone: `BEGIN` and the lock in one round trip.
    pub async fn begin(&self, db: &PgPool) -> AppResult<Transaction<'static, Postgres>> {
        let key = lock_key(&self.client_hash);
        // Both numbers are ours (a constant and an i32), never text from a request.
        Ok(db
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {key})"
            )))
            .await?)
    }

    /// Refuses `adding` more tickets of the event `of` belongs to when the client would then
    /// hold more than the cap; nothing changes either way. An unknown ticket type or listing
    /// passes here and is refused by whatever reserves it.
    pub async fn check(&self, conn: &mut PgConnection, of: CapOf, adding: i32) -> AppResult<()> {
        let (ticket_type, listing) = match of {
            CapOf::TicketType(id) => (Some(id), None),
            CapOf::Listing(id) => (None, Some(id)),
        };
        let held = sqlx::query_scalar!(
            "WITH event AS (
                 SELECT event_id FROM ticket_types WHERE id = $2
                 UNION ALL
                 SELECT tt.event_id FROM listings l
                 JOIN tickets t ON t.id = l.ticket_id
                 JOIN ticket_types tt ON tt.id = t.ticket_type_id
                 WHERE l.id = $3
             )
             SELECT (SELECT coalesce(sum(h.quantity), 0) FROM holds h
                     JOIN ticket_types tt ON tt.id = h.ticket_type_id
                     WHERE h.client_hash = $1 AND h.state = 'active' AND h.expires_at > now()
                       AND tt.event_id IN (SELECT event_id FROM event))
                  + (SELECT count(*) FROM listings l
                     JOIN tickets t ON t.id = l.ticket_id
                     JOIN ticket_types tt ON tt.id = t.ticket_type_id
                     WHERE l.reserved_by_client = $1 AND l.state = 'reserved'
                       AND l.reserved_until > now()
                       AND tt.event_id IN (SELECT event_id FROM event)) AS \"held!\"",
            &self.client_hash,
            ticket_type,
            listing,
        )
        .fetch_one(&mut *conn)
        .await?;
        if held + i64::from(adding) > i64::from(self.max_tickets) {
            return Err(over_cap(self.max_tickets, held));
        }
        Ok(())
    }
}

/// What is about to be held: tickets of a ticket type, or a resale listing's ticket.
#[derive(Debug, Clone, Copy)]
pub enum CapOf {
    TicketType(Uuid),
    Listing(Uuid),
}

/// The advisory lock key of a client: the first four bytes of its hash.
pub(super) fn lock_key(client_hash: &[u8]) -> i32 {
    let mut key = [0u8; 4];
    key.copy_from_slice(&client_hash[..4]);
    i32::from_be_bytes(key)
}

/// 409 with the cap and what the client holds now.
pub(super) fn over_cap(max_tickets: i32, held: i64) -> AppError {
    AppError::conflict(
        "ticket-cap",
        format!(
            "one buyer may hold at most {max_tickets} tickets of this event at once (in \
             reservations and unpaid orders); you hold {held} now. Pay for or release what \
             you hold, or wait until it lapses"
        ),
    )
}
