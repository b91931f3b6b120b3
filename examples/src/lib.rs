//! The vinfra reference host and one small example per crate.
//!
//! Binaries live in `src/bin/`: `vinfra-vm` runs one VM with its console on
//! the terminal (the README's main job).
