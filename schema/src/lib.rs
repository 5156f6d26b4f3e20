//! Domain vocabulary of the gas-cylinder filling traceability system.
//!
//! `schema` owns everything the other crates agree on and nothing that touches the outside
//! world: it does no I/O, reads no clock and opens no socket.
//!
//! Reading order:
//! - [`codes`]: cylinder codes (10 and 16 digits), region and enterprise codes, the QR URL.
//! - [`vocab`]: closed vocabularies (media, varieties, property kinds) with Chinese names.
//! - [`archive`]: the cylinder archive record, an Automerge document per cylinder.
//! - [`records`]: the station records a handheld needs (enterprise, staff, warehouse, ...).
//! - [`hlc`]: the hybrid logical clock that orders events across nodes.
//! - [`event`]: immutable, signed events (the facts) and their canonical encoding.
//! - [`seal`]: one signature for many events of a node, so events travel without their own.
//! - [`state`]: a cylinder's derived state, a pure function of archive and events.
//! - [`rules`]: the safety rules and their versioned threshold table.
//! - [`anomaly`]: forbidden concurrent histories, found after a merge, with their proof.
//!
//! ```
//! use schema::codes::FullCode;
//! let code: FullCode = "3701020110100001".parse().unwrap();
//! assert_eq!(code.region().as_str(), "370102");
//! ```

pub mod anomaly;
pub mod archive;
pub mod codes;
pub mod event;
pub mod hlc;
pub mod records;
pub mod rules;
pub mod seal;
pub mod state;
pub mod vocab;
