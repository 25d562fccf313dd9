//! The Tiqzy API: the `Tenant` and `Platform` custom resources of group `tiqzy.io`.

/// API group of every Tiqzy resource.
pub const GROUP: &str = "tiqzy.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
