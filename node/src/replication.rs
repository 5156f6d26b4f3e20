//! Replication over QUIC: drives the sans-IO `sync` session over one bidirectional
//! stream per connection, with mutual TLS (see [`tls`]).
//!
//! A station connects to its head office, reconciles, then stays connected: it starts a
//! new round as soon as one of its own commits lands and at least every second, so data
//! committed on either side reaches the other within about a second. It reconnects with
//! backoff capped at 30 s; the station never waits on the link.

pub mod tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sync::frame::Decoder;
use sync::session::{Session, SessionOptions};
use tokio::sync::watch;

use crate::store::Store;
use crate::store::replica::{Replica, docs_scope, events_scope};

/// How often an idle station starts a round anyway (to learn the head office's news).
const ROUND_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn options(store: &Store, initiator: bool) -> SessionOptions {
    let e = store.enterprise();
    SessionOptions {
        initiator,
        scopes: vec![docs_scope(e).into_bytes(), events_scope(e).into_bytes()],
        ..SessionOptions::default()
    }
}

/// Runs one session over a stream until the peer closes it or an error occurs.
async fn run_session(
    store: Store,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    initiator: bool,
    mut commits: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut replica = Replica { store: store.clone() };
    let mut session = Session::new(options(&store, initiator));
    // Storage calls block (redb, the writer's commit): keep them off the async threads.
    tokio::task::block_in_place(|| session.start(&replica, now()))?;
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut tick = tokio::time::interval(ROUND_EVERY.min(Duration::from_millis(250)));
    let mut last_round = Instant::now();
    loop {
        while let Some(frame) = tokio::task::block_in_place(|| session.poll_transmit(&replica))? {
            send.write_all(&frame.encode()).await.context("sending")?;
        }
        for reason in session.take_refusals() {
            tracing::warn!(reason = %reason, "refused an item from the peer");
        }
        tokio::select! {
            read = recv.read(&mut buf) => {
                let Some(n) = read.context("receiving")? else { return Ok(()) };
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame()? {
                    tokio::task::block_in_place(|| session.handle(frame, &mut replica, now()))?;
                }
            }
            changed = commits.changed(), if initiator => {
                changed.context("store closed")?;
                if session.is_in_sync() {
                    tokio::task::block_in_place(|| session.start(&replica, now()))?;
                    last_round = Instant::now();
                }
            }
            _ = tick.tick() => {
                tokio::task::block_in_place(|| session.handle_timeout(&replica, now()))?;
                if initiator && session.is_in_sync() && last_round.elapsed() >= ROUND_EVERY {
                    tokio::task::block_in_place(|| session.start(&replica, now()))?;
                    last_round = Instant::now();
                }
            }
        }
    }
}

/// The head office side: accepts enrolled nodes and answers their sessions. Aborting
/// the returned task ends every connection with it (they live in its `JoinSet`), so the
/// store can close cleanly.
pub fn serve(store: Store, endpoint: quinn::Endpoint) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Some(incoming) = endpoint.accept().await {
            while connections.try_join_next().is_some() {}
            let store = store.clone();
            connections.spawn(async move {
                let remote = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "replication connection refused");
                        return;
                    }
                };
                tracing::info!(%remote, "peer connected");
                loop {
                    let (send, recv) = match conn.accept_bi().await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::info!(%remote, reason = %e, "peer gone");
                            return;
                        }
                    };
                    let commits = store.subscribe();
                    if let Err(e) = run_session(store.clone(), send, recv, false, commits).await {
                        tracing::warn!(%remote, error = %e, "replication session ended");
                    }
                }
            });
        }
    })
}

/// The station side: keeps a session with the head office, reconnecting with backoff.
pub fn connect(
    store: Store,
    endpoint: quinn::Endpoint,
    upstream: SocketAddr,
    config: quinn::ClientConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = async {
                let conn = endpoint.connect_with(config.clone(), upstream, tls::HEAD_OFFICE_NAME)?.await?;
                tracing::info!(%upstream, "connected to the head office");
                let (send, recv) = conn.open_bi().await?;
                run_session(store.clone(), send, recv, true, store.subscribe()).await
            };
            match attempt.await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => tracing::warn!(%upstream, error = %e, retry_in = ?backoff, "head office unreachable"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}
