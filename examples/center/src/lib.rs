//! The vinfra management server (Virtual Center); the design is in README.md.
//!
//! One process that manages a cluster of `vinfra-host`s: it keeps the inventory in
//! SQLite ([`store`]), polls every host's API ([`hosts`]), follows the hosts' tasks
//! ([`tasks`]), logs every action ([`events`]), and serves a REST API ([`api`]) and the
//! web console ([`web`]) over HTTPS ([`tls`]). [`server::start`] puts the pieces
//! together; the `vinfra-center` binary is a command line ([`config`]) around it.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod events;
pub mod hosts;
pub mod model;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod web;
