//! The node process itself: what it sets up before it serves.

use std::process::Command;

use tests::{NodeProcess, free_port, node_bin};

/// `node` limits glibc's malloc arenas by starting itself again with `MALLOC_ARENA_MAX`
/// in the same process (the process the caller started is the one that serves), and
/// keeps a value the operator set.
#[test]
fn the_node_limits_malloc_arenas_in_its_own_process_and_keeps_an_operators_value() {
    for (set, expected) in [(None, "MALLOC_ARENA_MAX=4"), (Some("2"), "MALLOC_ARENA_MAX=2")] {
        let dir = tempfile::tempdir().unwrap();
        let (port, data) = (free_port(), dir.path().join("data"));
        let mut c = Command::new(node_bin());
        c.args(["run", "--mdns", "off", "--http", &format!("127.0.0.1:{port}"), "--data"]).arg(&data);
        c.env_remove("MALLOC_ARENA_MAX");
        if let Some(v) = set {
            c.env("MALLOC_ARENA_MAX", v);
        }
        let node =
            NodeProcess::start(c, format!("http://127.0.0.1:{port}"), data, &dir.path().join("node.log")).unwrap();
        let environ = std::fs::read(format!("/proc/{}/environ", node.child.id())).unwrap();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        assert!(vars.contains(&expected.as_bytes()), "{expected} not in {}", String::from_utf8_lossy(&environ));
        assert_eq!(vars.iter().filter(|v| v.starts_with(b"MALLOC_ARENA_MAX=")).count(), 1);
    }
}

/// `node demo week --events 100 --data <data>`: its exit code, stdout and stderr.
fn demo_week(data: &std::path::Path) -> (i32, String, String) {
    let mut c = Command::new(node_bin());
    c.args(["demo", "week", "--events", "100", "--data"]).arg(data);
    tests::run(c).unwrap()
}

/// `node demo week` writes only into a node that holds demo data: a directory without a
/// node, or a node without demo data, is refused in one line with a non-zero exit, and
/// neither gets a store or an event from it.
#[test]
fn a_week_of_demo_work_is_refused_where_there_is_no_demo_station() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    let (rc, out, err) = demo_week(&empty);
    assert_ne!(rc, 0, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("没有节点数据") && err.contains("holds no node data"), "{err}");
    assert!(!empty.join("node.redb").exists(), "the refusal made a store");

    // A node that ran without demo data.
    let (port, data) = (free_port(), dir.path().join("plain"));
    let mut c = Command::new(node_bin());
    c.args(["run", "--mdns", "off", "--http", &format!("127.0.0.1:{port}"), "--data"]).arg(&data);
    let node = NodeProcess::start(c, format!("http://127.0.0.1:{port}"), data.clone(), &dir.path().join("node.log"));
    drop(node.unwrap());
    let (rc, out, err) = demo_week(&data);
    assert_ne!(rc, 0, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("没有演示数据") && !err.contains("invalid"), "{err}");
}

/// SIGTERM stops a node cleanly: it exits with success and closes its store (nothing
/// holds the store past its shutdown, which then waited five seconds and left the file
/// to be repaired at the next start).
#[test]
fn a_terminated_node_closes_its_store_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (port, data, log) = (free_port(), dir.path().join("data"), dir.path().join("node.log"));
    let mut c = Command::new(node_bin());
    c.args(["run", "--mdns", "off", "--http", &format!("127.0.0.1:{port}"), "--data"]).arg(&data);
    let mut node = NodeProcess::start(c, format!("http://127.0.0.1:{port}"), data, &log).unwrap();
    let term = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = node.child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("shutting down"), "{text}");
    assert!(!text.contains("still in use"), "{text}");
}
