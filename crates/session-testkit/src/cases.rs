//! The cases, one function each, by concern; see the crate documentation.

pub mod atomicity;
pub mod codec;
pub mod expiry;
pub mod listing;
pub mod manager;
pub mod migration;
pub mod owners;
pub mod revisions;
pub mod storage;
