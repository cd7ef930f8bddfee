//! A loopback TCP proxy that cuts every connection through it on demand or every few seconds.
//!
//! This is the one fault injector of the chaos run: a watch stream or request cut by the network
//! (a NAT timeout, a load balancer restart, a flaky link) cannot be produced on demand by the
//! real apiserver or operator, so the operator talks to the apiserver through this proxy, which
//! forwards bytes unchanged (TLS passes through end to end) and drops all of its connections at
//! once when told to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct CuttingProxy {
    pub addr: SocketAddr,
    generation: watch::Sender<u64>,
    cuts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    accept: JoinHandle<()>,
    ticker: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let accept = {
            let generation = generation.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::Relaxed);
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                        // Dropping both sockets closes them: the peers see a reset or EOF.
                    });
                }
            })
        };
        Ok(Self {
            addr,
            generation,
            cuts: Arc::new(AtomicU64::new(0)),
            connections,
            accept,
            ticker: None,
        })
    }

    /// Drops every open connection now.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops every open connection every `period` until stopped.
    pub fn cut_every(&mut self, period: Duration) {
        let generation = self.generation.clone();
        let cuts = self.cuts.clone();
        self.ticker = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.tick().await;
            loop {
                interval.tick().await;
                cuts.fetch_add(1, Ordering::Relaxed);
                generation.send_modify(|g| *g += 1);
            }
        }));
    }

    /// Stops the periodic cuts.
    pub fn stop_cutting(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }

    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.stop_cutting();
        self.cut();
    }
}

/// A copy of `kubeconfig` whose clusters point at `proxy` instead (same TLS settings: the
/// apiserver's certificate names 127.0.0.1, which the proxy address is too).
pub fn kubeconfig_via(
    kubeconfig: &std::path::Path,
    proxy: SocketAddr,
    out: &std::path::Path,
) -> Result<()> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let mut value: serde_norway::Value = serde_norway::from_str(&text)?;
    if let Some(clusters) = value.get_mut("clusters").and_then(|c| c.as_sequence_mut()) {
        for cluster in clusters {
            if let Some(server) = cluster.get_mut("cluster").and_then(|c| c.get_mut("server")) {
                *server = serde_norway::Value::String(format!("https://{proxy}"));
            }
        }
    }
    std::fs::write(out, serde_norway::to_string(&value)?)?;
    Ok(())
}
