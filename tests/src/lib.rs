//! Helpers for end-to-end tests: build and start real `node` processes, run the real
//! `handheld` binary, optionally inside a network namespace of their own.

#![allow(clippy::print_stderr)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Directory of the workspace's binaries for the current profile, built on first use.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test binary>
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "node", "-p", "handheld-proto", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building node and handheld failed");
        dir
    })
}

pub fn node_bin() -> PathBuf {
    bin_dir().join("node")
}

pub fn handheld_bin() -> PathBuf {
    bin_dir().join("handheld")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A network namespace with only a loopback interface, removed on drop. mDNS tests run
/// in one so that nothing they send can reach this machine's real interfaces.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("cyl-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out =
            Command::new("ip").args(["netns", "add", &name]).output().context("running `ip netns add` (iproute2)")?;
        if !out.status.success() {
            bail!("`ip netns add` failed (needs root and iproute2): {}", String::from_utf8_lossy(&out.stderr));
        }
        let ns = Netns { name };
        let out = ns.command("ip").args(["link", "set", "lo", "up"]).output()?;
        if !out.status.success() {
            bail!("bringing lo up: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(ns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A running node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl NodeProcess {
    /// Starts `node run` with `args` (given by the caller: data dir, mdns, demo...) and
    /// waits until it answers `/healthz` (checked with `curl`-free plain TCP via the
    /// handheld client).
    pub fn start(mut cmd: Command, url: String, data: PathBuf, log: &Path) -> anyhow::Result<NodeProcess> {
        let log_file = std::fs::File::create(log)?;
        let child = cmd.stdout(Stdio::null()).stderr(log_file).spawn().context("starting node")?;
        let mut node = NodeProcess { child, url, data };
        node.wait_healthy(Duration::from_secs(120), log)?;
        Ok(node)
    }

    pub fn wait_healthy(&mut self, within: Duration, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = handheld_proto::client::Client::new(&self.url);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("node exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            if client.health().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("node did not become healthy: {}", std::fs::read_to_string(log).unwrap_or_default())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub fn run(mut cmd: Command) -> anyhow::Result<(i32, String, String)> {
    let Output { status, stdout, stderr } = cmd.output().context("running command")?;
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}
