//! The handheld ↔ node wire format, a typed blocking client and mDNS discovery.
//!
//! This crate owns the handheld JSON: every request and response body under `/api/v1`
//! is a type here, and the node serves exactly these types. Domain types from `schema`
//! are converted at the node's boundary, so a schema refactor cannot silently change
//! what handhelds receive.
//!
//! ```no_run
//! use handheld_proto::client::Client;
//! let mut client = Client::new("http://127.0.0.1:8080");
//! client.login("demo-filler", "demo-pass").unwrap();
//! let verdict = client.fill_check("0110100001", Some("lpg"), None).unwrap();
//! assert!(verdict.allowed || !verdict.reasons.is_empty());
//! ```

pub mod api;
pub mod client;
pub mod discovery;

pub use api::*;
