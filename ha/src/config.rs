//! The agent's configuration (README "Configuration"): serde, unknown keys refused, then
//! [`Config::validate`] names the field that is wrong.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Host ids are slots of the vmfs heartbeat region.
pub const MAX_HOSTS: u32 = 64;

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Host id, 0..63: its vmfs heartbeat slot.
    pub id: u32,
    /// Where its agent listens (`ip:port`; no names are resolved).
    pub addr: String,
    /// CPU capacity for restart placement, MHz.
    pub cpu_mhz: i64,
    /// Memory capacity for restart placement, MB.
    pub mem_mb: i64,
}

/// How an isolation address is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum IsolationAddress {
    /// A UDP datagram to an echo service, answered within the probe interval.
    UdpEcho(String),
    /// A TCP connection accepted (or actively refused: the address answered).
    TcpConnect(String),
}

/// VM monitoring by guest heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmMonitoring {
    /// Off: guest heartbeats are ignored.
    pub enabled: bool,
    /// A guest silent this long is reset.
    pub missed_ms: u64,
    /// At most this many resets of one VM …
    pub max_resets: u32,
    /// … within this window.
    pub window_ms: u64,
}

impl Default for VmMonitoring {
    fn default() -> Self {
        Self {
            enabled: true,
            missed_ms: 30_000,
            max_resets: 3,
            window_ms: 3_600_000,
        }
    }
}

/// HA admission control: power-ons (not restarts) that would leave too little capacity
/// to restart everything after host failures are refused, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Admission {
    /// No admission control.
    Off,
    /// VMware's slot policy: the slots left after the `tolerate` largest hosts fail must
    /// hold every running VM.
    Slots {
        /// Host failures to tolerate.
        tolerate: u32,
    },
    /// VMware's percentage policy: reservations must leave these percentages free.
    Percentage {
        /// CPU capacity kept free, %.
        cpu: u8,
        /// Memory capacity kept free, %.
        mem: u8,
    },
}

impl Default for Admission {
    /// VMware's default: tolerate one host failure, by slots.
    fn default() -> Self {
        Admission::Slots { tolerate: 1 }
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's id.
    pub host: u32,
    /// Every host of the cluster, this one included.
    pub hosts: Vec<HostConfig>,
    /// How often a heartbeat goes to each peer.
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Silence on a channel for this long counts as silent.
    #[serde(default = "defaults::failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    /// Addresses probed to tell "I am isolated" from "everyone else failed".
    #[serde(default)]
    pub isolation_addresses: Vec<IsolationAddress>,
    /// How often each isolation address is probed while no peer is heard.
    #[serde(default = "defaults::probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// How often the planner plans (and repeats its assignments).
    #[serde(default = "defaults::plan_interval_ms")]
    pub plan_interval_ms: u64,
    /// How long a `shut_down` isolation response waits before powering off.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// VM monitoring.
    #[serde(default)]
    pub vm_monitoring: VmMonitoring,
    /// Admission control for power-ons.
    #[serde(default)]
    pub admission: Admission,
}

mod defaults {
    pub fn heartbeat_interval_ms() -> u64 {
        250
    }
    pub fn failure_timeout_ms() -> u64 {
        2500
    }
    pub fn probe_interval_ms() -> u64 {
        500
    }
    pub fn plan_interval_ms() -> u64 {
        500
    }
    pub fn shutdown_grace_ms() -> u64 {
        1000
    }
}

impl Config {
    /// A configuration with the defaults for `host` among `hosts`.
    pub fn new(host: u32, hosts: Vec<HostConfig>) -> Self {
        Self {
            host,
            hosts,
            heartbeat_interval_ms: defaults::heartbeat_interval_ms(),
            failure_timeout_ms: defaults::failure_timeout_ms(),
            isolation_addresses: Vec::new(),
            probe_interval_ms: defaults::probe_interval_ms(),
            plan_interval_ms: defaults::plan_interval_ms(),
            shutdown_grace_ms: defaults::shutdown_grace_ms(),
            vm_monitoring: VmMonitoring::default(),
            admission: Admission::default(),
        }
    }

    /// Parses and validates JSON.
    ///
    /// ```
    /// let json = r#"{"host": 1, "hosts": [
    ///     {"id": 1, "addr": "127.0.0.1:8801", "cpu_mhz": 4000, "mem_mb": 4096},
    ///     {"id": 2, "addr": "127.0.0.1:8802", "cpu_mhz": 4000, "mem_mb": 4096}],
    ///   "failure_timeout_ms": 100}"#;
    /// let e = vinfra_ha::Config::from_json(json).unwrap_err();
    /// assert!(e.to_string().contains("failure_timeout_ms"), "{e}");
    /// ```
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let c: Config = serde_json::from_str(text).map_err(|e| {
            // serde names unknown and missing fields in its message.
            ConfigError::new("(json)", e.to_string())
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hosts.is_empty() {
            return Err(ConfigError::new("hosts", "no hosts"));
        }
        let mut seen = 0u64;
        for (i, h) in self.hosts.iter().enumerate() {
            let f = |name: &str| format!("hosts[{i}].{name}");
            if h.id >= MAX_HOSTS {
                return Err(ConfigError::new(
                    f("id"),
                    format!("{} is not in 0..{MAX_HOSTS}", h.id),
                ));
            }
            if seen & (1 << h.id) != 0 {
                return Err(ConfigError::new(
                    f("id"),
                    format!("host {} appears twice", h.id),
                ));
            }
            seen |= 1 << h.id;
            if h.addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    f("addr"),
                    format!("{:?} is not ip:port (names are not resolved)", h.addr),
                ));
            }
            if h.cpu_mhz <= 0 || h.mem_mb <= 0 {
                return Err(ConfigError::new(
                    f("cpu_mhz"),
                    "capacities must be positive",
                ));
            }
        }
        if seen & (1 << self.host.min(63)) == 0 || self.host >= MAX_HOSTS {
            return Err(ConfigError::new(
                "host",
                format!("{} is not one of hosts", self.host),
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::new(
                "heartbeat_interval_ms",
                "must be positive",
            ));
        }
        if self.failure_timeout_ms < 4 * self.heartbeat_interval_ms {
            return Err(ConfigError::new(
                "failure_timeout_ms",
                format!(
                    "{} is less than four heartbeat intervals ({} ms): lost packets would look like silence",
                    self.failure_timeout_ms,
                    4 * self.heartbeat_interval_ms
                ),
            ));
        }
        for (name, v) in [
            ("probe_interval_ms", self.probe_interval_ms),
            ("plan_interval_ms", self.plan_interval_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(name, "must be positive"));
            }
        }
        for (i, a) in self.isolation_addresses.iter().enumerate() {
            let (IsolationAddress::UdpEcho(s) | IsolationAddress::TcpConnect(s)) = a;
            if s.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    format!("isolation_addresses[{i}]"),
                    format!("{s:?} is not ip:port"),
                ));
            }
        }
        if let Admission::Percentage { cpu, mem } = self.admission {
            if cpu > 100 || mem > 100 {
                return Err(ConfigError::new("admission", "percentages are 0..=100"));
            }
        }
        let m = &self.vm_monitoring;
        if m.enabled && (m.missed_ms == 0 || m.window_ms == 0) {
            return Err(ConfigError::new(
                "vm_monitoring",
                "missed_ms and window_ms must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<HostConfig> {
        (1..=3)
            .map(|id| HostConfig {
                id,
                addr: format!("127.0.0.{id}:8804"),
                cpu_mhz: 1000,
                mem_mb: 1000,
            })
            .collect()
    }

    #[test]
    fn each_mistake_names_its_field() {
        let ok = Config::new(1, hosts());
        ok.validate().unwrap();
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Change)> = vec![
            ("host", Box::new(|c| c.host = 9)),
            ("hosts[1].id", Box::new(|c| c.hosts[1].id = 1)),
            ("hosts[2].id", Box::new(|c| c.hosts[2].id = 64)),
            (
                "hosts[0].addr",
                Box::new(|c| c.hosts[0].addr = "esx-1:8804".into()),
            ),
            (
                "failure_timeout_ms",
                Box::new(|c| c.failure_timeout_ms = 900),
            ),
            ("plan_interval_ms", Box::new(|c| c.plan_interval_ms = 0)),
            (
                "isolation_addresses[0]",
                Box::new(|c| c.isolation_addresses = vec![IsolationAddress::UdpEcho("gw".into())]),
            ),
        ];
        for (field, change) in cases {
            let mut c = ok.clone();
            change(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let json = r#"{"host": 1, "hosts": [], "heartbeat_ms": 5}"#;
        assert!(Config::from_json(json)
            .unwrap_err()
            .problem
            .contains("heartbeat_ms"));
    }
}
