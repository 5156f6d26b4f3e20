//! End-to-end tests: real node processes, real sockets, the real handheld CLI.

#![allow(clippy::print_stderr)]

mod acceptance;
mod crash;
mod process;
mod replication;
mod tidy;
mod web;
