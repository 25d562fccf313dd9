//! Connections made as a pod makes them: from the network namespace of the pod's sandbox, so
//! the packets carry the pod's address and its NetworkPolicies apply to them. Tests use it to
//! try what a pod on the real node may and may not reach, without a shell in any image.

use std::net::{SocketAddr, TcpStream};
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
