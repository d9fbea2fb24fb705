//! qemu-tests: the end-to-end harness (namespaces, QEMU machines, serial console).
