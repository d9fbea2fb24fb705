//! carte-shim: becomes PID 1 of the target root, then execs the real init.
//!
//! Not implemented yet (issue 4). It exits with an error instead of pretending to work.

fn main() {
    eprintln!("carte-shim: not implemented yet (issue 4)");
    std::process::exit(1);
}
