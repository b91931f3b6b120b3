//! The host's virtual switch ([`crate::vswitch`]): applied when the host starts (the
//! `--switch` file is then handed to each child with NICs, which applies it again,
//! idempotently, and makes its TAPs on the port groups), and the check that a VM's
//! port groups exist here before it is started through the API.

use std::path::Path;

use super::Host;
use crate::api::ApiError;
use crate::vswitch::SwitchConfig;

/// Reads, checks and applies the switch; its port groups' names (none without one).
pub fn apply_switch(path: Option<&Path>) -> Result<Vec<String>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: SwitchConfig =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let switch = config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    switch
        .apply()
        .map_err(|e| format!("apply switch {}: {e}", path.display()))?;
    Ok(config.port_groups.iter().map(|p| p.name.clone()).collect())
}

impl Host {
    /// Refuses (422) to start a VM with a NIC on a port group this host lacks.
    pub(super) fn check_port_groups(&self, name: &str) -> Result<(), ApiError> {
        let devices = super::devices::read(&self.volume, name)?;
        for (i, n) in devices.nics.iter().enumerate() {
            if !self.port_groups.contains(&n.portgroup) {
                return Err(ApiError::Unsupported(format!(
                    "host {} has no port group {:?} (NIC {i} of VM {name}); it has {:?}",
                    self.agent.host(),
                    n.portgroup,
                    self.port_groups
                )));
            }
        }
        Ok(())
    }
}
