use reqwest::Method;
use serde_json::Value;

/// An HTTP client for one instance: it sets the `Host` header and the bearer token.
#[derive(Clone)]
pub struct Api {
    base: String,
    domain: String,
    token: Option<String>,
    client: reqwest::Client,
}

/// A response: the status and the body, parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn get(&self, key: &str) -> &Value {
        &self.body[key]
    }
}

impl Api {
    pub fn new(base: &str, domain: &str, token: Option<&str>) -> Api {
        Api {
            base: base.to_string(),
            domain: domain.to_string(),
            token: token.map(str::to_string),
            client: reqwest::Client::new(),
        }
    }

    /// The server's address (`http://127.0.0.1:PORT`), the `Host` sent, and the token.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same client, sending another `Host`.
    pub fn with_host(&self, host: &str) -> Api {
        Api {
            domain: host.to_string(),
            ..self.clone()
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// A request with the instance's `Host` and the bearer token set, to add headers and a body to.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::HOST, &self.domain);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request made with [`Api::request`] and reads the answer.
    pub async fn reply(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("the request reaches the server");
        let status = res.status().as_u16();
        let text = res.text().await.expect("the body is readable");
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b);
        }
        Api::reply(req).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(serde_json::to_vec(body).expect("json")))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(serde_json::to_vec(body).expect("json")))
            .await
    }

    pub async fn raw(&self, method: Method, path: &str, body: &[u8]) -> Reply {
        self.send(method, path, Some(body.to_vec())).await
    }
}
