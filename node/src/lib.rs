//! The station / head-office node.
//!
//! A node stores cylinder history as signed events and editable records as Automerge
//! documents in one redb file ([`store`]), serves the handheld HTTP API ([`api`]),
//! advertises itself over mDNS ([`discovery`]) and enforces the safety rules of `schema`
//! on every fill, with or without a network. [`Node::start`] wires the parts together
//! from validated [`config::Settings`] and injected [`Deps`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod convert;
pub mod demo;
pub mod discovery;
pub mod enrolment;
pub mod import;
pub mod metrics;
pub mod replication;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::App;
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;

/// What the node gets from outside: the listener, the store and the clock.
#[derive(Debug)]
pub struct Deps {
    pub listener: TcpListener,
    pub store: Store,
    /// A regulator's laptop: the stores of the other enterprises of its region it is
    /// enrolled with (empty on every other node).
    pub others: Vec<Store>,
    pub clock: Arc<dyn Clock>,
    /// Replication peers, shared with the replication tasks.
    pub peers: Arc<replication::peers::Peers>,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    server: JoinHandle<std::io::Result<()>>,
    stop: oneshot::Sender<()>,
    advertiser: Option<discovery::Advertiser>,
}

impl Node {
    pub fn start(settings: Settings, deps: Deps) -> anyhow::Result<Node> {
        let addr = deps.listener.local_addr().context("listener address")?;
        let app = Arc::new(App {
            settings,
            store: deps.store,
            others: deps.others,
            clock: deps.clock,
            metrics: Default::default(),
            peers: deps.peers,
        });
        let router = api::router(app.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(deps.listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let instance = format!("cylinder-node-{}", &app.store.node_id().to_string()[..12]);
        let advertiser = discovery::advertise(
            &app.settings.mdns,
            &instance,
            &app.settings.station_name,
            app.settings.enterprise.as_str(),
            addr.port(),
            addr.ip(),
        )
        .map_err(anyhow::Error::msg)?;
        tracing::info!(%addr, node = %app.store.node_id(), station = %app.settings.station_name, mdns = ?app.settings.mdns, "node listening");
        Ok(Node { addr, app, server, stop, advertiser })
    }

    /// Stops accepting requests, finishes those in flight, then stops the writer and
    /// closes the database cleanly (a file closed without this needs a repair on the
    /// next start).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(a) = self.advertiser {
            a.stop();
        }
        let _ = self.stop.send(());
        self.server.await.context("server task")?.context("server")?;
        // Requests still finishing on blocking threads hold the app for a moment.
        let mut app = self.app;
        for _ in 0..500 {
            match Arc::try_unwrap(app) {
                Ok(app) => {
                    // Waiting for the writer blocks: not on an async thread.
                    let stores: Vec<Store> = std::iter::once(app.store).chain(app.others).collect();
                    tokio::task::spawn_blocking(move || stores.into_iter().for_each(Store::shutdown))
                        .await
                        .context("store shutdown")?;
                    return Ok(());
                }
                Err(shared) => {
                    app = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        tracing::warn!("requests still running after 5 s; the database will be repaired on the next start");
        Ok(())
    }
}
