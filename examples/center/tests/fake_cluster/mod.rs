//! A cluster of fake hosts served in the test process (no KVM, no root): every host
//! reports the one list of VMs they share (as hosts on one volume do), starts a VM where
//! the center asks and moves one at once on a migration.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::sync::{Arc, Mutex};

use serde_json::json;
use vinfra_host::api::{
    serve, ApiError, ApiToken, Console, HostCapacity, HostEvent, HostInfo, HostService,
    IncomingReady, IncomingRequest, PowerState, Result, ServerHandle, TaskHandle, VmInfo, VmOp,
    VmSpec, VmStats,
};

use crate::support::Center;

/// One fake host of a cluster whose VMs are `vms` (shared by every host).
pub struct FakeHost {
    id: u32,
    vms: Arc<Mutex<Vec<VmInfo>>>,
}

impl HostService for FakeHost {
    fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo::new(
            self.id,
            format!("fake{}", self.id),
            HostCapacity {
                cpus: 2,
                memory_mib: 4096,
            },
        ))
    }
    fn list_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self.vms.lock().unwrap().clone())
    }
    fn vm(&self, name: &str) -> Result<VmInfo> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.spec.name == name)
            .cloned()
            .ok_or_else(|| ApiError::VmNotFound(name.into()))
    }
    fn create_vm(&self, _: VmSpec) -> Result<VmInfo> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn delete_vm(&self, _: &str) -> Result<()> {
        Err(ApiError::Unsupported("fake".into()))
    }
    fn start_op(&self, name: &str, op: VmOp, task: TaskHandle) -> Result<()> {
        {
            let mut vms = self.vms.lock().unwrap();
            let vm = vms
                .iter_mut()
                .find(|v| v.spec.name == name)
                .ok_or_else(|| ApiError::VmNotFound(name.into()))?;
            match op {
                VmOp::Start => {
                    vm.state = PowerState::Running;
                    vm.host = Some(self.id);
                }
                // Arrives at once.
                VmOp::Migrate(to) => vm.host = to.to.parse().ok(),
                _ => return Err(ApiError::Unsupported("fake: start and migrate only".into())),
            }
        }
        task.succeed(json!({}));
        Ok(())
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

pub fn vm(name: &str, host: Option<u32>) -> VmInfo {
    let mut info = VmInfo::new(
        VmSpec::new(name, "/k", 64),
        if host.is_some() {
            PowerState::Running
        } else {
            PowerState::ShutOff
        },
    );
    info.host = host;
    info.stats = Some(VmStats {
        cpu_percent: 5.0,
        rss_bytes: 32 << 20,
        ..VmStats::default()
    });
    info
}

/// The shared VM list.
pub type Vms = Arc<Mutex<Vec<VmInfo>>>;

/// A center over two fake hosts (2 CPUs, 4096 MiB each) running `a` and `b` on fake-1
/// and `d` on fake-2; `c` is shut off. `insecure`: plain HTTP (else HTTPS). Also returns
/// the servers (keep them alive) and the shared VM list.
pub fn cluster(dir: &std::path::Path, insecure: bool) -> (Center, Vec<ServerHandle>, Vms) {
    let vms = vec![
        vm("a", Some(1)),
        vm("b", Some(1)),
        vm("c", None),
        vm("d", Some(2)),
    ];
    let (center, servers, vms) = cluster_of(dir, insecure, &[1, 2], vms);
    let admin = center.admin();
    center.wait("the four VMs placed", 20, || {
        let list = center.ok(&admin, "GET", "/api/vcenter/vm", "", 200);
        list.as_array().unwrap().len() == 4
            && list
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !v["host"].is_null())
                .count()
                == 3
    });
    (center, servers, vms)
}

/// A center over fake hosts `ids` (named `fake-ID`) sharing `vms`, once it lists every
/// host and every VM.
pub fn cluster_of(
    dir: &std::path::Path,
    insecure: bool,
    ids: &[u32],
    vms: Vec<VmInfo>,
) -> (Center, Vec<ServerHandle>, Vms) {
    let count = vms.len();
    let vms = Arc::new(Mutex::new(vms));
    let token = ApiToken::from_key_hex(&"42".repeat(32)).unwrap();
    let mut args = Vec::new();
    let mut servers = Vec::new();
    for &id in ids {
        let host = Arc::new(FakeHost {
            id,
            vms: vms.clone(),
        });
        let server = serve("127.0.0.1:0".parse().unwrap(), token.clone(), host).unwrap();
        args.push("--host".to_string());
        args.push(format!("fake-{id}=http://{}", server.local_addr()));
        servers.push(server);
    }
    let center = Center::start_with(dir, insecure, &args);
    let admin = center.admin();
    center.wait_hosts(&admin, ids.len());
    center.wait("every VM listed", 20, || {
        let list = center.ok(&admin, "GET", "/api/vcenter/vm", "", 200);
        list.as_array().unwrap().len() == count
    });
    (center, servers, vms)
}
