//! A pod's address made real: kwok's pods run nothing, yet a router must reach a backend at
//! the address the Service's EndpointSlices list. [`PodBackend`] creates a network namespace
//! holding that address (`ip netns` and a veth pair, Debian iproute2; root only) and serves
//! HTTP there, answering with what it received so a test sees what the router forwarded.
//!
//! The API server refuses loopback addresses in EndpointSlices, so the address must be the
//! pod's own: nothing in the operator or the cluster is changed for the test. The route to the
//! address is the host's, so one backend per address can exist on a machine at a time (two
//! harnesses running at once hand out the same kwok pod IPs).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The host's end of every veth pair: the netns routes back to it.
const HOST_ADDRESS: &str = "192.0.2.1";

/// An HTTP server at `address:port` in a network namespace of its own. Dropping it stops
/// the server and removes the namespace and its veth pair.
#[derive(Debug)]
pub struct PodBackend {
    pub address: Ipv4Addr,
    pub port: u16,
    netns: String,
    host_link: String,
    pod_link: String,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl PodBackend {
    /// Gives this host a route to `address` through a new network namespace and serves HTTP
    /// on `address:port` inside it. Every answer is 200 with a body naming the backend and
    /// echoing the request line, `Host` and `X-Forwarded-Proto`.
    pub fn start(address: Ipv4Addr, port: u16) -> Result<Self> {
        remove_stale_namespaces();
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut backend = Self {
            address,
            port,
            netns: format!("tiqzy-{pid}-{n}"),
            host_link: format!("tq{pid}h{n}"),
            pod_link: format!("tq{pid}p{n}"),
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        // On error the namespace created so far goes with `backend`'s drop.
        backend.wire()?;
        backend.server = Some(backend.serve()?);
        Ok(backend)
    }

    fn wire(&self) -> Result<()> {
        let (ns, host, peer) = (&self.netns, &self.host_link, &self.pod_link);
        let pod = format!("{}/32", self.address);
        let host_address = format!("{HOST_ADDRESS}/32");
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns,
        ])?;
        ip(&["addr", "add", &host_address, "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        ip(&["route", "add", &pod, "dev", host, "src", HOST_ADDRESS])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "set", peer, "up"])?;
        ip(&["-n", ns, "addr", "add", &pod, "dev", peer])?;
        ip(&["-n", ns, "route", "add", &host_address, "dev", peer])?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            HOST_ADDRESS,
            "dev",
            peer,
        ])
    }

    /// Binds the listener from a thread that entered the namespace (a socket stays in the
    /// namespace it was made in) and serves until dropped.
    fn serve(&self) -> Result<JoinHandle<()>> {
        let path = format!("/run/netns/{}", self.netns);
        let (address, port, stop) = (self.address, self.port, self.stop.clone());
        let (ready, bound) = std::sync::mpsc::channel();
        let server = std::thread::Builder::new()
            .name(format!("backend-{}", self.netns))
            .spawn(move || {
                let listener = std::fs::File::open(&path)
                    .with_context(|| format!("opening {path}"))
                    .and_then(|netns| {
                        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .context("entering the network namespace")
                    })
                    .and_then(|()| {
                        let listener = TcpListener::bind((address, port))
                            .with_context(|| format!("binding {address}:{port}"))?;
                        listener.set_nonblocking(true)?;
                        Ok(listener)
                    });
                let listener = match listener {
                    Ok(listener) => {
                        let _ = ready.send(Ok(()));
                        listener
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            std::thread::spawn(move || answer(stream, address, port));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        bound
            .recv()
            .context("the backend thread did not report")??;
        Ok(server)
    }
}

impl Drop for PodBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// One request, one answer, then the connection closes.
fn answer(stream: TcpStream, address: Ipv4Addr, port: u16) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut host, mut proto) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "host" => host = value.trim().to_owned(),
                "x-forwarded-proto" => proto = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let body = format!(
        "backend {address}:{port}\nrequest {}\nhost {host}\nx-forwarded-proto {proto}\n",
        request_line.trim()
    );
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `ip <args>`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes namespaces left by test processes that are gone (their veth pairs go with them).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("tiqzy-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
