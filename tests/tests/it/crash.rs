//! Concurrent fills against a real node process, SIGKILL mid-stream, restart: every
//! acknowledged operation is there, once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handheld_proto::client::Client;
use handheld_proto::{ListQuery, Operation, OperationRequest};
use tests::{NodeProcess, free_port, node_bin};

fn start(data: &std::path::Path, port: u16, demo: bool) -> NodeProcess {
    let mut cmd = std::process::Command::new(node_bin());
    cmd.args(["run", "--mdns", "off", "--http", &format!("127.0.0.1:{port}"), "--data"]).arg(data);
    if demo {
        cmd.args(["--demo", "--demo-cylinders", "150"]);
    }
    NodeProcess::start(cmd, format!("http://127.0.0.1:{port}"), data.to_path_buf(), &data.with_extension("log"))
        .unwrap()
}

#[test]
fn every_acknowledged_fill_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut node = start(&data, port, true);

    let mut filler = Client::new(&node.url);
    filler.login("demo-filler", "demo-pass").unwrap();
    let page = filler
        .cylinders(&ListQuery { medium: Some("lpg".into()), page_size: Some(200), ..Default::default() })
        .unwrap();
    let good: Vec<String> = page
        .items
        .iter()
        .filter(|c| filler.fill_check(&c.code, Some("lpg"), Some(14.0)).map(|r| r.allowed).unwrap_or(false))
        .map(|c| c.code.clone())
        .collect();
    assert!(good.len() >= 20, "enough fillable demo cylinders: {}", good.len());

    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..8 {
        let (client, good, acked, stop) = (filler.clone(), good.clone(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let code = good[(t * 7 + i) % good.len()].clone();
                let req = OperationRequest {
                    op_id: format!("crash-{t}-{i}"),
                    code: code.clone(),
                    op: Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.0, batch: None },
                };
                match client.operation(&req) {
                    Ok(resp) => acked.lock().unwrap().push((req.op_id, code, resp.event.id)),
                    Err(_) => break, // the node is gone
                }
                i += 1;
            }
        }));
    }
    // Let the fills run, then kill the node while they are in flight.
    std::thread::sleep(Duration::from_millis(1500));
    node.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the stream was running: {} acknowledged", acked.len());

    let node = start(&data, port, false);
    let mut client = Client::new(&node.url);
    client.login("demo-filler", "demo-pass").unwrap();
    let codes: BTreeSet<&String> = acked.iter().map(|(_, c, _)| c).collect();
    let mut stored = BTreeSet::new();
    for code in codes {
        let events = client.events(code).unwrap();
        let ids: Vec<&String> = events.iter().map(|e| &e.id).collect();
        let unique: BTreeSet<&&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "no event twice for {code}");
        stored.extend(events.into_iter().map(|e| e.id));
    }
    for (op_id, code, id) in &acked {
        assert!(stored.contains(id), "acknowledged fill {op_id} on {code} ({id}) lost after SIGKILL");
    }
    // A handheld retrying an acknowledged op_id after the restart gets the same event.
    let (op_id, code, id) = &acked[acked.len() / 2];
    let replay = client
        .operation(&OperationRequest {
            op_id: op_id.clone(),
            code: code.clone(),
            op: Operation::Fill { medium: "lpg".into(), filled_mass_kg: 14.0, batch: None },
        })
        .unwrap();
    assert_eq!(&replay.event.id, id);
    assert!(replay.replayed);
}
