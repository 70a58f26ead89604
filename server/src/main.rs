//! The `pop` binary (being written).
fn main() {}
