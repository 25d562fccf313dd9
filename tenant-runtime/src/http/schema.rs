//! Shapes that appear only in the OpenAPI document.

use utoipa::ToSchema;

/// An amount of money: integer minor units (cents) and an ISO 4217 currency.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "never built; only its schema is published")]
pub struct MoneySchema {
    #[schema(example = 2500)]
    pub amount_minor: i64,
    #[schema(example = "EUR")]
    pub currency: String,
}
