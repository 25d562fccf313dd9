//! `tiqzy-operator`: parse flags, start the controller.

use clap::Parser;

/// Reconciles Tiqzy Tenants into running storefronts.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
