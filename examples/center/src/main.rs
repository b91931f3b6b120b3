//! `vinfra-center`: the management server.

fn main() {}
