//! The few HTML pages the gateway serves itself (login, onboarding, the signed-in home): plain
//! forms that work without JavaScript, labelled for screen readers, and framed by no one.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::assets::{FAVICON_PATH, THEME_PATH};

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;\
line-height:1.5;color:var(--ink,#1d2125);background:var(--page,#fff)}a{color:var(--accent,#1d5c96)}label{display:block;margin-top:1rem;font-weight:600}\
input[type=password],input[type=text]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;padding:.5rem 1.25rem;font-size:1rem}.error{color:#a4000f;font-weight:600}\
.note{color:#4d5257}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;\
border-bottom:1px solid #ddd}";

/// A whole page: `body` is trusted HTML (callers escape what they put in it).
pub fn page(status: StatusCode, title: &str, body: &str, set_cookies: Vec<HeaderValue>) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · Cocon</title>\
<style>{STYLE}</style><link rel=\"stylesheet\" href=\"{THEME_PATH}\">\
<link rel=\"icon\" href=\"{FAVICON_PATH}\"></head><body><main>{body}</main></body></html>",
        escape(title)
    );
    let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in set_cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// A sign-in page of an instance: its form may end on the instance's apps, where signing in
/// sends the person back (`apps`: the sources naming them, from `login::form_ends`).
pub fn sign_in_page(
    status: StatusCode,
    title: &str,
    body: &str,
    set_cookies: Vec<HeaderValue>,
    apps: &str,
) -> Response {
    let mut response = page(status, title, body, set_cookies);
    let policy = format!(
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         form-action 'self' {apps}; frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A page whose form leads to another host (the owner's discovery page sends the person on to
/// their own Cozy): the same page, with forms allowed to end anywhere.
pub fn page_to_anywhere(status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = page(status, title, body, Vec::new());
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    response
}

fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default()
}

pub fn login(domain: &str, csrf: &str, redirect: &str, error: Option<&str>) -> String {
    format!(
        "<h1>Sign in to {domain}</h1>{error}\
<form method=\"post\" action=\"/auth/login\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"redirect\" value=\"{redirect}\">\
<input type=\"hidden\" name=\"username\" value=\"me@{domain}\" autocomplete=\"username\">\
<label for=\"password\">Passphrase</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required autofocus>\
<label><input type=\"checkbox\" name=\"long-run-session\" value=\"1\"> Keep me signed in for 30 days</label>\
<button type=\"submit\">Sign in</button></form>\
<p><a href=\"/auth/passphrase_reset\">Forgot your passphrase?</a></p>",
        domain = escape(domain),
        error = error_line(error),
        csrf = escape(csrf),
        redirect = escape(redirect),
    )
}

/// The way in through the institution's identity provider, under the passphrase form.
pub fn oidc_link(redirect: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("redirect", redirect);
    format!(
        "<p><a href=\"/oidc/start?{}\" id=\"oidc-start\">Sign in with your institution's account</a></p>",
        escape(&query.finish())
    )
}

pub fn onboarding(domain: &str, csrf: &str, token: &str, error: Option<&str>) -> String {
    choose_passphrase(
        &format!("Welcome to {domain}"),
        "Choose the passphrase that protects your personal cloud.",
        "/auth/onboarding",
        domain,
        csrf,
        token,
        error,
    )
}

/// The page of a passphrase reset link: a new passphrase, twice.
pub fn passphrase_renew(domain: &str, csrf: &str, token: &str, error: Option<&str>) -> String {
    choose_passphrase(
        &format!("A new passphrase for {domain}"),
        "Choose a new passphrase. Every session signed in with the old one ends.",
        "/auth/passphrase_renew",
        domain,
        csrf,
        token,
        error,
    )
}

/// Asks for a passphrase reset link by mail.
pub fn passphrase_reset(domain: &str, csrf: &str, error: Option<&str>) -> String {
    format!(
        "<h1>Forgot your passphrase?</h1>{error}<p>Cocon can mail a link to the address of {domain}; \
with it you choose a new passphrase.</p>\
<form method=\"post\" action=\"/auth/passphrase_reset\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<button type=\"submit\">Mail me a link</button></form><p><a href=\"/auth/login\">Back to sign in</a></p>",
        domain = escape(domain),
        error = error_line(error),
        csrf = escape(csrf),
    )
}

/// A form choosing a passphrase with a one-time link's token.
fn choose_passphrase(
    title: &str,
    intro: &str,
    action: &str,
    domain: &str,
    csrf: &str,
    token: &str,
    error: Option<&str>,
) -> String {
    format!(
        "<h1>{title}</h1>\
<p>{intro} Use at least 8 characters; a few \
unrelated words are easy to remember and hard to guess.</p>{error}\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"register_token\" value=\"{token}\">\
<input type=\"hidden\" name=\"username\" value=\"me@{domain}\" autocomplete=\"username\">\
<label for=\"password\">Passphrase</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" minlength=\"8\" required autofocus>\
<label for=\"password2\">The same passphrase again</label>\
<input type=\"password\" id=\"password2\" name=\"password2\" autocomplete=\"new-password\" minlength=\"8\" required>\
<button type=\"submit\">Save the passphrase</button></form>",
        title = escape(title),
        intro = escape(intro),
        action = escape(action),
        domain = escape(domain),
        error = error_line(error),
        csrf = escape(csrf),
        token = escape(token),
    )
}

/// One row of the session table: (opened, user agent, address, is this one).
pub type SessionRow = (String, String, String, bool);

pub fn home(
    domain: &str,
    csrf: &str,
    email: &str,
    sessions: &[SessionRow],
    (two_factor, codes_left): (bool, u32),
    message: Option<&str>,
    error: Option<&str>,
) -> String {
    let rows: String = sessions
        .iter()
        .map(|(created, agent, ip, current)| {
            format!(
                "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                escape(created),
                if *current { " (this one)" } else { "" },
                escape(agent),
                escape(ip)
            )
        })
        .collect();
    let message = message
        .map(|m| format!("<p class=\"note\" role=\"status\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        "<h1>{domain}</h1><p>You are signed in. <a href=\"//home.{domain}/\">Open your home</a>: \
your apps, the storage you use and your notifications.</p>{message}{error}\
<h2>Sessions</h2><table><thead><tr><th>Opened (UTC)</th><th>Browser</th><th>Address</th></tr></thead>\
<tbody>{rows}</tbody></table>\
<form method=\"post\" action=\"/auth/logout\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"others\" value=\"1\"><button type=\"submit\">Sign out the other sessions</button></form>\
<form method=\"post\" action=\"/auth/logout\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<button type=\"submit\">Sign out</button></form>\
<h2>Change the passphrase</h2><p class=\"note\">Every other session ends.</p>\
<form method=\"post\" action=\"/auth/passphrase\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"username\" value=\"me@{domain}\" autocomplete=\"username\">\
<label for=\"current\">Current passphrase</label>\
<input type=\"password\" id=\"current\" name=\"current\" autocomplete=\"current-password\" required>\
<label for=\"password\">New passphrase</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" minlength=\"8\" required>\
<label for=\"password2\">The new passphrase again</label>\
<input type=\"password\" id=\"password2\" name=\"password2\" autocomplete=\"new-password\" minlength=\"8\" required>\
<button type=\"submit\">Change the passphrase</button></form>\
<h2>E-mail address</h2><p class=\"note\">Where a passphrase reset is sent, if you forget it.</p>\
<form method=\"post\" action=\"/auth/email\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<label for=\"email\">E-mail address</label>\
<input type=\"email\" id=\"email\" name=\"email\" value=\"{email}\" autocomplete=\"email\" required>\
<button type=\"submit\">Change the e-mail address</button></form>{two_factor}",
        email = escape(email),
        two_factor = if two_factor {
            format!(
                "<h2>Two-factor</h2><p>On: signing in asks for a code of your authenticator app. \
{codes_left} recovery codes left.</p>\
<form method=\"post\" action=\"/auth/twofactor/disable\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<label for=\"tf-current\">Passphrase</label>\
<input type=\"password\" id=\"tf-current\" name=\"current\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Turn two-factor off</button></form>",
                csrf = escape(csrf)
            )
        } else {
            format!(
                "<h2>Two-factor</h2><p>Off. With it on, signing in also asks for a code of an \
authenticator app on your phone.</p>\
<form method=\"post\" action=\"/auth/twofactor/setup\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<button type=\"submit\">Set up two-factor</button></form>",
                csrf = escape(csrf)
            )
        },
        domain = escape(domain),
        error = error_line(error),
        csrf = escape(csrf),
    )
}

pub fn two_factor(domain: &str, csrf: &str, token: &str, redirect: &str, error: Option<&str>) -> String {
    format!(
        "<h1>Sign in to {domain}</h1><p>Type the code your authenticator app shows for {domain}, \
or one of your recovery codes.</p>{error}\
<form method=\"post\" action=\"/auth/twofactor\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"two_factor_token\" value=\"{token}\">\
<input type=\"hidden\" name=\"redirect\" value=\"{redirect}\">\
<label for=\"code\">Code</label>\
<input type=\"text\" id=\"code\" name=\"two_factor_passcode\" autocomplete=\"one-time-code\" \
inputmode=\"numeric\" required autofocus>\
<button type=\"submit\">Sign in</button></form>",
        domain = escape(domain),
        error = error_line(error),
        csrf = escape(csrf),
        token = escape(token),
        redirect = escape(redirect),
    )
}

/// `qr_svg` is trusted markup (made by the gateway from the secret's URI).
pub fn two_factor_setup(csrf: &str, qr_svg: &str, secret: &str, error: Option<&str>) -> String {
    format!(
        "<h1>Set up two-factor</h1>{error}<p>Scan this code with an authenticator app (for example \
FreeOTP, Aegis or Google Authenticator), or type the key below into it.</p>\
<figure role=\"img\" aria-label=\"QR code of the two-factor key\">{qr_svg}</figure>\
<p>Key: <code>{secret}</code></p>\
<form method=\"post\" action=\"/auth/twofactor/enable\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<label for=\"code\">The code the app shows now</label>\
<input type=\"text\" id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required autofocus>\
<button type=\"submit\">Turn two-factor on</button></form>",
        error = error_line(error),
        csrf = escape(csrf),
        secret = escape(secret),
    )
}

pub fn recovery_codes(codes: &[String]) -> String {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape(c)))
        .collect();
    format!(
        "<h1>Two-factor is on</h1><p>Keep these recovery codes somewhere safe: each one signs you in \
once if you lose your phone. They are shown only now.</p><ol>{items}</ol><p><a href=\"/\">Done</a></p>"
    )
}

pub fn message(title: &str, text: &str) -> String {
    format!("<h1>{}</h1><p role=\"alert\">{}</p>", escape(title), escape(text))
}

/// A doctype as people call it.
fn doctype_words(doctype: &str) -> String {
    let known = match doctype.trim_end_matches(".*") {
        "io.cozy.files" => "your files",
        "io.cozy.contacts" => "your contacts",
        "io.cozy.notes" => "your notes",
        "io.cozy.bank" | "io.cozy.bank.operations" | "io.cozy.bank.accounts" => "your bank data",
        "io.cozy.photos.albums" => "your photo albums",
        "io.cozy.settings" => "your settings",
        "io.cozy.sessions" => "your sessions",
        "io.cozy.oauth.clients" => "the apps connected to your account",
        "io.cozy.permissions" => "the permissions you gave",
        "io.cozy.jobs" | "io.cozy.triggers" => "your background jobs",
        "io.cozy.notifications" => "your notifications",
        _ => "",
    };
    if known.is_empty() {
        format!("your documents of type {doctype}")
    } else {
        known.to_string()
    }
}

/// One permission rule of a scope (`type[:verbs[:values]]`) in plain words.
pub fn rule_words(rule: &str) -> String {
    let mut parts = rule.splitn(4, ':');
    let doctype = parts.next().unwrap_or_default();
    let verbs: Vec<&str> = match parts.next() {
        None | Some("") | Some("ALL") => Vec::new(),
        Some(list) => list.split(',').collect(),
    };
    let some = parts.next().is_some_and(|v| !v.is_empty());
    let action = match verbs.as_slice() {
        [] => "see, add, change and delete".to_string(),
        ["GET"] => "see".to_string(),
        other => {
            let words: Vec<&str> = other
                .iter()
                .map(|v| match *v {
                    "GET" => "see",
                    "POST" => "add",
                    "PUT" | "PATCH" => "change",
                    "DELETE" => "delete",
                    _ => "use",
                })
                .collect();
            words.join(", ")
        }
    };
    let what = doctype_words(doctype);
    if some {
        format!("{action} some of {what}")
    } else {
        format!("{action} {what}")
    }
}

pub fn consent(
    domain: &str,
    csrf: &str,
    client_name: &str,
    client_uri: &str,
    scope: &str,
    hidden: &[(&str, &str)],
) -> String {
    let items: String = scope
        .split_whitespace()
        .map(|rule| {
            format!(
                "<li>{} <span class=\"note\">({})</span></li>",
                escape(&rule_words(rule)),
                escape(rule)
            )
        })
        .collect();
    let fields: String = hidden
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v)))
        .collect();
    let site = if client_uri.is_empty() {
        String::new()
    } else {
        format!("<p class=\"note\">{}</p>", escape(client_uri))
    };
    format!(
        "<h1>Give {name} access to {domain}?</h1>{site}<p>{name} asks to:</p><ul>{items}</ul>\
<p class=\"note\">You can take this access back at any time from your account.</p>\
<form method=\"post\" action=\"/auth/authorize\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">{fields}\
<button type=\"submit\" name=\"approve\" value=\"1\">Give access</button> \
<button type=\"submit\" name=\"deny\" value=\"1\">Refuse</button></form>",
        name = escape(client_name),
        domain = escape(domain),
        csrf = escape(csrf),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_scopes_in_plain_words() {
        assert_eq!(rule_words("io.cozy.files:GET"), "see your files");
        assert_eq!(
            rule_words("io.cozy.contacts"),
            "see, add, change and delete your contacts"
        );
        assert_eq!(rule_words("io.cozy.notes:GET,POST"), "see, add your notes");
        assert_eq!(rule_words("io.cozy.bank.*:GET"), "see your bank data");
        assert_eq!(
            rule_words("com.example.todo:DELETE:id1"),
            "delete some of your documents of type com.example.todo"
        );
    }

    #[test]
    fn test_pages_escape_what_they_show() {
        let html = login("a.test", "c", "/\"><script>x</script>", Some("<b>"));
        assert!(!html.contains("<script>") && !html.contains("<b>"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
    }
}
