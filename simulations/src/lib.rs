//! Benchmark programs and the deterministic partition simulator ([`sim`]). Benchmarks
//! drive real node processes over loopback and print figures; they assert nothing about
//! speed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod proc;
pub mod sim;
pub mod stats;
