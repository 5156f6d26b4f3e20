//! `node`: run a station node, import cylinder archives. See `node --help`.

fn main() -> std::process::ExitCode {
    node::cli::main()
}
