//! `handheld`: the command-line handheld used by testers, scripts and the acceptance runs.
//!
//! Output is Chinese first with a clear 允许/禁止 verdict and every reason; `--json`
//! prints the node's JSON instead. Exit codes: 0 done or allowed, 3 refused by the safety
//! rules, 1 any other error (one line on stderr).

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("错误 / error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
