//! The acceptance walk of a filler with the demo data, through the real `handheld` CLI:
//! discover the node over mDNS, log in, be refused on each unsafe cylinder with the rule
//! and its regulation, fill a good one, retry the same op_id and find one event.
//! Runs in a network namespace of its own, so mDNS stays on its private loopback.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{Netns, handheld_bin, node_bin, run};

#[test]
fn a_filler_walks_the_demo_station() {
    let ns = Netns::new("accept").expect("a network namespace (run as root with iproute2)");
    let data = tempfile::tempdir().unwrap();
    let session = data.path().join("session.json");
    let log = data.path().join("node.log");
    let mut node = ns
        .command(node_bin())
        .args(["run", "--demo", "--demo-cylinders", "120", "--mdns", "lo", "--http", "127.0.0.1:18090", "--data"])
        .arg(data.path().join("node"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let handheld = |args: &[&str]| {
        let mut c = ns.command(handheld_bin());
        c.env("HANDHELD_SESSION", &session).args(args);
        run(c).unwrap()
    };

    // 1. Discover over mDNS (the node may still be creating its demo data).
    let deadline = Instant::now() + Duration::from_secs(180);
    let url = loop {
        let (code, out, _) = handheld(&["discover", "--mdns", "lo", "--timeout", "1"]);
        if code == 0 {
            break out.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "node not discovered: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Ok(Some(status)) = node.try_wait() {
            panic!("node exited {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(url, "http://127.0.0.1:18090");

    // 2. Log in, finding the node again over mDNS.
    let (code, out, err) = handheld(&["login", "demo-filler", "--password", "demo-pass", "--mdns", "lo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("已登录"), "{out}");
    let (code, _, err) = handheld(&["login", "demo-filler", "--password", "wrong", "--node", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("bad_credentials"), "{err}");

    // 3. Refusals, each with its rule and regulation.
    let refusals = [
        (vec!["check", "0101000002", "--medium", "lpg"], "inspection_overdue", "TSG 23-2021"),
        (vec!["check", "0101000003", "--medium", "lpg"], "scrapped", "报废"),
        (vec!["check", "0101000004", "--medium", "lpg"], "not_own_cylinder", "自有或托管"),
        (vec!["check", "0101000001", "--medium", "oxygen"], "medium_mismatch", "介质不符"),
        (vec!["fill", "0101000001", "--medium", "lpg", "--mass", "20"], "overfill", "充装系数"),
    ];
    for (args, rule, regulation) in refusals {
        let (code, out, err) = handheld(&args);
        assert_eq!(code, 3, "{args:?}: {out}{err}");
        assert!(out.contains("禁止") && out.contains("REFUSED"), "{args:?}: {out}");
        assert!(out.contains(&format!("[{rule}]")), "{args:?} should cite {rule}: {out}");
        assert!(out.contains(regulation), "{args:?} should cite {regulation}: {out}");
    }
    let (code, out, _) = handheld(&["--json", "check", "0101000002"]);
    assert_eq!(code, 3);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], false);

    // 4. A good cylinder fills; the retry with the same op_id records nothing new.
    let (_, out, _) = handheld(&["--json", "show", "0101000001"]);
    let before: Value = serde_json::from_str(&out).unwrap();
    let (code, out, _) = handheld(&["check", "0101000001", "--medium", "lpg", "--mass", "14.5"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("允许充装"), "{out}");
    let (code, first, err) =
        handheld(&["--json", "fill", "0101000001", "--medium", "lpg", "--mass", "14.5", "--op-id", "accept-fill-1"]);
    assert_eq!(code, 0, "{first}{err}");
    let (code, second, _) =
        handheld(&["--json", "fill", "0101000001", "--medium", "lpg", "--mass", "14.5", "--op-id", "accept-fill-1"]);
    assert_eq!(code, 0);
    let (first, second): (Value, Value) =
        (serde_json::from_str(&first).unwrap(), serde_json::from_str(&second).unwrap());
    assert_eq!(first["event"]["id"], second["event"]["id"]);
    assert_eq!(second["replayed"], true);
    let (_, out, _) = handheld(&["--json", "show", "0101000001"]);
    let after: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(after["state"]["fill_count"].as_u64().unwrap(), before["state"]["fill_count"].as_u64().unwrap() + 1);
    let (code, out, _) =
        handheld(&["fill", "0101000001", "--medium", "lpg", "--mass", "14.5", "--op-id", "accept-fill-1"]);
    assert_eq!(code, 0);
    assert!(out.contains("replayed"), "{out}");

    // 5. A filler may not scrap.
    let (code, _, err) = handheld(&["scrap", "0101000001", "--reason", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("role_forbidden"), "{err}");
    let _ = node.kill();
    let _ = node.wait();
}
