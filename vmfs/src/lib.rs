//! vinfra-vmfs (being built).
#![forbid(unsafe_code)]
