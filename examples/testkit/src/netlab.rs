//! A private network for one test: a "switch" namespace holding a Linux bridge, and one
//! namespace per host joined to it by a veth pair, all created by the test and removed
//! when the [`NetLab`] is dropped. Addresses are `10.<a>.<b>.<host>/24` inside these
//! namespaces only (the switch is `.254`); nothing outside them is ever a target.
//!
//! Needs root and `ip` (iproute2); [`NetLab::new`] skips (fails under CI) without them.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::prereq::skip;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The namespaces, bridge and links of one test.
#[derive(Debug)]
pub struct NetLab {
    prefix: String,
    net: String,
    hosts: u32,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// `hosts` host namespaces (numbered from 1) on one bridge, links up. `None` (after
    /// [`skip`]) when not root or `ip` is missing.
    ///
    /// # Panics
    ///
    /// When a namespace or link cannot be made although the prerequisites are there.
    #[track_caller]
    pub fn new(hosts: u32) -> Option<Self> {
        // Root, from /proc/self/status's Uid line (effective uid, the third field).
        let root = crate::prereq::is_root();
        if !root {
            skip("network namespaces need root");
            return None;
        }
        if ip(&["-V"]).is_err() {
            skip("ip (iproute2) not installed (apt-get install iproute2)");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = (pid % 50_000) * 8 + n % 8;
        let lab = NetLab {
            prefix: format!("vl{id}"),
            net: format!("10.{}.{}", 200 + (id / 250) % 50, id % 250),
            hosts,
        };
        if let Err(e) = lab.build() {
            panic!("network lab {}: {e}", lab.prefix);
        }
        Some(lab)
    }

    fn build(&self) -> Result<(), String> {
        let sw = self.switch_ns();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{}/24", self.switch_ip()),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        for h in 1..=self.hosts {
            let ns = self.host_ns(h);
            let port = format!("p{h}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.host_ip(h)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The switch's namespace.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Host `h`'s namespace.
    pub fn host_ns(&self, h: u32) -> String {
        format!("{}-h{h}", self.prefix)
    }

    /// Host `h`'s address.
    pub fn host_ip(&self, h: u32) -> String {
        format!("{}.{h}", self.net)
    }

    /// The bridge's address (in the switch namespace): an isolation address for the hosts.
    pub fn switch_ip(&self) -> String {
        format!("{}.254", self.net)
    }

    /// `program` run inside host `h`'s namespace (`ip netns exec` execs it: the child's
    /// pid is the program's).
    pub fn command(&self, h: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host_ns(h)]).arg(program);
        c
    }

    /// `program` run inside the switch's namespace.
    pub fn switch_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.switch_ns()]).arg(program);
        c
    }

    /// Takes host `h`'s link to the switch down or up (its switch port: the host sees its
    /// own interface go down too, as when a cable is pulled).
    ///
    /// # Panics
    ///
    /// When `ip` fails.
    #[track_caller]
    pub fn set_link(&self, h: u32, up: bool) {
        let state = if up { "up" } else { "down" };
        if let Err(e) = ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            &format!("p{h}"),
            state,
        ]) {
            panic!("{e}");
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the peer.
        for h in 1..=self.hosts {
            let _ = ip(&["netns", "del", &self.host_ns(h)]);
        }
        let _ = ip(&["netns", "del", &self.switch_ns()]);
    }
}
