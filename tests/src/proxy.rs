//! A TCP proxy a test controls, to put a network fault between two hosts: it forwards a port
//! to another, counts the bytes sent through it, and can cut every connection (and refuse new
//! ones) at once, or as soon as a given number of bytes has gone through (mid-transfer, at a
//! point the test chooses by size rather than by time), until it is restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct State {
    /// Bytes from the clients to the target since the start.
    sent: AtomicU64,
    /// Cut once `sent` passes this (u64::MAX: never).
    cut_at: AtomicU64,
    cut: AtomicBool,
    /// At the threshold: stall the connection (rather than cut it) until released.
    hold: AtomicBool,
    held: AtomicBool,
    /// Tells the live connections to drop.
    cuts: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Forwards a new loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cuts, _) = watch::channel(0);
        let state = Arc::new(State {
            sent: AtomicU64::new(0),
            cut_at: AtomicU64::new(u64::MAX),
            cut: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            held: AtomicBool::new(false),
            cuts,
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        forward(client, server, state).await;
                    }
                });
            }
        });
        Ok(Proxy { port, state })
    }

    /// Bytes sent through the proxy towards the target so far.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    /// Whether the proxy is cut (by [`Proxy::cut`] or by the threshold of [`Proxy::cut_after`]).
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Drops every connection now and refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// Cuts as soon as `bytes` more have gone towards the target.
    pub fn cut_after(&self, bytes: u64) {
        self.state.cut_at.store(self.sent() + bytes, Ordering::SeqCst);
    }

    /// Stalls the transfer as soon as `bytes` more have gone towards the target: nothing more
    /// goes through, the connections stay open (a peer that stopped answering mid-transfer).
    pub fn hold_after(&self, bytes: u64) {
        self.state.hold.store(true, Ordering::SeqCst);
        self.cut_after(bytes);
    }

    /// Whether a transfer is stalled by [`Proxy::hold_after`].
    pub fn is_held(&self) -> bool {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Drops the stalled connections and forwards again.
    pub fn release(&self) {
        self.cut();
        self.restore();
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.cut_at.store(u64::MAX, Ordering::SeqCst);
        self.state.hold.store(false, Ordering::SeqCst);
        self.state.held.store(false, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

async fn forward(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let mut cuts = state.cuts.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_state = state.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let total = up_state.sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= up_state.cut_at.load(Ordering::SeqCst) {
                if up_state.hold.load(Ordering::SeqCst) {
                    // Stalled: the cut that releases it drops the connection.
                    up_state.held.store(true, Ordering::SeqCst);
                    futures::future::pending::<()>().await;
                }
                up_state.cut.store(true, Ordering::SeqCst);
                up_state.cuts.send_modify(|c| *c += 1);
                return;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending, or a cut, drops both halves: the connection is gone for both.
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = cuts.changed() => {}
    }
}
