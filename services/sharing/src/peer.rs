//! Calls to the other hosts of a sharing, over HTTP(S) with cozy's JSON-API bodies. Redirects
//! are not followed (a peer answers where it was asked), answers are bounded, and names under
//! `.localhost` are this machine (RFC 6761 §6.3), as browsers resolve them, so two hosts on one
//! machine reach each other as `alice.localhost:8080` and `bob.localhost:8081`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

use crate::error::{Result, SharingError};

/// Largest answer read from a peer.
const MAX_ANSWER_BYTES: usize = 1 << 20;

struct Resolver;

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            if host == "localhost" || host.ends_with(".localhost") {
                let loopback: Addrs = Box::new(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter());
                return Ok(loopback);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[derive(Clone)]
pub struct Peers {
    http: reqwest::Client,
    timeout: Duration,
}

impl Peers {
    pub fn new(timeout: Duration) -> Peers {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(Resolver))
            .user_agent(concat!("cocon-sharing/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with these settings builds");
        Peers { http, timeout }
    }

    /// Sends `body` (JSON-API) with `method` to `origin` + `path`; the answer's JSON (`Null` when
    /// empty), or why the peer failed.
    pub async fn call(
        &self,
        method: reqwest::Method,
        origin: &str,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<Value> {
        let url = format!("{}{path}", origin.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/vnd.api+json")
            .header(reqwest::header::CONTENT_TYPE, "application/vnd.api+json")
            .body(serde_json::to_vec(body).expect("json"));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.answer(origin, req).await
    }

    /// Puts `body`, a file's content of `length` bytes, streamed; the answer's JSON. Its time
    /// is bounded by the progress of the transfer rather than the call's timeout: at least
    /// 1 MiB/s is expected, on top of the call's timeout.
    pub async fn put_content(
        &self,
        origin: &str,
        path: &str,
        bearer: &str,
        mime: &str,
        length: u64,
        body: reqwest::Body,
    ) -> Result<Value> {
        let url = format!("{}{path}", origin.trim_end_matches('/'));
        let mime = if mime.is_empty() {
            "application/octet-stream"
        } else {
            mime
        };
        let req = self
            .http
            .put(&url)
            .timeout(self.timeout + Duration::from_secs(length >> 20))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, mime)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .bearer_auth(bearer)
            .body(body);
        self.answer(origin, req).await
    }

    /// Posts a form (the peer's `/auth/access_token`); the answer's JSON.
    pub async fn form(&self, origin: &str, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}{path}", origin.trim_end_matches('/'));
        let req = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form);
        self.answer(origin, req).await
    }

    async fn answer(&self, origin: &str, req: reqwest::RequestBuilder) -> Result<Value> {
        let failed = |why: String| SharingError::Peer(format!("the other Cozy ({origin}) {why}"));
        let mut res = req.send().await.map_err(|e| failed(format!("did not answer: {e}")))?;
        let status = res.status();
        let mut raw = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| failed(format!("answer broke off: {e}")))?
        {
            if raw.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(failed("answered more than 1 MiB".into()));
            }
            raw.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&raw[..raw.len().min(300)]).into_owned();
            return Err(match status.as_u16() {
                409 => SharingError::Conflict(format!("the other Cozy refused: {text}")),
                // Statuses the caller acts on: 401 refreshes the token; 400 and 401 on a
                // refresh mean the client is gone, so the other side ended the sharing.
                code @ (400 | 401 | 403) => SharingError::PeerStatus(code, text),
                _ => failed(format!("answered {status}: {text}")),
            });
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&raw).map_err(|e| failed(format!("answered JSON that does not parse: {e}")))
    }
}

/// A Cozy's address as a person types it, as an origin: `https://` added when no scheme is
/// given, a trailing dot and any path dropped (cozy's `RegisterCozyURL`).
pub fn normalise_origin(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let bad = |why: &str| SharingError::BadRequest(format!("{raw:?} is not a Cozy address: {why}"));
    if raw.is_empty() {
        return Err(bad("it is empty"));
    }
    if raw.contains('@') {
        return Err(bad("give the address of your Cozy, not an e-mail address"));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use an https:// address"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad("it has no host"))?
        .trim_end_matches('.');
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{}://{host}{port}", url.scheme()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_addresses_become_origins() {
        assert_eq!(normalise_origin("bob.example").unwrap(), "https://bob.example");
        assert_eq!(
            normalise_origin("https://bob.example./x/y").unwrap(),
            "https://bob.example"
        );
        assert_eq!(
            normalise_origin(" http://bob.localhost:8081/ ").unwrap(),
            "http://bob.localhost:8081"
        );
        assert!(normalise_origin("bob@example.org").is_err());
        assert!(normalise_origin("ftp://bob.example").is_err());
        assert!(normalise_origin("").is_err());
    }

    #[tokio::test]
    async fn test_localhost_names_resolve_to_loopback() {
        let addrs: Vec<SocketAddr> = Resolver
            .resolve("bob.localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    }
}
