//! The center put together: the store, users, pollers, tasks, the API and the web
//! console behind one listener (HTTPS, or plain HTTP when asked), and a clean stop.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;

use crate::api::{self, AppState};
use crate::auth::{Auth, AuthError, SESSION_TTL_MS};
use crate::clock::Clock;
use crate::config::Settings;
use crate::events::Events;
use crate::hosts::HostPool;
use crate::store::{SqliteStore, Store, StoreError};
use crate::tasks::Tasks;
use crate::tls::{self, TlsError};

/// How often statistics are rolled up and expired sessions removed.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(60);
/// How long open connections (event streams, consoles) get to finish at a stop.
const DRAIN: Duration = Duration::from_secs(2);

/// Why the center could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The state folder.
    #[error("{path}: {source}")]
    StateDir {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The first user.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listening socket or the runtime.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A host's address.
    #[error("host {name}: {why}")]
    Host {
        /// The host.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// A running center.
pub struct Center {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle<SocketAddr>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    hosts: HostPool,
    tasks: Tasks,
    stop: Arc<AtomicBool>,
    housekeeping: Option<JoinHandle<()>>,
    addr: SocketAddr,
    url: String,
    first_password: Option<String>,
}

impl std::fmt::Debug for Center {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Center")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Center {
    /// Where it serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its console's URL (`https://IP:PORT/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first user's password when this start made it (to print once).
    pub fn first_password(&self) -> Option<&str> {
        self.first_password.as_deref()
    }

    /// Stops serving (open connections get 2 s to finish), polling and following
    /// tasks; running tasks stay recorded as running and are followed again at the next
    /// start.
    pub fn stop(mut self) {
        self.handle.graceful_shutdown(Some(DRAIN));
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.stop();
        if let (Some(runtime), Some(served)) = (&self.runtime, self.served.take()) {
            let _ = runtime.block_on(async {
                tokio::time::timeout(DRAIN + Duration::from_secs(1), served).await
            });
        }
        self.hosts.stop_all();
        if let Some(t) = self.housekeeping.take() {
            let _ = t.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Starts the center: opens (or makes) its state, starts polling the hosts, and serves.
pub fn start(settings: &Settings, clock: Clock) -> Result<Center, StartError> {
    std::fs::create_dir_all(&settings.state_dir).map_err(|source| StartError::StateDir {
        path: settings.state_dir.clone(),
        source,
    })?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&settings.state_dir.join("center.db"))?);
    let auth = Auth::new(store.clone(), SESSION_TTL_MS);
    let first_password = auth.ensure_first_user(settings.admin_password_file.as_deref())?;
    let events = Events::new(store.clone());
    let hosts = HostPool::new(
        settings.token.clone(),
        store.clone(),
        events.clone(),
        clock.clone(),
        settings.poll_ms,
    );
    for (name, address) in &settings.hosts {
        match store.add_host(name, address) {
            Ok(()) | Err(StoreError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for host in store.hosts()? {
        hosts
            .start(&host.name, &host.address)
            .map_err(|e| StartError::Host {
                name: host.name.clone(),
                why: e.to_string(),
            })?;
    }
    let tasks = Tasks::new(store.clone(), events.clone(), clock.clone());
    tasks.resume(&hosts)?;

    let stop = Arc::new(AtomicBool::new(false));
    let housekeeping = {
        let (store, clock, stop) = (store.clone(), clock.clone(), stop.clone());
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || housekeep(store.as_ref(), &clock, &stop))
            .map_err(|source| StartError::Io {
                what: "housekeeping thread".into(),
                source,
            })?
    };

    let state = AppState {
        store,
        auth,
        events,
        tasks: tasks.clone(),
        hosts: hosts.clone(),
        clock,
        secure_cookies: settings.tls.is_some(),
        poll_ms: settings.poll_ms,
        backup_runs: api::backup_runs::BackupRuns::default(),
        pool_rule_writes: Arc::default(),
        drs_last: Arc::default(),
    };
    let drs_state = state.clone();
    let backup_state = state.clone();
    let app = api::router(state).merge(crate::web::router(&settings.web_dir));
    let io = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Io { what, source }
    };
    let listener = TcpListener::bind(settings.listen)
        .map_err(io(&format!("listen on {}", settings.listen)))?;
    let addr = listener.local_addr().map_err(io("listening address"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("center-api")
        .enable_all()
        .build()
        .map_err(io("tokio runtime"))?;
    // DRS automation runs on the API's runtime: it ends with it.
    runtime.spawn(api::drs::automation(drs_state));
    // So does the backup scheduler.
    runtime.spawn(api::backup_runs::scheduler(backup_state));
    let handle = Handle::new();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let (served, scheme) = {
        let _guard = runtime.enter();
        match &settings.tls {
            Some(source) => {
                let (cert, key) = tls::cert_files(source, addr)?;
                let config = RustlsConfig::from_config(tls::server_config(&cert, &key)?);
                let server = axum_server::from_tcp_rustls(listener, config)
                    .map_err(io("listening socket"))?
                    .handle(handle.clone());
                (runtime.spawn(server.serve(service)), "https")
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(io("listening socket"))?
                    .handle(handle.clone());
                (runtime.spawn(server.serve(service)), "http")
            }
        }
    };
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    Ok(Center {
        runtime: Some(runtime),
        handle,
        served: Some(served),
        hosts,
        tasks,
        stop,
        housekeeping: Some(housekeeping),
        addr,
        url: format!("{scheme}://{shown}/"),
        first_password,
    })
}

fn housekeep(store: &dyn Store, clock: &Clock, stop: &AtomicBool) {
    let slice = Duration::from_millis(100);
    let mut waited = HOUSEKEEPING_PERIOD;
    while !stop.load(Ordering::Relaxed) {
        if waited >= HOUSEKEEPING_PERIOD {
            waited = Duration::ZERO;
            let now_ms = clock();
            if let Err(e) = store
                .roll_up(now_ms)
                .and_then(|()| store.expire_sessions(now_ms).map(drop))
            {
                tracing::warn!("housekeeping: {e}");
            }
        }
        std::thread::sleep(slice);
        waited += slice;
    }
}
