//! Loopback ports for the servers the harness starts.
//!
//! A port the kernel picks for `bind(0)` comes from the ephemeral range, the same range the
//! kernel draws the source ports of outgoing connections from. Released and handed to a server
//! a moment later, it can meanwhile be the source port of any client on the machine, and the
//! server fails with "address already in use" (stripe-mock did, once, in CI). So the harness
//! picks its ports below the ephemeral range and below Kubernetes' NodePort range, where no
//! client is ever given one, and reserves each with a lock file held until the process exits,
//! so that test binaries running side by side never choose the same port.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The lowest port handed out; the highest is below both the ephemeral and the NodePort range.
const LOWEST: u16 = 20_000;
const BELOW_NODE_PORTS: u16 = 30_000;

/// The lock files of this process's ports, held (and so the ports reserved) until it exits.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A TCP port free on every address of this machine, reserved for this process: no other
/// caller of `free_port`, in this process or another, gets it while this process lives.
pub fn free_port() -> Result<u16> {
    let highest = ephemeral_start()
        .unwrap_or(BELOW_NODE_PORTS)
        .min(BELOW_NODE_PORTS);
    let Some(span) = highest.checked_sub(LOWEST).filter(|span| *span >= 1_000) else {
        // A machine whose ephemeral range starts low: only the kernel knows a free port.
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
        return Ok(listener.local_addr()?.port());
    };
    let directory = std::env::temp_dir().join("tiqzy-e2e-ports");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    // Processes start their search at different places, so they rarely meet on a lock.
    let start = u32::from(span) * (std::process::id() % 997) / 997;
    for step in 0..u32::from(span) {
        let port = LOWEST + u16::try_from((start + step) % u32::from(span))?;
        if let Some(lock) = reserve(directory.join(port.to_string()))?
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            RESERVED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lock);
            return Ok(port);
        }
    }
    bail!("no free port between {LOWEST} and {highest}")
}

/// The lock on `path`, or `None` when another process (or an earlier call) holds it.
fn reserve(path: PathBuf) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Succeeds once something accepts TCP connections on the loopback port.
pub async fn accepting(port: u16) -> Result<()> {
    accepting_on("127.0.0.1", port).await
}

/// Succeeds once something accepts TCP connections on `address:port`.
pub async fn accepting_on(address: &str, port: u16) -> Result<()> {
    tokio::net::TcpStream::connect((address, port))
        .await
        .with_context(|| format!("connecting to {address}:{port}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice_and_stay_out_of_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a port")).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        let ephemeral = ephemeral_start().expect("this machine's ephemeral range");
        assert!(
            ports
                .iter()
                .all(|p| (LOWEST..ephemeral.min(BELOW_NODE_PORTS)).contains(p)),
            "{ports:?} strays into the ephemeral or NodePort range (from {ephemeral})"
        );
    }
}
