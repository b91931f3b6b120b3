//! vinfra-drs (being built).
#![forbid(unsafe_code)]
