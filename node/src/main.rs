//! `node`: run a station node, import cylinder archives. See `node --help`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    node::cli::main()
}

/// glibc's allocator keeps up to eight arenas per core and gives little of what the
/// node's threads free back to the system. A head office's RSS after a first sync of
/// 10,000 cylinders (`net_bench`): 543–554 MiB with glibc's default, 364–371 MiB with
/// four arenas, 298–311 MiB with two; the sync took 3.35–3.64, 3.54 and 3.90–3.92 s, so
/// four. glibc reads `MALLOC_ARENA_MAX` only when a process starts, so the node starts
/// itself again with it, once, in the same process (`exec`, before any thread). A value
/// the operator set is kept; if the restart fails the node runs on with the default.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Returns only if the restart failed.
    let _failed = command.args(args).env("MALLOC_ARENA_MAX", "4").exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
