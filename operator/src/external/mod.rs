//! State outside Kubernetes that a tenant owns: its PostgreSQL database and role, its Redis
//! ACL user. Each module offers idempotent `ensure_*` and `remove_*` functions.

pub mod postgres;
pub mod redis;
