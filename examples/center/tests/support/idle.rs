//! Idle fake hosts served in the test process (they run no VM, as the issue's
//! benchmarks allow): a cluster whose volume holds many VMs, for the scale benchmarks.

use std::sync::Arc;

use vinfra_host::api::{
    serve, ApiError, ApiToken, Console, HostCapacity, HostEvent, HostInfo, HostService,
    IncomingReady, IncomingRequest, PowerState, Result, ServerHandle, TaskHandle, VmInfo, VmOp,
    VmSpec,
};

/// A host of a cluster whose volume holds `vms`.
struct Idle {
    id: u32,
    vms: Arc<Vec<VmInfo>>,
}

impl HostService for Idle {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            self.id,
            format!("host{}", self.id),
            HostCapacity {
                cpus: 32,
                memory_mib: 262_144,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self.vms.as_ref().clone())
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        self.vms
            .iter()
            .find(|v| v.spec.name == name)
            .cloned()
            .ok_or_else(|| ApiError::VmNotFound(name.into()))
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("bench".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("bench".into()))
    }
    fn start_op(&self, _: &str, _: VmOp, _: TaskHandle) -> Result<()> {
        Err(ApiError::Unsupported("bench".into()))
    }
    fn console(&self, name: &str) -> Result<Console> {
        Err(ApiError::VmNotFound(name.into()))
    }
    fn events(&self, _: u64, _: usize) -> Result<Vec<HostEvent>> {
        Ok(Vec::new())
    }
    fn prepare_incoming(&self, r: IncomingRequest) -> Result<IncomingReady> {
        Err(ApiError::VmNotFound(r.vm))
    }
}

/// `hosts` idle hosts on loopback whose volume holds `vms` shut-off VMs (`vm-1`…), and
/// the center's `--host` arguments for them.
pub fn idle_hosts(hosts: u32, vms: usize) -> (Vec<ServerHandle>, Vec<String>) {
    let vms: Arc<Vec<VmInfo>> = Arc::new(
        (1..=vms)
            .map(|i| {
                VmInfo::new(
                    VmSpec::new(format!("vm-{i}"), "/guests/workload.elf", 64),
                    PowerState::ShutOff,
                )
            })
            .collect(),
    );
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let servers: Vec<_> = (1..=hosts)
        .map(|id| {
            let host = Arc::new(Idle {
                id,
                vms: vms.clone(),
            });
            serve("127.0.0.1:0".parse().unwrap(), token.clone(), host).unwrap()
        })
        .collect();
    let args = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            [
                "--host".to_string(),
                format!("esx-{}=http://{}", i + 1, s.local_addr()),
            ]
        })
        .collect();
    (servers, args)
}
