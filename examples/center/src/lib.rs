//! The vinfra management server (Virtual Center); see README.md.
pub mod drs;
