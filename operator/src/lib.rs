//! The Tiqzy operator: reconciles each `Tenant` into its namespace, workloads and data stores.

pub mod apply;
pub mod backup;
pub mod build;
pub mod cache;
pub mod certificate;
pub mod context;
pub mod controller;
pub mod error;
pub mod external;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod reconcile;
pub mod tenant;
