//! The cases, one function each, by concern; see the crate documentation.

pub mod atomicity;
pub mod codec;
pub mod expiry;
pub mod manager;
pub mod storage;
