//! Free loopback ports, chosen by the kernel.

use std::net::TcpListener;

use anyhow::{Context, Result};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
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
