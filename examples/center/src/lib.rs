//! The vinfra management server (Virtual Center); the design is in README.md.
//!
//! One process that manages a cluster of `vinfra-host`s: it keeps the inventory in
//! SQLite ([`store`]), polls every host's API ([`hosts`]), follows the hosts' tasks
//! ([`tasks`]), logs every action ([`events`]), asks DRS ([`drs`]), holds the HA policy ([`ha`]), and serves a REST API ([`api`]) and the
//! web console ([`web`]) over HTTPS ([`tls`]). [`server::start`] puts the pieces
//! together; the `vinfra-center` binary is a command line ([`config`]) around it.
//!
//! ```
//! use vinfra_center::{clock, config::Settings, server};
//! use vinfra_host::api::ApiToken;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("pw"), "first-password\n")?;
//! let settings = Settings {
//!     state_dir: dir.path().join("state"),
//!     listen: "127.0.0.1:0".parse()?,
//!     tls: None, // plain HTTP: an example on loopback
//!     hosts: Vec::new(),
//!     token: ApiToken::from_key_hex(&"42".repeat(32))?,
//!     poll_ms: 2000,
//!     admin_password_file: Some(dir.path().join("pw")),
//!     web_dir: vinfra_center::web::default_dir(),
//! };
//! let center = server::start(&settings, clock::system())?;
//! // Log in with HTTP Basic; the token opens the rest of the API.
//! let mut answer = ureq::post(&format!("{}api/session", center.url()))
//!     .header("Authorization", "Basic YWRtaW46Zmlyc3QtcGFzc3dvcmQ=") // admin:first-password
//!     .send_empty()?;
//! let session: serde_json::Value = answer.body_mut().read_json()?;
//! let clusters: serde_json::Value =
//!     ureq::get(&format!("{}api/vcenter/cluster", center.url()))
//!         .header("vinfra-api-session-id", session["token"].as_str().unwrap_or(""))
//!         .call()?
//!         .body_mut()
//!         .read_json()?;
//! assert_eq!(clusters[0]["name"], "cluster-1");
//! center.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod drs;
pub mod events;
pub mod ha;
pub mod hosts;
pub mod model;
pub mod schedule;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod web;
