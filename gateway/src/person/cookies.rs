//! Cookies the gateway sets: the session (`cozysessid`, as cozy-stack names it) and the CSRF
//! token of its forms (double-submit: a random value in a cookie and in the form must match).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cocon_common::ErrorCode;
use http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

use crate::ApiError;

pub const SESSION: &str = "cozysessid";
pub const CSRF: &str = "cocon_csrf";
/// A device the person signed in from (signed by the auth service): the login limits anyone
/// can drain do not hold it back.
pub const DEVICE: &str = "cocon_device";
/// How long a device is remembered, in seconds.
pub const DEVICE_MAX_AGE: i64 = 400 * 86_400;

/// The request's cookies, as (name, value) pairs in the order sent.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
}

/// The value of cookie `name` in the request, if sent once or more (the first wins).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The values of every cookie whose name starts with `prefix`.
pub fn with_prefix<'a>(headers: &'a HeaderMap, prefix: &str) -> Vec<&'a str> {
    pairs(headers)
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .collect()
}

/// Sharing links opened with their password: one cookie per link, `sharepass_<permission id>`.
pub const SHARE_PASS_PREFIX: &str = "sharepass_";

pub struct CookieSpec<'a> {
    pub name: &'a str,
    pub value: &'a str,
    /// `None`: a browser-session cookie.
    pub max_age: Option<i64>,
    pub same_site: &'a str,
    pub secure: bool,
}

/// The `Domain` of the session cookie on `host` (the instance's domain): set, the cookie also
/// reaches the instance's apps on their sub-domains (`drive.alice.example`), as cozy-stack's
/// does. Not for an IP address nor a name without a dot, where browsers refuse it.
pub fn session_domain(host: &str) -> Option<&str> {
    let domain = cocon_common::domain::without_port(host);
    let ip = domain.parse::<std::net::IpAddr>().is_ok() || domain.starts_with('[');
    (!ip && domain.contains('.')).then_some(domain)
}

/// The session cookie, for `host`'s instance and its apps.
pub fn session(value: &str, max_age: Option<i64>, host: &str, secure: bool) -> HeaderValue {
    let mut cookie = set(&CookieSpec {
        name: SESSION,
        value,
        max_age,
        same_site: "Lax",
        secure,
    })
    .to_str()
    .expect("cookies are ASCII")
    .to_string();
    if let Some(domain) = session_domain(host) {
        cookie.push_str(&format!("; Domain={domain}"));
    }
    HeaderValue::from_str(&cookie).expect("domains are ASCII")
}

/// Ends the session cookie, both as set for the instance and its apps and as set before it was.
pub fn clear_session(host: &str, secure: bool) -> Vec<HeaderValue> {
    let mut cleared = vec![clear(SESSION, secure)];
    if session_domain(host).is_some() {
        cleared.push(session("", Some(0), host, secure));
    }
    cleared
}

pub fn set(spec: &CookieSpec<'_>) -> HeaderValue {
    let mut text = format!(
        "{}={}; Path=/; HttpOnly; SameSite={}",
        spec.name, spec.value, spec.same_site
    );
    if let Some(age) = spec.max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if spec.secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("cookie values are URL-safe")
}

pub fn clear(name: &str, secure: bool) -> HeaderValue {
    set(&CookieSpec {
        name,
        value: "",
        max_age: Some(0),
        same_site: "Lax",
        secure,
    })
}

/// The CSRF token for a form: the one the browser holds, or a new one with its cookie.
pub fn csrf_token(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    if let Some(existing) = get(headers, CSRF).filter(|v| v.len() == 43 && URL_SAFE_NO_PAD.decode(v).is_ok()) {
        return (existing.to_string(), None);
    }
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let cookie = set(&CookieSpec {
        name: CSRF,
        value: &token,
        max_age: None,
        same_site: "Strict",
        secure,
    });
    (token, Some(cookie))
}

/// A form post must carry the CSRF token of the browser's cookie.
pub fn check_csrf(headers: &HeaderMap, form_token: Option<&str>) -> Result<(), ApiError> {
    let cookie = get(headers, CSRF).unwrap_or_default();
    let form = form_token.unwrap_or_default();
    if !cookie.is_empty() && bool::from(cookie.as_bytes().ct_eq(form.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "invalid_csrf_token",
            "the form's CSRF token is missing or does not match: reload the page and try again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cookie_parsing_and_csrf() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; cozysessid=s.m; cocon_csrf=x".parse().unwrap(),
        );
        assert_eq!(get(&h, SESSION), Some("s.m"));
        assert_eq!(get(&h, "b"), None);
        assert!(check_csrf(&h, Some("x")).is_ok());
        assert!(check_csrf(&h, Some("y")).is_err());
        assert!(check_csrf(&h, None).is_err());
        assert!(check_csrf(&HeaderMap::new(), Some("")).is_err());
        let (token, cookie) = csrf_token(&HeaderMap::new(), true);
        let cookie = cookie.unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains(&token) && cookie.contains("SameSite=Strict") && cookie.ends_with("Secure"));
    }
}
