//! The handheld page in a real browser (Debian's Chromium driven by playwright-core):
//! log in, scan, refusal with its alarm, a recorded fill. Installs Chromium and the
//! npm package first when they are missing, so `cargo test` works on a fresh machine.

use std::path::Path;
use std::process::Command;

use tests::{NodeProcess, free_port, node_bin, run};

fn ensure_browser(web: &Path) {
    if !Path::new("/usr/bin/chromium").exists() {
        let status = Command::new("apt-get").args(["install", "-y", "-qq", "chromium"]).status().expect("apt-get");
        assert!(status.success(), "installing Debian's chromium failed");
    }
    if !web.join("node_modules/playwright-core").exists() {
        let status =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(web).status().expect("npm");
        assert!(status.success(), "npm ci in tests/web failed");
    }
}

#[test]
fn the_handheld_page_refuses_with_an_alarm_and_records_a_fill() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    ensure_browser(&web);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut cmd = Command::new(node_bin());
    cmd.args([
        "run",
        "--mdns",
        "off",
        "--demo",
        "--demo-cylinders",
        "60",
        "--http",
        &format!("127.0.0.1:{port}"),
        "--data",
    ])
    .arg(&data);
    let node = NodeProcess::start(cmd, format!("http://127.0.0.1:{port}"), data.clone(), &dir.path().join("node.log"))
        .unwrap();
    let shot = std::env::var("HANDHELD_SCREENSHOT").unwrap_or_default();
    let mut js = Command::new("node");
    js.current_dir(&web).arg("handheld.mjs").arg(&node.url);
    if !shot.is_empty() {
        js.arg(shot);
    }
    let (code, out, err) = run(js).unwrap();
    assert_eq!(code, 0, "browser walk failed:\n{out}\n{err}");
    assert!(out.contains("ok"), "{out}");
}
