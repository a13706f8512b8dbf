//! Mutual TLS between the processes of a split deployment: every gRPC call between them is
//! made over TLS with a certificate of the mesh's CA on both sides, and a caller without one is
//! refused before any service sees its call. A directory holds `ca.pem` (the mesh's CA),
//! `cert.pem` and `key.pem` (this process's certificate, signed by that CA); `cocon mesh-cert
//! DIR` makes one, or an operator's own CA provides them.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// The name `cocon mesh-cert` puts in every certificate, and clients check by default.
pub const DEFAULT_SERVER_NAME: &str = "cocon-mesh";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MeshTlsConfig {
    /// The directory of `ca.pem`, `cert.pem` and `key.pem`. Required when services run in
    /// several processes (unless `insecure`); unused when everything runs in one.
    pub dir: Option<PathBuf>,
    /// The name the certificates hold, checked by clients whatever address they dial.
    pub server_name: String,
    /// Plain gRPC between processes: only on a network nothing else can reach.
    pub insecure: bool,
}

impl Default for MeshTlsConfig {
    fn default() -> Self {
        MeshTlsConfig {
            dir: None,
            server_name: DEFAULT_SERVER_NAME.into(),
            insecure: false,
        }
    }
}

/// A process's side of the mesh's TLS: as a server and as a client.
#[derive(Clone)]
pub struct MeshTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

fn read(dir: &Path, file: &str) -> std::io::Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl MeshTls {
    pub fn load(dir: &Path, server_name: &str) -> std::io::Result<MeshTls> {
        let ca = Certificate::from_pem(read(dir, CA_FILE)?);
        let identity = Identity::from_pem(read(dir, CERT_FILE)?, read(dir, KEY_FILE)?);
        Ok(MeshTls {
            // A client CA makes a client certificate mandatory.
            server: ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(ca.clone()),
            client: ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(identity)
                .domain_name(server_name),
        })
    }
}

/// An endpoint as TLS dials it: tonic speaks TLS to `https://` only, so `http://` is upgraded
/// rather than left in the clear.
pub fn https(endpoint: &str) -> String {
    match endpoint.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_endpoints_are_dialled_over_tls() {
        assert_eq!(https("http://10.0.0.5:7070"), "https://10.0.0.5:7070");
        assert_eq!(https("https://documents:7070"), "https://documents:7070");
    }
}
