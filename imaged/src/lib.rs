//! imaged: carte's image store.
//!
//! Not implemented yet (issue 3: content-addressed layers, image kinds, builders,
//! REST API). This crate only reserves its place in the workspace; nothing here
//! pretends to store images.

pub mod build;
