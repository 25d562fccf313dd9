//! The runtime's integration tests, in one binary so the shared harness (PostgreSQL, Redis
//! and the rest of the local platform) starts once; every test gets its own database.

mod api;
mod baskets;
mod browser;
mod cache;
mod identity;
mod inventory;
mod mail;
mod money;
mod monitoring;
mod on_sale;
mod payments;
mod payments_service;
mod resale;
mod scalpers;
mod slow_clients;
mod startup;
mod storefront;
mod support;
mod telemetry;
mod traces;
mod webhooks;
