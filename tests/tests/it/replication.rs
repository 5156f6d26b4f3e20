//! Replication over real QUIC with mutual TLS between real node processes: enrolment
//! with a one-time code, a station's demo data reaching an empty head office, live
//! pushes both ways (a station's fill; the head office's scrap refusing the station's
//! next fill), and a station enrolled with another enterprise's CA refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use handheld_proto::client::Client;
use handheld_proto::{Operation, OperationRequest};
use tests::{NodeProcess, free_port, node_bin, run};

fn enrolment_code(head_office: &Path, name: &str) -> String {
    let mut c = Command::new(node_bin());
    c.args(["enrolment", "create", "--name", name, "--data"]).arg(head_office);
    let (code, out, err) = run(c).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    out.lines().last().unwrap().trim().to_owned()
}

fn enrol(station: &Path, head_office_url: &str, code: &str) -> (i32, String) {
    let mut c = Command::new(node_bin());
    c.args(["enrol", "--head-office", head_office_url, "--code", code, "--data"]).arg(station);
    let (rc, out, err) = run(c).unwrap();
    (rc, format!("{out}{err}"))
}

fn head_office(dir: &Path, http: u16, quic: u16) -> NodeProcess {
    let data = dir.join("head-office");
    let mut c = Command::new(node_bin());
    c.args(["run", "--role", "head-office", "--mdns", "off", "--http", &format!("127.0.0.1:{http}")])
        .args(["--quic", &format!("127.0.0.1:{quic}"), "--data"])
        .arg(&data);
    NodeProcess::start(c, format!("http://127.0.0.1:{http}"), data, &dir.join("head-office.log")).unwrap()
}

fn station(dir: &Path, name: &str, http: u16, upstream: u16, demo: usize) -> NodeProcess {
    let data = dir.join(name);
    let mut c = Command::new(node_bin());
    c.args([
        "run",
        "--mdns",
        "off",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--upstream",
        &format!("127.0.0.1:{upstream}"),
    ])
    .args(["--demo", "--demo-cylinders", &demo.to_string(), "--data"])
    .arg(&data);
    NodeProcess::start(c, format!("http://127.0.0.1:{http}"), data, &dir.join(format!("{name}.log"))).unwrap()
}

fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {within:?}: {what}");
}

#[test]
fn a_station_replicates_to_its_head_office_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ho_http, ho_quic) = (free_port(), free_port());
    let code = enrolment_code(&dir.path().join("head-office"), "station-1");
    let ho = head_office(dir.path(), ho_http, ho_quic);

    // A code is good once.
    let (rc, out) = enrol(&dir.path().join("station-1"), &ho.url, &code);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = enrol(&dir.path().join("station-x"), &ho.url, &code);
    assert_ne!(rc, 0);
    assert!(out.contains("bad_enrolment_code"), "{out}");

    let st = station(dir.path(), "station-1", free_port(), ho_quic, 60);
    let st_client = Client::new(&st.url);
    let ho_client = Client::new(&ho.url);
    let target = st_client.health().unwrap();
    eventually(Duration::from_secs(30), "the head office has every cylinder and event", || {
        ho_client.health().is_ok_and(|h| h.cylinders == target.cylinders && h.events == target.events)
    });

    // Live: a fill at the station reaches the head office; staff records came along,
    // so the station's accounts log in at the head office too.
    let mut filler = Client::new(&st.url);
    filler.login("demo-filler", "demo-pass").unwrap();
    let fill = filler
        .operation(&OperationRequest {
            op_id: "rep-fill-1".into(),
            code: "0101000001".into(),
            op: Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.0, batch: None },
        })
        .unwrap();
    let mut inspector = Client::new(&ho.url);
    inspector.login("demo-inspector", "demo-pass").unwrap();
    let started = Instant::now();
    eventually(Duration::from_secs(5), "the fill at the head office", || {
        inspector.events("0101000001").is_ok_and(|e| e.iter().any(|e| e.id == fill.event.id))
    });
    eprintln!("station fill visible at the head office after {:?}", started.elapsed());

    // The head office scraps a cylinder: the station refuses its next fill.
    assert!(filler.fill_check("0102000001", Some("oxygen"), None).unwrap().allowed);
    inspector
        .operation(&OperationRequest {
            op_id: "rep-scrap-1".into(),
            code: "0102000001".into(),
            op: Operation::Scrap { reason: "裂纹".into() },
        })
        .unwrap();
    eventually(Duration::from_secs(5), "the scrap at the station", || {
        filler
            .fill_check("0102000001", Some("oxygen"), None)
            .is_ok_and(|r| r.reasons.iter().any(|r| r.rule == "scrapped"))
    });

    // A station enrolled with another head office's CA is refused in the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_http, other_quic) = (free_port(), free_port());
    let other_code = enrolment_code(&other_dir.path().join("head-office"), "intruder");
    let other = head_office(other_dir.path(), other_http, other_quic);
    let (rc, out) = enrol(&dir.path().join("intruder"), &other.url, &other_code);
    assert_eq!(rc, 0, "{out}");
    drop(other);
    let before = ho_client.health().unwrap();
    let _intruder = station(dir.path(), "intruder", free_port(), ho_quic, 20);
    let log = dir.path().join("head-office.log");
    eventually(Duration::from_secs(10), "the head office logs the refused connection", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("replication connection refused"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = ho_client.health().unwrap();
    assert_eq!(after.events, before.events, "nothing from the intruder reached the head office");
    drop(st);
    drop(ho);
}
