//! carte-init: the `/init` of carte's initramfs.
//!
//! Not implemented yet (issue 4). It exits with an error instead of pretending to boot.

fn main() {
    eprintln!("carte-init: not implemented yet (issue 4)");
    std::process::exit(1);
}
