//! `tiqzy-runtime`: serves one tenant's storefront.

fn main() {}
