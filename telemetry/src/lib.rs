//! What the operator, the storefront runtime and the payments service share about
//! themselves: one log format (`logs`), traces to an OpenTelemetry collector (`otel`), and
//! error reports to Sentry (`errors`) that pass through one scrubber (`scrub`) before they
//! leave the process.
//!
//! The field names are documented for the log stack in docs/logs-and-errors.md.

pub mod errors;
pub mod logs;
pub mod otel;
pub mod scrub;
pub mod trace;

pub use errors::{Reporter, Where};
