//! The tenant runtime: one tenant's storefront, JSON API and admin API, on PostgreSQL and
//! (optionally) Redis.

pub mod auth;
pub mod boxoffice;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod identity;
pub mod locale;
pub mod mail;
pub mod metrics;
pub mod payments;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod sweeper;
pub mod telemetry;

pub use startup::Application;
