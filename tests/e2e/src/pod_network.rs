//! Connections made as a pod makes them: from the network namespace of the pod's sandbox, so
//! the packets carry the pod's address and its NetworkPolicies apply to them. Tests use it to
//! try what a pod on the real node may and may not reach, without a shell in any image, and
//! what names it resolves through the cluster DNS.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use crate::node::RealNode;

impl RealNode {
    /// The PID of the running sandbox (pause process) of pod `namespace/name`: its network
    /// namespace is the pod's.
    pub fn pod_sandbox_pid(&self, namespace: &str, name: &str) -> Result<u32> {
        let filter = format!(
            "labels.\"io.cri-containerd.kind\"==sandbox,\
             labels.\"io.kubernetes.pod.namespace\"==\"{namespace}\",\
             labels.\"io.kubernetes.pod.name\"==\"{name}\""
        );
        let out = self
            .ctr()
            .args(["containers", "ls", "-q"])
            .arg(&filter)
            .output()
            .context("running ctr containers ls")?;
        let sandboxes = String::from_utf8_lossy(&out.stdout).into_owned();
        let out = self
            .ctr()
            .args(["tasks", "ls"])
            .output()
            .context("running ctr tasks ls")?;
        // TASK PID STATUS
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (task, pid, status) = (words.next()?, words.next()?, words.next()?);
                (status == "RUNNING" && sandboxes.lines().any(|s| s.trim() == task))
                    .then(|| pid.parse().ok())
                    .flatten()
            })
            .next()
            .map_or_else(
                || bail!("no running sandbox for pod {namespace}/{name}"),
                Ok,
            )
    }
}

/// Opens a TCP connection to `address` from the network namespace of process `pid` (a pod's
/// sandbox), waiting at most `timeout`. The socket stays in that namespace.
pub fn connect_from(
    pid: u32,
    address: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    std::thread::spawn(move || {
        // Only this short-lived thread enters the pod's namespace.
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        setns(netns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        TcpStream::connect_timeout(&address, timeout)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread panicked")))
}

/// Asks the DNS server `server` for the IPv4 addresses of `name` from the network namespace
/// of process `pid` (a pod's sandbox), as the pod's resolver would: one UDP query, waiting at
/// most `timeout`. An empty list is an answer without addresses (NXDOMAIN, REFUSED).
pub fn resolve_from(
    pid: u32,
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> std::io::Result<Vec<Ipv4Addr>> {
    let query = dns_query(name);
    std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        setns(netns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(timeout))?;
        socket.connect(server)?;
        socket.send(&query)?;
        let mut answer = [0u8; 1500];
        let n = socket.recv(&mut answer)?;
        Ok(dns_addresses(&answer[..n]))
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the resolving thread panicked")))
}

/// A DNS query (id 0x7419, recursion desired) for the A records of `name`.
fn dns_query(name: &str) -> Vec<u8> {
    let mut query = vec![0x74, 0x19, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// The A records in the answer section of a DNS response (names compressed or not).
fn dns_addresses(message: &[u8]) -> Vec<Ipv4Addr> {
    let read_u16 = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ])))
    };
    // Skips a name at `at`: labels up to a zero or a compression pointer.
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *message.get(at)?;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + usize::from(len);
        }
    };
    let parse = || -> Option<Vec<Ipv4Addr>> {
        let (questions, answers) = (read_u16(4)?, read_u16(6)?);
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(at)? + 4;
        }
        let mut found = Vec::new();
        for _ in 0..answers {
            at = skip_name(at)?;
            let (kind, length) = (read_u16(at)?, read_u16(at + 8)?);
            let data = message.get(at + 10..at + 10 + length)?;
            if kind == 1 && length == 4 {
                found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
            at += 10 + length;
        }
        Some(found)
    };
    parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_answer_gives_its_a_records() {
        let query = dns_query("kubernetes.default.svc.cluster.local");
        // The query echoed as the question, then one compressed A answer for 10.96.0.1.
        let mut answer = query.clone();
        answer[2] = 0x85;
        answer[7] = 1;
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        assert_eq!(dns_addresses(&answer), vec![Ipv4Addr::new(10, 96, 0, 1)]);
        assert_eq!(dns_addresses(&query), Vec::<Ipv4Addr>::new());
    }
}
