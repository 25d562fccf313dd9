//! The tenant runtime: one tenant's storefront, JSON API and Stripe webhooks.
