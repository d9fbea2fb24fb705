//! Rendering iPXE scripts from a policy [`Decision`](crate::policy::Decision).
//! STUB: being implemented.
