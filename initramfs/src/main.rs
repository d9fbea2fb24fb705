//! carte-init main (being written).
fn main() {}
