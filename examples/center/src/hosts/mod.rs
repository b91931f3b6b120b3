//! The hosts the center manages: one poller thread per host (`sync`), and the clients
//! the API's handlers use to act on a host. Hosts are named in the inventory (`esx-1`);
//! the hosts' own API knows them by id, which their reports give.

mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vinfra_host::api::client::{Client, ClientError};
use vinfra_host::api::{ApiToken, VmInfo};

use crate::clock::Clock;
use crate::events::Events;
use crate::model::{Host, HostState, Vm};
use crate::store::{Store, StoreError};

/// Polls missed in a row before a host is `not_responding`.
pub const MISSED_POLLS_MAX: u32 = 3;
/// How long an operation's call of a host's API may take (they answer at once with a
/// task; only a hung host takes this long).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

struct Poller {
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The hosts being polled, by inventory name.
#[derive(Clone)]
pub struct HostPool {
    pollers: Arc<Mutex<HashMap<String, Poller>>>,
    token: ApiToken,
    store: Arc<dyn Store>,
    events: Events,
    clock: Clock,
    poll_ms: u64,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool")
            .field("poll_ms", &self.poll_ms)
            .finish_non_exhaustive()
    }
}

impl HostPool {
    /// A pool whose pollers authenticate with `token` and poll every `poll_ms`.
    pub fn new(
        token: ApiToken,
        store: Arc<dyn Store>,
        events: Events,
        clock: Clock,
        poll_ms: u64,
    ) -> Self {
        Self {
            pollers: Arc::default(),
            token,
            store,
            events,
            clock,
            poll_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Poller>> {
        self.pollers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts polling host `name` at `address` (its first poll resynchronises it);
    /// a host already polled is left as it is.
    pub fn start(&self, name: &str, address: &str) -> Result<(), ClientError> {
        let mut pollers = self.lock();
        if pollers.contains_key(name) {
            return Ok(());
        }
        let client = Arc::new(Client::with_timeout(
            address,
            self.token.clone(),
            CALL_TIMEOUT,
        )?);
        let poll_timeout = Duration::from_millis((self.poll_ms * 2).max(1000));
        let poll_client = Client::with_timeout(address, self.token.clone(), poll_timeout)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = sync::PollCtx {
            name: name.to_string(),
            client: poll_client,
            store: self.store.clone(),
            events: self.events.clone(),
            clock: self.clock.clone(),
            poll_ms: self.poll_ms,
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("poll {name}"))
            .spawn(move || sync::run(ctx, &flag))
            .map_err(|e| ClientError::Transport(format!("poller thread: {e}")))?;
        pollers.insert(
            name.to_string(),
            Poller {
                client,
                stop,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Stops polling host `name` (waits for its thread).
    pub fn stop(&self, name: &str) {
        let poller = self.lock().remove(name);
        if let Some(mut p) = poller {
            p.stop.store(true, Ordering::Relaxed);
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Stops every poller.
    pub fn stop_all(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }

    /// The client of host `name`, if it is in the pool.
    pub fn client(&self, name: &str) -> Option<Arc<Client>> {
        self.lock().get(name).map(|p| p.client.clone())
    }
}

/// Host id → inventory name, from the hosts' last reports.
pub fn names_by_id(store: &dyn Store) -> Result<HashMap<u32, String>, StoreError> {
    Ok(store
        .hosts()?
        .into_iter()
        .filter_map(|h| h.report.map(|r| (r.id, h.name)))
        .collect())
}

/// The inventory's record of a VM a host reported.
pub fn vm_record(info: VmInfo, names: &HashMap<u32, String>, now_ms: u64) -> Vm {
    Vm {
        name: info.spec.name.clone(),
        host: info.host.and_then(|id| names.get(&id).cloned()),
        info,
        resource_pool: None,
        seen_ms: now_ms,
    }
}

/// Whether a host may take work (answers, not in maintenance).
pub fn usable(host: &Host) -> bool {
    host.state == HostState::Connected && host.report.is_some()
}

/// Checks a host API address: `[http://]HOST:PORT`.
pub fn check_address(address: &str) -> Result<(), String> {
    let rest = address.trim().trim_end_matches('/');
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    if rest.contains("://") {
        return Err("the host API is plain http://HOST:PORT".into());
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{address:?} is not [http://]HOST:PORT")),
    }
}
