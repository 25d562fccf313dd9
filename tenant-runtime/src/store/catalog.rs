//! Events and their ticket types, as staff create and edit them and buyers browse them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::money;
use crate::domain::{Money, Slug};
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub slug: Slug,
    pub title: String,
    pub venue: String,
    pub description: String,
    pub image_url: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub cancelled: bool,
}

/// What staff send to create or replace an event's details.
#[derive(Debug, Clone)]
pub struct EventDetails {
    pub title: String,
    pub venue: String,
    pub description: String,
    pub image_url: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketType {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    #[schema(value_type = crate::http::schema::MoneySchema)]
    pub price: Money,
    pub capacity: i32,
    pub sold: i32,
    pub held: i32,
    pub available: i32,
    pub per_order_limit: i32,
    pub sales_start: DateTime<Utc>,
    pub sales_end: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TicketTypeDetails {
    pub name: String,
    pub price: Money,
    pub capacity: i32,
    pub per_order_limit: i32,
    pub sales_start: DateTime<Utc>,
    pub sales_end: DateTime<Utc>,
}

struct EventRow {
    id: Uuid,
    slug: String,
    title: String,
    venue: String,
    description: String,
    image_url: Option<String>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
}

impl TryFrom<EventRow> for Event {
    type Error = AppError;
    fn try_from(r: EventRow) -> AppResult<Self> {
        Ok(Self {
            id: r.id,
            slug: Slug::parse(&r.slug).map_err(anyhow::Error::from)?,
            title: r.title,
            venue: r.venue,
            description: r.description,
            image_url: r.image_url,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            cancelled: r.cancelled_at.is_some(),
        })
    }
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn create_event(
    db: impl PgExecutor<'_>,
    slug: &Slug,
    details: &EventDetails,
) -> AppResult<Event> {
    let row = sqlx::query_as!(
        EventRow,
        "INSERT INTO events (id, slug, title, venue, description, image_url, starts_at, ends_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, slug, title, venue, description, image_url, starts_at, ends_at, cancelled_at",
        Uuid::new_v4(),
        slug.as_str(),
        details.title,
        details.venue,
        details.description,
        details.image_url,
        details.starts_at,
        details.ends_at,
    )
    .fetch_one(db)
    .await?;
    row.try_into()
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_event(
    db: impl PgExecutor<'_>,
    slug: &Slug,
    details: &EventDetails,
) -> AppResult<Event> {
    let row = sqlx::query_as!(
        EventRow,
        "UPDATE events SET title = $2, venue = $3, description = $4, image_url = $5,
                starts_at = $6, ends_at = $7, updated_at = now()
         WHERE slug = $1
         RETURNING id, slug, title, venue, description, image_url, starts_at, ends_at, cancelled_at",
        slug.as_str(),
        details.title,
        details.venue,
        details.description,
        details.image_url,
        details.starts_at,
        details.ends_at,
    )
    .fetch_optional(db)
    .await?;
    row.ok_or(AppError::not_found("event"))?.try_into()
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_event(db: impl PgExecutor<'_>, slug: &str) -> AppResult<Option<Event>> {
    let row = sqlx::query_as!(
        EventRow,
        "SELECT id, slug, title, venue, description, image_url, starts_at, ends_at, cancelled_at
         FROM events WHERE slug = $1",
        slug,
    )
    .fetch_optional(db)
    .await?;
    row.map(Event::try_from).transpose()
}

/// Events a buyer can still go to, soonest first.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn upcoming_events(db: impl PgExecutor<'_>) -> AppResult<Vec<Event>> {
    let rows = sqlx::query_as!(
        EventRow,
        "SELECT id, slug, title, venue, description, image_url, starts_at, ends_at, cancelled_at
         FROM events WHERE cancelled_at IS NULL AND ends_at > now()
         ORDER BY starts_at, slug LIMIT 200",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Event::try_from).collect()
}

struct TicketTypeRow {
    id: Uuid,
    event_id: Uuid,
    name: String,
    price_minor: i64,
    currency: String,
    capacity: i32,
    sold: i32,
    held: i32,
    per_order_limit: i32,
    sales_start: DateTime<Utc>,
    sales_end: DateTime<Utc>,
}

impl TryFrom<TicketTypeRow> for TicketType {
    type Error = AppError;
    fn try_from(r: TicketTypeRow) -> AppResult<Self> {
        Ok(Self {
            id: r.id,
            event_id: r.event_id,
            name: r.name,
            price: money(r.price_minor, &r.currency)?,
            capacity: r.capacity,
            sold: r.sold,
            held: r.held,
            available: r.capacity - r.sold - r.held,
            per_order_limit: r.per_order_limit,
            sales_start: r.sales_start,
            sales_end: r.sales_end,
        })
    }
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn create_ticket_type(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    details: &TicketTypeDetails,
) -> AppResult<TicketType> {
    let row = sqlx::query_as!(
        TicketTypeRow,
        "INSERT INTO ticket_types (id, event_id, name, price_minor, currency, capacity,
                                   per_order_limit, sales_start, sales_end)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING id, event_id, name, price_minor, currency as \"currency!\", capacity, sold, held,
                   per_order_limit, sales_start, sales_end",
        Uuid::new_v4(),
        event_id,
        details.name,
        details.price.amount_minor,
        details.price.currency.as_str() as &str,
        details.capacity,
        details.per_order_limit,
        details.sales_start,
        details.sales_end,
    )
    .fetch_one(db)
    .await?;
    row.try_into()
}

/// Changing capacity below what is sold and held fails on the table's CHECK, as a conflict.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn update_ticket_type(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    id: Uuid,
    details: &TicketTypeDetails,
) -> AppResult<TicketType> {
    let row = sqlx::query_as!(
        TicketTypeRow,
        "UPDATE ticket_types SET name = $3, price_minor = $4, capacity = $5,
                per_order_limit = $6, sales_start = $7, sales_end = $8
         WHERE event_id = $1 AND id = $2
         RETURNING id, event_id, name, price_minor, currency as \"currency!\", capacity, sold, held,
                   per_order_limit, sales_start, sales_end",
        event_id,
        id,
        details.name,
        details.price.amount_minor,
        details.capacity,
        details.per_order_limit,
        details.sales_start,
        details.sales_end,
    )
    .fetch_optional(db)
    .await?;
    row.ok_or(AppError::not_found("ticket type"))?.try_into()
}

/// Ticket types with their counters as of now; expired holds are released first by callers
/// that show availability (see `holds::release_expired_for_event`).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn ticket_types(db: impl PgExecutor<'_>, event_id: Uuid) -> AppResult<Vec<TicketType>> {
    let rows = sqlx::query_as!(
        TicketTypeRow,
        "SELECT id, event_id, name, price_minor, currency as \"currency!\", capacity, sold, held,
                per_order_limit, sales_start, sales_end
         FROM ticket_types WHERE event_id = $1 ORDER BY price_minor, name",
        event_id,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(TicketType::try_from).collect()
}

/// The slug of the event a ticket type belongs to.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn event_slug_of(
    db: impl PgExecutor<'_>,
    ticket_type_id: Uuid,
) -> AppResult<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT e.slug FROM ticket_types tt JOIN events e ON e.id = tt.event_id WHERE tt.id = $1",
        ticket_type_id,
    )
    .fetch_optional(db)
    .await?)
}
