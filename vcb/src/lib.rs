//! vinfra-vcb: not built yet. See README.md for the contract this crate will fulfil.
#![forbid(unsafe_code)]
