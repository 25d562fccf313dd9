//! The box office: what buyers, resellers and door staff can do, as plain functions over the
//! app's state. The JSON API and the storefront pages both call these and only shape what
//! they return into JSON or HTML; caching of whole responses stays with them.

pub mod catalog;
pub mod door;
pub mod hold;
pub mod order;
pub mod resale;
