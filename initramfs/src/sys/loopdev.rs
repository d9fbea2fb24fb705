//! Linux loop device ioctl numbers and structures (`<linux/loop.h>`), which the libc crate
//! does not carry. Only what attaching and detaching needs.

pub const LOOP_SET_FD: libc::Ioctl = 0x4C00;
pub const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
pub const LOOP_SET_STATUS64: libc::Ioctl = 0x4C04;
pub const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
pub const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
pub const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8+).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

impl LoopInfo64 {
    pub fn new(flags: u32) -> LoopInfo64 {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_abi_sizes() {
        // sizeof(struct loop_info64) == 232 and sizeof(struct loop_config) == 304 on Linux.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
