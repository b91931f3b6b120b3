//! The vinfra management server (Virtual Center); the design is in README.md.
//!
//! One process that manages a cluster of `vinfra-host`s: it keeps the inventory in
//! SQLite ([`store`]), polls every host's API ([`hosts`]), and serves a REST API and the
//! web console over HTTPS ([`api`], [`tls`], [`web`]). [`server::run`] puts the pieces
//! together; the `vinfra-center` binary is a command line around it.
#![forbid(unsafe_code)]

pub mod auth;
pub mod model;
pub mod store;
pub mod tls;
