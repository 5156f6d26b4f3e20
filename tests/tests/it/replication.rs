//! Replication over real QUIC with mutual TLS between real node processes: enrolment
//! with a one-time code, a station's demo data reaching an empty head office, live
//! pushes both ways (a station's fill; the head office's scrap refusing the station's
//! next fill), and a station enrolled with another enterprise's CA refused.
//!
//! The second test is the acceptance walk: head office, two stations and a regulator
//! laptop; the head office goes down and comes back cut off; everyone works offline
//! (including a fill after the head office's scrap); after the heal all converge with
//! the anomaly listed everywhere and the regulator's hold refusing fills.
//!
//! The third shows a station offering another enterprise's events to its head office:
//! refused, logged with the event's id, not stored.

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

fn enrolment_code_for(head_office: &Path, name: &str, role: &str) -> String {
    let mut c = Command::new(node_bin());
    c.args(["enrolment", "create", "--name", name, "--role", role, "--data"]).arg(head_office);
    let (code, out, err) = run(c).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    out.lines().last().unwrap().trim().to_owned()
}

/// `node run` of the node called `name` under `dir` with `args`.
fn node(dir: &Path, name: &str, args: &[&str]) -> NodeProcess {
    let data = dir.join(name);
    let http = free_port();
    let mut c = Command::new(node_bin());
    c.args(["run", "--mdns", "off", "--http", &format!("127.0.0.1:{http}")]).args(args).arg("--data").arg(&data);
    let log = dir.join(format!("{name}.log"));
    // Keep earlier runs' logs: a restart appends.
    let earlier = std::fs::read_to_string(&log).unwrap_or_default();
    let node = NodeProcess::start(c, format!("http://127.0.0.1:{http}"), data, &dir.join(format!("{name}.run.log")));
    let now = std::fs::read_to_string(dir.join(format!("{name}.run.log"))).unwrap_or_default();
    std::fs::write(&log, format!("{earlier}{now}")).unwrap();
    node.unwrap()
}

fn login(url: &str, account: &str) -> Client {
    let mut c = Client::new(url);
    c.login(account, "demo-pass").unwrap();
    c
}

fn op(c: &Client, id: &str, code: &str, op: Operation) -> Result<handheld_proto::OperationResponse, String> {
    c.operation(&OperationRequest { op_id: id.into(), code: code.into(), op }).map_err(|e| format!("{e:?}"))
}

fn fingerprints(c: &Client) -> Option<(String, String)> {
    c.health().ok().map(|h| (h.events_fingerprint, h.documents_fingerprint))
}

/// Every cylinder's derived state as each node lists it.
fn states(c: &Client) -> Vec<serde_json::Value> {
    let page = c.cylinders(&handheld_proto::ListQuery { page_size: Some(500), ..Default::default() }).unwrap();
    page.items.iter().map(|s| serde_json::to_value(s).unwrap()).collect()
}

#[test]
fn head_office_two_stations_and_a_regulator_converge_after_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ho_data = d.join("head-office");
    let codes: Vec<String> = [("station-1", "station"), ("station-2", "station"), ("regulator", "regulator")]
        .iter()
        .map(|(n, r)| enrolment_code_for(&ho_data, n, r))
        .collect();
    let (ho_quic, isolated_quic) = (free_port().to_string(), free_port().to_string());
    let ho_args =
        |quic: &str| vec!["--role".to_owned(), "head-office".into(), "--quic".into(), format!("127.0.0.1:{quic}")];
    let ho_run = |quic: &str| {
        let args = ho_args(quic);
        node(d, "head-office", &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut ho = ho_run(&ho_quic);
    for (name, code) in ["station-1", "station-2", "regulator"].iter().zip(&codes) {
        let (rc, out) = enrol(&d.join(name), &ho.url, code);
        assert_eq!(rc, 0, "{out}");
    }
    let upstream = format!("127.0.0.1:{ho_quic}");
    let st1 = node(d, "station-1", &["--upstream", &upstream, "--demo", "--demo-cylinders", "60"]);
    let st2 = node(d, "station-2", &["--upstream", &upstream]);
    let mut reg = node(d, "regulator", &["--role", "regulator", "--upstream", &upstream]);
    let all = |ho: &NodeProcess, reg: &NodeProcess| -> Vec<Client> {
        [&ho.url, &st1.url, &st2.url, &reg.url].iter().map(|u| Client::new(u)).collect()
    };
    let converged = |clients: &[Client]| {
        let fps: Vec<Option<(String, String)>> = clients.iter().map(fingerprints).collect();
        fps[0].is_some() && fps.iter().all(|f| *f == fps[0])
    };
    eventually(Duration::from_secs(60), "the station's demo data everywhere", || converged(&all(&ho, &reg)));

    // Ordinary LPG cylinders of the demo (beyond the eight well-known ones), by 10-digit code.
    // Those the rules let fill, so that only what happens here can refuse them.
    let plain: Vec<String> = {
        let manager = login(&st1.url, "demo-manager");
        let q = handheld_proto::ListQuery { page_size: Some(500), medium: Some("lpg".into()), ..Default::default() };
        let page = manager.cylinders(&q).unwrap();
        page.items
            .iter()
            .filter(|c| c.code10.as_str() > "0101000008")
            .filter(|c| manager.fill_check(&c.code10, Some("lpg"), None).unwrap().allowed)
            .map(|c| c.code10.clone())
            .collect()
    };
    assert!(plain.len() >= 6, "{plain:?}");
    let pick = |i: usize| plain[i].as_str();

    // The head office goes down; it comes back cut off from the stations (another QUIC
    // port) and scraps 0101000001. Then every node works offline.
    ho.kill();
    ho = ho_run(&isolated_quic);
    let office = login(&ho.url, "demo-inspector");
    op(&office, "ho-scrap", "0101000001", Operation::Scrap { reason: "瓶体裂纹".into() }).unwrap();

    let (filler1, driver1) = (login(&st1.url, "demo-filler"), login(&st1.url, "demo-driver"));
    let lpg = |kg| Operation::Fill { medium: "lpg".into(), filled_mass_kg: kg, batch: None };
    op(&filler1, "s1-fill", "0101000001", lpg(14.2)).expect("the station does not know of the scrap yet");
    op(&driver1, "s1-dispatch", pick(0), Operation::Dispatch { order: None }).unwrap();
    let deliver = |c: &str| Operation::Deliver {
        customer: c.into(),
        order: None,
        customer_name: None,
        customer_phone: None,
        customer_address: None,
    };
    op(&driver1, "s1-deliver", pick(0), deliver("C0001")).unwrap();
    op(&driver1, "s1-return", pick(1), Operation::Return { customer: "C0002".into(), slip: None }).unwrap();

    // Station 2 has no demo data of its own: its staff accounts and cylinders came from
    // station 1 through the head office.
    let (filler2, driver2) = (login(&st2.url, "demo-filler"), login(&st2.url, "demo-driver"));
    op(
        &filler2,
        "s2-fill",
        "0102000001",
        Operation::Fill { medium: "oxygen".into(), filled_mass_kg: 8.0, batch: None },
    )
    .unwrap();
    op(&driver2, "s2-deliver", pick(2), deliver("C0003")).unwrap();
    op(&driver2, "s2-return", pick(3), Operation::Return { customer: "C0004".into(), slip: None }).unwrap();

    // The regulator's laptop records a hold offline; it records nothing else.
    let regulator = login(&reg.url, "demo-regulator");
    let hold =
        Operation::RegulatorFinding { action: "hold".into(), finding: "JC-E2E-1".into(), note: "钢印模糊".into() };
    op(&regulator, "reg-hold", pick(4), hold).unwrap();
    let manager_at_reg = login(&reg.url, "demo-manager");
    let refused = op(&manager_at_reg, "reg-fill", pick(5), lpg(14.0)).unwrap_err();
    assert!(refused.contains("regulator_node"), "{refused}");
    assert!(filler1.fill_check(pick(4), Some("lpg"), None).unwrap().allowed, "the hold has not arrived yet");

    // The head office comes back where the others expect it: all converge.
    ho.kill();
    ho = ho_run(&ho_quic);
    let healed = Instant::now();
    eventually(Duration::from_secs(10), "identical event and document sets everywhere", || converged(&all(&ho, &reg)));
    eprintln!("converged {:?} after the head office was back", healed.elapsed());
    let clients = all(&ho, &reg);
    let mut logged_in: Vec<Client> = clients.iter().map(|c| login(c.base(), "demo-manager")).collect();
    let reference = states(&logged_in[0]);
    assert_eq!(reference.len(), 60);
    for c in &logged_in[1..] {
        assert_eq!(states(c), reference, "derived states at {}", c.base());
    }

    // The fill after the scrap is listed everywhere, with both events as proof.
    for c in &logged_in {
        let q = handheld_proto::AnomalyQuery { kind: Some("fill_after_scrap".into()), ..Default::default() };
        let found = c.anomalies(&q).unwrap();
        assert_eq!(found.total, 1, "at {}: {found:?}", c.base());
        let a = &found.items[0];
        assert_eq!(a.cylinders, ["3701020101000001"]);
        let kinds: Vec<&str> = a.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["scrap", "fill"]);
    }

    // The regulator's hold blocks the next fill at both stations.
    for (filler, id) in [(&filler1, "s1-held"), (&filler2, "s2-held")] {
        let check = filler.fill_check(pick(4), Some("lpg"), None).unwrap();
        assert!(check.reasons.iter().any(|r| r.rule == "regulator_hold"), "{check:?}");
        let err = op(filler, id, pick(4), lpg(14.0)).unwrap_err();
        assert!(err.contains("fill_refused"), "{err}");
    }

    // The head office knows its peers: all three connected, in sync.
    let office = logged_in.remove(0);
    eventually(Duration::from_secs(5), "three peers in sync at the head office", || {
        office
            .peers()
            .is_ok_and(|p| p.len() == 3 && p.iter().all(|p| p.connected && p.lag_ms == 0 && p.last_contact.is_some()))
    });

    // A regulator laptop that wrote a fill anyway (its data directory run once as a
    // station) gets it refused and logged by the head office; nothing of it is stored.
    reg.kill();
    let mut rogue = node(d, "regulator", &[]);
    let rogue_fill = op(&login(&rogue.url, "demo-filler"), "rogue-fill", pick(5), lpg(14.0)).unwrap();
    rogue.kill();
    let _reg = node(d, "regulator", &["--role", "regulator", "--upstream", &upstream]);
    let log = d.join("head-office.run.log");
    eventually(Duration::from_secs(10), "the head office logs the refused fill", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("may not write fill"))
    });
    let events = office.events(pick(5)).unwrap();
    assert!(events.iter().all(|e| e.id != rogue_fill.event.id), "the rogue fill is not stored");
}

/// A long push cut part way resumes where the receiver last said it held the data
/// durably, in both directions: a station's first upload cut by the head office's crash,
/// and the head office's relay of that station's data to a second station cut by the
/// second station's crash. Each next session sends what came after the last mark
/// answered, not everything again, and the nodes then agree.
#[test]
fn a_long_push_cut_part_way_resumes_where_the_receiver_held_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ho_data = d.join("head-office");
    let codes = ["station-1", "station-2"].map(|name| enrolment_code(&ho_data, name));
    // A mark at every page of a push (16,384 changes): four in the events.
    let config = d.join("marks.toml");
    std::fs::write(&config, "sync_mark_kib = 16\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let quic = format!("127.0.0.1:{}", free_port());
    let ho_args = ["--config", &config, "--role", "head-office", "--quic", &quic];
    let mut ho = node(d, "head-office", &ho_args);
    for (name, code) in ["station-1", "station-2"].iter().zip(&codes) {
        let (rc, out) = enrol(&d.join(name), &ho.url, code);
        assert_eq!(rc, 0, "{out}");
    }
    let st1 = node(d, "station-1", &["--config", &config, "--upstream", &quic, "--demo", "--demo-cylinders", "3000"]);
    let total = Client::new(&st1.url).health().unwrap().events;
    // Resumed, a push sends the events after the last mark the receiver answered (the
    // first came after 16,384 of them), a page or two behind what it held; from scratch
    // it would send every event again, and the documents and seals before them.
    let resumed = |again: u64, held: u64| {
        let what = format!("{again} items went again; the receiver held {held} of {total} events when it was killed");
        eprintln!("{what}");
        assert!(held < total, "the push ended before the receiver was killed: {what}");
        assert!(again + 8_000 < total, "{what}");
        assert!(again + held <= total + 2 * 16_384, "{what}");
    };
    let at_40 = |c: &Client| c.health().is_ok_and(|h| h.events >= total * 2 / 5);
    let agree = |a: &NodeProcess, b: &NodeProcess| {
        let (a, b) = (Client::new(&a.url), Client::new(&b.url));
        fingerprints(&a).is_some() && fingerprints(&a) == fingerprints(&b)
    };
    let sent_by = |c: &Client| c.peers().unwrap().iter().map(|p| p.items_sent).sum::<u64>();

    // The station's first upload; the head office killed part way.
    eventually(Duration::from_secs(120), "40 % of the events at the head office", || at_40(&Client::new(&ho.url)));
    ho.kill();
    let held = open_store(&ho_data, "3701020001").counts().unwrap().1;
    let manager = login(&st1.url, "demo-manager");
    let before = sent_by(&manager);
    let ho = node(d, "head-office", &ho_args);
    eventually(Duration::from_secs(120), "the head office holds what station-1 holds", || agree(&ho, &st1));
    resumed(sent_by(&manager) - before, held);

    // The head office relays it all to a second station, killed part way.
    let st2_args = ["--config", &config, "--upstream", &quic];
    let mut st2 = node(d, "station-2", &st2_args);
    eventually(Duration::from_secs(120), "40 % of the events at station-2", || at_40(&Client::new(&st2.url)));
    st2.kill();
    let held = open_store(&d.join("station-2"), "3701020001").counts().unwrap().1;
    let office = login(&ho.url, "demo-manager");
    let before = sent_by(&office);
    let st2 = node(d, "station-2", &st2_args);
    eventually(Duration::from_secs(120), "station-2 holds what the head office holds", || agree(&ho, &st2));
    resumed(sent_by(&office) - before, held);
}

/// Opens a stopped node's store the way `node run` does, for enterprise `enterprise`.
fn open_store(data: &Path, enterprise: &str) -> node::store::Store {
    let options = node::store::StoreOptions {
        enterprise: enterprise.to_owned(),
        cache_bytes: 16 << 20,
        quick_repair: false,
        judge: schema::anomaly::Judge::embedded(enterprise),
    };
    node::store::Store::open(&data.join("node.redb"), options, std::sync::Arc::new(node::clock::SystemClock)).unwrap()
}

/// A station of enterprise A whose store holds events written by a station of enterprise
/// B (copied in before it was enrolled: a reused box, a restored backup) offers them to
/// its head office with its own; the head office refuses and logs B's, stores A's.
#[test]
fn a_station_sending_another_enterprises_events_has_them_refused_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Enterprise B's station records its demo data (its own node key, region 370103).
    let b_config = d.join("b.toml");
    std::fs::write(&b_config, "enterprise = \"3701030001\"\nregion = \"370103\"\n").unwrap();
    let b_cfg = b_config.display().to_string();
    let mut b1 = node(d, "b-station", &["--config", &b_cfg, "--demo", "--demo-cylinders", "8"]);
    b1.kill();
    // Its events as it holds them (sealed: without their signatures) and its seals.
    let (foreign, b_seals): (Vec<schema::event::SignedEvent>, Vec<Vec<u8>>) = {
        let b_store = open_store(&d.join("b-station"), "3701030001");
        let (_, rows) = b_store.list(&node::store::CylinderFilter::default(), 0, 100).unwrap();
        assert_eq!(rows.len(), 8);
        let mut events = Vec::new();
        for row in &rows {
            let code = row.archive.code.parse().unwrap();
            events.extend(b_store.events_of(&code, 1000).unwrap());
        }
        let replica = node::store::replica::Replica::new(b_store.clone());
        let scope = node::store::replica::seals_scope("3701030001");
        let ids = sync::store::ItemStore::ids(&replica, scope.as_bytes(), &[]).unwrap();
        let seals = sync::store::ItemStore::get_many(&replica, scope.as_bytes(), &ids).unwrap();
        drop(replica);
        b_store.shutdown();
        (events, seals)
    };
    assert!(!b_seals.is_empty(), "B sealed its demo data");
    assert!(foreign.len() >= 8, "{}", foreign.len());

    // A station of enterprise A gets them before it is enrolled (an unenrolled node takes
    // what it is given), then is enrolled with A's head office and creates its own data.
    let a_data = d.join("a-station");
    std::fs::create_dir_all(&a_data).unwrap();
    {
        let a_store = open_store(&a_data, "3701020001");
        let mut replica = node::store::replica::Replica::new(a_store.clone());
        let seals = node::store::replica::seals_scope("3701020001");
        let received = sync::store::ItemStore::put(&mut replica, seals.as_bytes(), b_seals.clone()).unwrap();
        assert_eq!(received.stored.len(), b_seals.len(), "{:?}", received.refused);
        let items: Vec<Vec<u8>> = foreign.iter().map(|e| e.to_stored()).collect();
        let scope = node::store::replica::events_scope("3701020001");
        let received = sync::store::ItemStore::put(&mut replica, scope.as_bytes(), items).unwrap();
        assert_eq!(received.stored.len(), foreign.len(), "{:?}", received.refused);
        a_store.shutdown();
    }
    let code = enrolment_code_for(&d.join("head-office"), "a-station", "station");
    let quic = free_port().to_string();
    let ho = node(d, "head-office", &["--role", "head-office", "--quic", &format!("127.0.0.1:{quic}")]);
    let (rc, out) = enrol(&a_data, &ho.url, &code);
    assert_eq!(rc, 0, "{out}");
    let a1 = node(d, "a-station", &["--upstream", &format!("127.0.0.1:{quic}"), "--demo", "--demo-cylinders", "8"]);

    // The head office takes A's cylinders and refuses B's events, saying why.
    let (a_client, ho_client) = (Client::new(&a1.url), Client::new(&ho.url));
    let own = a_client.health().unwrap();
    assert_eq!(own.events as usize, foreign.len() + own_events(&a_client), "A holds both");
    let log = d.join("head-office.run.log");
    eventually(Duration::from_secs(20), "the head office logs the refused events", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("refused: signer") && l.contains("not an enrolled node"))
    });
    eventually(Duration::from_secs(20), "A's own data at the head office", || {
        ho_client.health().is_ok_and(|h| h.cylinders == 8 && h.events as usize == own_events(&a_client))
    });
    drop(a1);
    drop(ho);
    let ho_store = open_store(&d.join("head-office"), "3701020001");
    let ids: Vec<schema::event::EventId> = foreign.iter().map(|e| e.id).collect();
    assert!(ho_store.events_by_id(&ids).unwrap().is_empty(), "none of B's events is stored at A's head office");
    let refused = std::fs::read_to_string(&log).unwrap();
    // The first refusals of each batch are listed with their event ids, the rest counted.
    assert!(foreign.iter().any(|e| refused.contains(&e.id.to_string())), "the log names refused events");
    if foreign.len() > node::replication::REFUSALS_LOGGED {
        assert!(refused.contains("refused more items from the peer"), "the others are counted");
    }
    ho_store.shutdown();
}

/// Events of the node's own cylinders (those with rows), counted through its API.
fn own_events(c: &Client) -> usize {
    let mut manager = Client::new(c.base());
    manager.login("demo-manager", "demo-pass").unwrap();
    let page = manager.cylinders(&handheld_proto::ListQuery { page_size: Some(500), ..Default::default() }).unwrap();
    page.items.iter().map(|row| manager.events(&row.code10).unwrap().len()).sum()
}

/// `node` with `args`; its exit code and output.
fn node_cli(args: &[&str]) -> (i32, String) {
    let mut c = Command::new(node_bin());
    c.args(args);
    let (rc, out, err) = run(c).unwrap();
    (rc, format!("{out}{err}"))
}

/// A regulator's laptop of 济南市 (370100) enrols with the head offices of two enterprises
/// of the city and is refused by one of 青岛 (370202); with no `--upstream` it pulls both
/// enterprises, each into its own store, and its hold on the second enterprise's cylinder
/// reaches that enterprise's head office, refusing fills there, and nowhere else.
#[test]
fn a_regulator_pulls_every_enterprise_of_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = |name: &str, text: &str| {
        let path = d.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let offices = [
        ("ho-a", config("a", "enterprise = \"3701020001\"\nregion = \"370102\"\n")),
        ("ho-b", config("b", "enterprise = \"3701120001\"\nregion = \"370112\"\n")),
        ("ho-c", config("c", "enterprise = \"3702020001\"\nregion = \"370202\"\n")),
    ];
    let reg_cfg = config("r", "enterprise = \"3701020001\"\nregion = \"370100\"\nrole = \"regulator\"\n");
    let reg_data = d.join("regulator").display().to_string();
    let mut running = Vec::new();
    let mut enrolled = Vec::new();
    for (name, cfg) in &offices {
        let data = d.join(name).display().to_string();
        let create = ["enrolment", "create", "--name", "regulator-1", "--role", "regulator", "--config", cfg];
        let (rc, out) = node_cli(&[&create[..], &["--data", &data]].concat());
        assert_eq!(rc, 0, "{out}");
        let code = out.lines().last().unwrap().trim().to_owned();
        let quic = format!("127.0.0.1:{}", free_port());
        let args = ["--config", cfg, "--role", "head-office", "--quic", &quic, "--demo", "--demo-cylinders", "16"];
        let ho = node(d, name, &args);
        let enrol = ["enrol", "--config", &reg_cfg, "--head-office", &ho.url, "--code", &code, "--data", &reg_data];
        enrolled.push(node_cli(&enrol));
        running.push(ho);
    }
    assert_eq!(enrolled[0].0, 0, "{}", enrolled[0].1);
    assert_eq!(enrolled[1].0, 0, "{}", enrolled[1].1);
    assert_ne!(enrolled[2].0, 0, "an enterprise outside the region is refused");
    assert!(enrolled[2].1.contains("outside this regulator's region 370100"), "{}", enrolled[2].1);
    assert!(!d.join("regulator/enterprises/3702020001").exists(), "nothing of it is kept");
    let (ho_a, ho_b) = (&running[0], &running[1]);

    // No `--upstream`: each store replicates with the head office it was enrolled by.
    let reg = node(d, "regulator", &["--config", &reg_cfg]);
    let at_reg = Client::new(&reg.url);
    eventually(Duration::from_secs(30), "enterprise A's data at the laptop", || {
        fingerprints(&at_reg).is_some() && fingerprints(&at_reg) == fingerprints(&Client::new(&ho_a.url))
    });
    assert_eq!(at_reg.health().unwrap().other_enterprises, vec!["3701120001".to_owned()]);
    let regulator = login(&reg.url, "demo-regulator");
    let list = |enterprise: Option<&str>| {
        let q = handheld_proto::ListQuery {
            page_size: Some(500),
            enterprise: enterprise.map(str::to_owned),
            ..Default::default()
        };
        regulator.cylinders(&q).map_err(|e| format!("{e:?}"))
    };
    eventually(Duration::from_secs(30), "enterprise B's cylinders at the laptop", || {
        list(Some("3701120001")).is_ok_and(|p| p.total == 16)
    });
    let own = list(None).unwrap();
    assert_eq!(own.total, 16);
    assert!(own.items.iter().all(|c| c.code.starts_with("370102")), "A's list holds only A's cylinders");
    let b_list = list(Some("3701120001")).unwrap();
    assert!(b_list.items.iter().all(|c| c.code.starts_with("370112")), "B's list holds only B's cylinders");
    let unknown = list(Some("3702020001")).unwrap_err();
    assert!(unknown.contains("unknown_enterprise"), "{unknown}");

    // A cylinder of B that B's head office would fill now: the laptop holds it back.
    let b_manager = login(&ho_b.url, "demo-manager");
    let target = b_list
        .items
        .iter()
        .filter(|c| c.code10.as_str() > "0101000008")
        .find(|c| b_manager.fill_check(&c.code10, Some("lpg"), None).is_ok_and(|r| r.allowed))
        .expect("a fillable LPG cylinder of B")
        .clone();
    let detail = regulator.cylinder(&target.code).unwrap();
    assert_eq!(detail.archive.code, target.code, "the laptop answers for B's cylinder by its 16-digit code");
    let hold =
        Operation::RegulatorFinding {
            action: "hold".into(), finding: "JC-B-1".into(), note: "检验标记不清".into()
        };
    op(&regulator, "reg-hold-b", &target.code, hold).unwrap();
    eventually(Duration::from_secs(10), "the hold refuses fills at B's head office", || {
        b_manager
            .fill_check(&target.code10, Some("lpg"), None)
            .is_ok_and(|r| !r.allowed && r.reasons.iter().any(|x| x.rule == "regulator_hold"))
    });
    // Nothing of B reached A: its head office does not know the cylinder, and the
    // laptop's own store still agrees with it.
    assert!(login(&ho_a.url, "demo-manager").cylinder(&target.code).is_err());
    assert_eq!(fingerprints(&at_reg), fingerprints(&Client::new(&ho_a.url)));
}

/// While a station uploads its log, a head office holds back the bulk it would relay to
/// the others, but a safety fact written meanwhile (a scrap at the head office) reaches
/// an idle station at once, before the upload has ended.
#[test]
fn a_scrap_at_the_head_office_reaches_an_idle_station_while_another_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let codes = ["station-1", "station-2"].map(|name| enrolment_code(&d.join("head-office"), name));
    let quic = format!("127.0.0.1:{}", free_port());
    let ho = node(d, "head-office", &["--role", "head-office", "--quic", &quic]);
    for (name, code) in ["station-1", "station-2"].iter().zip(&codes) {
        let (rc, out) = enrol(&d.join(name), &ho.url, code);
        assert_eq!(rc, 0, "{out}");
    }
    let mut st2 = node(d, "station-2", &["--upstream", &quic]);
    // Marks every page (16,384 events): the head office commits, and shows, the upload in steps.
    let config = d.join("marks.toml");
    std::fs::write(&config, "sync_mark_kib = 16\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let st1 = node(d, "station-1", &["--config", &config, "--upstream", &quic, "--demo", "--demo-cylinders", "3000"]);
    let total = Client::new(&st1.url).health().unwrap().events;
    let (office, idle) = (Client::new(&ho.url), Client::new(&st2.url));
    // The station's staff records come first; the scrap goes in while its events stream.
    let mut inspector = Client::new(&ho.url);
    eventually(Duration::from_secs(120), "the station's staff at the head office", || {
        inspector.login("demo-inspector", "demo-pass").is_ok()
    });
    eventually(Duration::from_secs(120), "the station's events streaming in", || {
        office.health().is_ok_and(|h| h.events >= 16_384)
    });
    let scrap = op(&inspector, "ho-scrap", "0101000001", Operation::Scrap { reason: "瓶体裂纹".into() }).unwrap();
    let at = Instant::now();
    let office_at_scrap = office.health().unwrap().events;
    assert!(office_at_scrap < total, "the upload ended before the scrap: nothing to judge");
    let mut office_then = 0;
    eventually(Duration::from_secs(120), "an event at the idle station", || {
        office_then = office.health().map_or(0, |h| h.events);
        idle.health().is_ok_and(|h| h.events >= 1)
    });
    let took = at.elapsed();
    st2.kill();
    let id = schema::event::EventId(schema::event::parse_hex(&scrap.event.id).unwrap());
    let held = open_store(&d.join("station-2"), "3701020001").events_by_id(&[id]).unwrap();
    eprintln!(
        "the scrap reached the idle station after {took:?}; the head office held {office_at_scrap} of {total} events \
         at the scrap and {office_then} then"
    );
    assert_eq!(held.len(), 1, "the idle station's first event is not the scrap");
    assert!(office_then < total, "the scrap waited for the upload's end ({took:?})");
}

/// A scrap at one station and a regulator's hold, made while another station uploads
/// its demo data, reach the head office before the page of the upload under way, and a
/// third station before the upload ends (the hold refusing a fill there): the head office
/// holds back only the upload, and takes in and relays at once what a station sends
/// outside one (a handheld's operation) and what a regulator's laptop sends, as it does
/// its own writes.
#[test]
fn a_scrap_and_a_regulators_hold_reach_other_nodes_while_a_station_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names =
        [("station-1", "station"), ("station-2", "station"), ("station-3", "station"), ("regulator", "regulator")];
    let codes = names.map(|(name, role)| enrolment_code_for(&d.join("head-office"), name, role));
    let quic = format!("127.0.0.1:{}", free_port());
    let ho = node(d, "head-office", &["--role", "head-office", "--quic", &quic]);
    for ((name, _), code) in names.iter().zip(&codes) {
        let (rc, out) = enrol(&d.join(name), &ho.url, code);
        assert_eq!(rc, 0, "{out}");
    }
    // The station that scraps holds two demo cylinders (and the demo staff); the idle one
    // and the regulator's laptop take in what it has first.
    let st3 = node(d, "station-3", &["--upstream", &quic, "--demo", "--demo-cylinders", "2"]);
    let mut st2 = node(d, "station-2", &["--upstream", &quic]);
    let reg = node(d, "regulator", &["--role", "regulator", "--upstream", &quic]);
    let (office, idle, writer) = (Client::new(&ho.url), Client::new(&st2.url), Client::new(&st3.url));
    let laptop = Client::new(&reg.url);
    eventually(Duration::from_secs(120), "the scrapping station's data everywhere", || {
        let w = fingerprints(&writer);
        w.is_some() && w == fingerprints(&office) && w == fingerprints(&idle) && w == fingerprints(&laptop)
    });
    // The second demo cylinder is overdue for inspection; no hold refuses it yet.
    let filler = login(&st3.url, "demo-filler");
    let held = |c: &handheld_proto::FillCheckResponse| c.reasons.iter().any(|r| r.rule == "regulator_hold");
    assert!(!held(&filler.fill_check("0101000002", Some("lpg"), None).unwrap()), "held before the hold");
    let base = office.health().unwrap().events;
    // Marks every page (16,384 events): the head office commits, and shows, the upload in steps.
    let config = d.join("marks.toml");
    std::fs::write(&config, "sync_mark_kib = 16\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let st1 = node(d, "station-1", &["--config", &config, "--upstream", &quic, "--demo", "--demo-cylinders", "3000"]);
    let total = base + Client::new(&st1.url).health().unwrap().events;
    eventually(Duration::from_secs(120), "the upload streaming in", || {
        office.health().is_ok_and(|h| h.events >= base + 16_384)
    });
    let scrap = op(
        &login(&st3.url, "demo-inspector"),
        "st3-scrap",
        "0101000001",
        Operation::Scrap { reason: "瓶体裂纹".into() },
    )
    .unwrap();
    let at = Instant::now();
    let office_at_scrap = office.health().unwrap().events;
    assert!(office_at_scrap < total, "the upload ended before the scrap: nothing to judge");
    let page_end = base + ((office_at_scrap - base) / 16_384 + 1) * 16_384;
    let has_scrap = |c: &Client| c.events("0101000001").is_ok_and(|e| e.iter().any(|e| e.id == scrap.event.id));
    let (office_watch, watcher) = (login(&ho.url, "demo-manager"), login(&st2.url, "demo-manager"));
    eventually(Duration::from_secs(120), "the scrap at the head office", || has_scrap(&office_watch));
    let office_held = office.health().unwrap().events;
    eventually(Duration::from_secs(120), "the scrap at the idle station", || has_scrap(&watcher));
    let office_then = office.health().unwrap().events;
    let took = at.elapsed();
    // The regulator holds the scrapping station's other cylinder; its next fill there is
    // refused, while the upload still streams in.
    let hold =
        Operation::RegulatorFinding { action: "hold".into(), finding: "JC-UP-1".into(), note: "钢印模糊".into() };
    op(&login(&reg.url, "demo-regulator"), "reg-hold-upload", "0101000002", hold).unwrap();
    let held_at = Instant::now();
    eventually(Duration::from_secs(120), "the hold refusing a fill at the station", || {
        filler.fill_check("0101000002", Some("lpg"), None).is_ok_and(|c| held(&c))
    });
    let office_at_hold = office.health().unwrap().events;
    let hold_took = held_at.elapsed();
    st2.kill();
    eprintln!(
        "the scrap reached the idle station after {took:?}; the head office held {office_at_scrap} of {total} events \
         at the scrap, {office_held} once it held the scrap and {office_then} then; the hold refused a fill at the \
         station after {hold_took:?}, the head office holding {office_at_hold}"
    );
    assert!(office_held < page_end, "the scrap waited at the head office for the upload's page ({office_held})");
    assert!(office_then < total, "the scrap waited for the upload's end ({took:?})");
    assert!(office_at_hold < total, "the hold waited for the upload's end ({hold_took:?})");
}
