//! The Tiqzy operator: reconciles each `Tenant` into its namespace, workloads and data stores.

pub mod external;
