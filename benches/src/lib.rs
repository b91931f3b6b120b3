//! Shared helpers for vinfra's criterion benches and peer comparisons.
//!
//! The benches themselves live in `benches/benches/`; the side-by-side
//! scripts that run a peer (QEMU, restic, OR-Tools, ...) on the same input
//! live in `benches/peers/` and print `<metric>: ours=<v> peer=<v> ratio=<v>`.
