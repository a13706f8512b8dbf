//! Konnectors whose manifest says `"network": false` reach Cocon's API and nothing else: their
//! sandbox has a network namespace of its own (loopback only), where a small shim listens on
//! the API's port and passes each connection through a Unix socket bound into the sandbox; on
//! the server's side the socket leads to the API's address, and nowhere else. The bytes pass
//! through as they are (HTTPS included), so the konnector talks to the API as it would over the
//! network.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::{TcpStream, UnixListener};
use tokio::task::JoinHandle;

/// Where the shim and the socket appear in the sandbox.
pub const SHIM_IN_SANDBOX: &str = "/cocon/offline.js";
pub const SOCKET_IN_SANDBOX: &str = "/run/cocon-api.sock";

/// The shim: it listens on `127.0.0.1:<port>` inside the sandbox, pipes each connection to
/// the socket, then runs the konnector in the same process (argv: shim, socket, port, entry).
pub const SHIM: &str = r#"'use strict'
const net = require('net')
const [socket, port, entry] = process.argv.slice(2)
const server = net.createServer(client => {
  const api = net.connect(socket)
  client.pipe(api).pipe(client)
  client.on('error', () => api.destroy())
  api.on('error', () => client.destroy())
})
server.listen(Number(port), '127.0.0.1', () => {
  server.unref()
  process.argv.splice(1, 3)
  require(entry)
})
"#;

/// The port the shim listens on in the sandbox: the API's own, unless it is privileged (a
/// process of the sandbox cannot bind it).
pub fn inner_port(api_port: u16) -> u16 {
    if api_port < 1024 { 8080 } else { api_port }
}

/// The server's end of a run's tunnel: accepts on `socket` and connects each to the API at
/// `api` (resolved once, for the run), until dropped.
pub struct Tunnel {
    task: JoinHandle<()>,
}

impl Tunnel {
    pub fn open(socket: &Path, api: SocketAddr) -> std::io::Result<Tunnel> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let task = tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    match TcpStream::connect(api).await {
                        Ok(mut api) => {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut api).await;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "an offline konnector's connection cannot reach the API")
                        }
                    }
                });
            }
        });
        Ok(Tunnel { task })
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_privileged_ports_move_inside() {
        assert_eq!(inner_port(443), 8080);
        assert_eq!(inner_port(80), 8080);
        assert_eq!(inner_port(8443), 8443);
    }
}
