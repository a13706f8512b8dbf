use std::collections::HashMap;

use reqwest::Method;
use reqwest::header::{HOST, HeaderMap, SET_COOKIE};

/// A browser-like client for one instance: it keeps cookies (by name, as a browser does for
/// one site), does not follow redirects, and sends forms.
pub struct Browser {
    base: String,
    domain: String,
    client: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

/// A response as a browser sees it.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` header that sets `name`, whole.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_default()
    }
}

impl Browser {
    pub fn new(base: &str, domain: &str) -> Browser {
        Browser {
            base: base.to_string(),
            domain: domain.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("cocon-tests-browser/1")
                .build()
                .expect("an HTTP client"),
            cookies: HashMap::new(),
        }
    }

    /// The same cookies, sent to another instance (what a confused or malicious client does).
    pub fn to_domain(&self, domain: &str) -> Browser {
        let mut other = Browser::new(&self.base, domain);
        other.cookies = self.cookies.clone();
        other
    }

    pub fn csrf(&self) -> String {
        self.cookies.get("cocon_csrf").cloned().unwrap_or_default()
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        json: Option<&serde_json::Value>,
    ) -> Page {
        self.send(method, path, &[], form, json).await
    }

    /// A request with extra headers (e.g. `Authorization`).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
        json: Option<&serde_json::Value>,
    ) -> Page {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(HOST, &self.domain);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(reqwest::header::COOKIE, jar.join("; "));
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        if let Some(json) = json {
            req = req.json(json);
        }
        let res = req.send().await.expect("the request reaches the server");
        for value in res.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        Page {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            text: res.text().await.expect("a readable body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.request(Method::POST, path, Some(form), None).await
    }

    pub async fn delete(&mut self, path: &str) -> Page {
        self.request(Method::DELETE, path, None, None).await
    }

    /// Opens the login page (for its CSRF cookie) and signs in with a plain passphrase.
    pub async fn login(&mut self, passphrase: &str) -> Page {
        let page = self.get("/auth/login").await;
        assert!(page.status == 200 || page.status == 303, "login page: {page:?}");
        let csrf = self.csrf();
        self.post_form("/auth/login", &[("csrf_token", &csrf), ("password", passphrase)])
            .await
    }
}

/// Creates an instance through the admin API; returns its onboarding link's path and query.
pub async fn onboarding_link(cocon: &crate::Cocon, domain: &str) -> String {
    let (status, body) = cocon
        .admin(Method::POST, "/instances", &[("Domain", domain)])
        .await
        .expect("the admin API answers");
    assert_eq!(status, 201, "{body}");
    let url = body["onboarding_url"].as_str().expect("an onboarding link").to_string();
    assert!(url.starts_with(&format!("http://{domain}:")), "{url}");
    let (_, after_port) = url.split_once(&format!("{domain}:")).expect("a port");
    let (_, path) = after_port.split_once('/').expect("a path");
    format!("/{path}")
}

pub fn register_token(link: &str) -> String {
    link.split_once("registerToken=")
        .expect("a register token")
        .1
        .to_string()
}

/// Posts the onboarding form.
pub async fn submit_onboarding(browser: &mut Browser, csrf: &str, token: &str, pass: &str, pass2: &str) -> Page {
    browser
        .post_form(
            "/auth/onboarding",
            &[
                ("csrf_token", csrf),
                ("register_token", token),
                ("password", pass),
                ("password2", pass2),
            ],
        )
        .await
}

/// Creates `domain`, chooses its passphrase through the onboarding form, and returns the
/// signed-in browser.
pub async fn onboard(cocon: &crate::Cocon, domain: &str, passphrase: &str) -> Browser {
    let link = onboarding_link(cocon, domain).await;
    let mut browser = Browser::new(&cocon.http, domain);
    assert_eq!(browser.get(&link).await.status, 200);
    let csrf = browser.csrf();
    let page = submit_onboarding(&mut browser, &csrf, &register_token(&link), passphrase, passphrase).await;
    assert_eq!(page.status, 303, "{page:?}");
    browser
}

/// The value of the hidden form field `name` in an HTML page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let after = html.split(&format!("name=\"{name}\" value=\"")).nth(1)?;
    Some(after.split('"').next()?.to_string())
}
