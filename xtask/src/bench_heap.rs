//! `cargo xtask bench operator --heap-profile FILE`: the operator built with its
//! `heap-profile` feature (dhat) writes every allocation's call stack to FILE when it exits;
//! this reads the file back and prints where the memory live at the peak, and at the end, was
//! allocated.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The parts of dhat's JSON output (format version 2) read here.
#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(rename = "dhatFileVersion")]
    version: u32,
    /// Program points: one per distinct allocating call stack.
    pps: Vec<Point>,
    /// Frame descriptions, referred to by index.
    ftbl: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Point {
    /// Bytes allocated over the whole run.
    tb: u64,
    /// Bytes live at the global peak.
    gb: u64,
    /// Bytes live at the end.
    eb: u64,
    /// Frames, innermost first.
    fs: Vec<usize>,
}

/// Waits for the operator `pid` (already sent SIGTERM) to have written `file`: the process
/// is gone or a zombie, and the file is there.
pub fn wait_for(pid: u32, file: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let exited =
            stat.is_empty() || stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        if exited && file.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the operator wrote no heap profile to {}", file.display())
}

/// Lines telling where the live bytes at the peak and at the end were allocated: the `top`
/// call sites of each, by the innermost frame of the operator's own code (or of a library
/// when none is on the stack).
pub fn summary(file: &Path, top: usize) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let profile: Profile = serde_json::from_str(&text).context("reading the dhat profile")?;
    if profile.version != 2 {
        bail!("dhat file version {} (expected 2)", profile.version);
    }
    let mut lines = Vec::new();
    let total = |f: fn(&Point) -> u64| profile.pps.iter().map(f).sum::<u64>();
    lines.push(format!(
        "heap-profile live_peak_mib={:.1} live_end_mib={:.1} allocated_total_mib={:.1} call_sites={}",
        mib(total(|p| p.gb)),
        mib(total(|p| p.eb)),
        mib(total(|p| p.tb)),
        profile.pps.len()
    ));
    for (label, bytes) in [
        ("peak", (|p: &Point| p.gb) as fn(&Point) -> u64),
        ("end", |p: &Point| p.eb),
    ] {
        let mut by_site: std::collections::BTreeMap<String, u64> = Default::default();
        for point in &profile.pps {
            *by_site.entry(site(&profile, point)).or_default() += bytes(point);
        }
        let mut sites: Vec<_> = by_site.into_iter().filter(|(_, b)| *b > 0).collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, b) in sites.into_iter().take(top) {
            lines.push(format!("heap-{label} mib={:.2} at {site}", mib(b)));
        }
    }
    Ok(lines)
}

/// The frame that says who allocated: the innermost one in Tiqzy's code, else the innermost
/// one outside the allocator and the standard library's collections, with the two frames
/// around it.
fn site(profile: &Profile, point: &Point) -> String {
    let frames: Vec<&str> = point
        .fs
        .iter()
        .filter_map(|&i| profile.ftbl.get(i).map(|f| function(f)))
        .collect();
    let own = frames.iter().position(|f| f.starts_with("tiqzy_"));
    let library = || {
        frames.iter().position(|f| {
            ![
                "alloc::",
                "core::",
                "std::",
                "dhat::",
                "hashbrown::",
                "<alloc::",
                "<core::",
                "<std::",
                "<dhat::",
                "<hashbrown::",
                "[root]",
            ]
            .iter()
            .any(|p| f.starts_with(p))
        })
    };
    let Some(at) = own.or_else(library) else {
        return frames.first().map_or_else(String::new, |f| (*f).to_owned());
    };
    frames[at.saturating_sub(1)..(at + 2).min(frames.len())].join(" < ")
}

/// `0x1234: name (file:line:col)` → `name`, without the symbol hash.
fn function(frame: &str) -> &str {
    let name = frame.split_once(": ").map_or(frame, |(_, rest)| rest);
    let name = name.split(" (").next().unwrap_or(name);
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_as_its_function() {
        assert_eq!(
            function(
                "0x5581: tiqzy_operator::cache::reflected::h0123456789abcdef (src/cache.rs:1:2)"
            ),
            "tiqzy_operator::cache::reflected"
        );
        assert_eq!(function("[root]"), "[root]");
    }

    #[test]
    fn live_bytes_are_told_by_the_operators_own_frame() {
        let profile: Profile = serde_json::from_value(serde_json::json!({
            "dhatFileVersion": 2,
            "pps": [
                { "tb": 300, "gb": 200, "eb": 100, "fs": [1, 2, 3] },
                { "tb": 50, "gb": 0, "eb": 0, "fs": [1, 4, 3] }
            ],
            "ftbl": ["[root]", "0x1: <dhat::Alloc as core::alloc::global::GlobalAlloc>::alloc", "0x2: tiqzy_operator::cache::keep",
                     "0x3: tokio::runtime::park", "0x4: hyper::proto::h1::read"]
        }))
        .expect("profile");
        assert_eq!(
            site(&profile, &profile.pps[0]),
            "<dhat::Alloc as core::alloc::global::GlobalAlloc>::alloc < tiqzy_operator::cache::keep < tokio::runtime::park"
        );
        assert_eq!(
            site(&profile, &profile.pps[1]),
            "<dhat::Alloc as core::alloc::global::GlobalAlloc>::alloc < hyper::proto::h1::read < tokio::runtime::park"
        );
    }
}
