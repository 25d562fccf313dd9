//! Embeds the storefront runtime's migrations (tenant-runtime/migrations), which a restore
//! replays to create the schema a backup's rows go into.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time, not compiled in: Cargo reuses a build script built for the same
    // package in another checkout that shares the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("../tenant-runtime/migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tenant-runtime/migrations")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut out = String::from("pub const MIGRATIONS: &[Migration] = &[\n");
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name");
        let (version, _) = stem.split_once('_').expect("<version>_<description>.sql");
        let version: i64 = version.parse().expect("a numeric migration version");
        let path = path.canonicalize().expect("the migration's path");
        writeln!(
            out,
            "    Migration {{ version: {version}, sql: include_str!({:?}) }},",
            path.display().to_string()
        )
        .expect("a string");
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("migrations.rs");
    std::fs::write(target, out).expect("write migrations.rs");
}
