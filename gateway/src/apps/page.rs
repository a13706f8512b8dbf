//! An app's `index.html`, rendered as cozy-stack renders it: the Go template variables apps
//! built for cozy-stack use (`{{.Token}}`, `{{.Domain}}`, `{{.CozyData}}`, …) replaced by their
//! values, HTML-escaped (they sit in attributes and text), and the per-app
//! Content-Security-Policy.

use cocon_proto::events::v1::Webapp;
use serde_json::{Value, json};

/// What a page is rendered with.
pub struct PageValues<'a> {
    pub token: &'a str,
    /// The instance's domain, with its port (where the app calls the API).
    pub domain: &'a str,
    pub locale: &'a str,
    pub app: &'a Webapp,
    pub manifest: &'a Value,
    pub subdomains: crate::Subdomains,
    /// The instance's context (`{{.ContextName}}`) and its feature flags (in `{{.CozyData}}`).
    pub context: &'a str,
    pub flags: &'a serde_json::Map<String, Value>,
    /// The context's identity provider, when its instances sign in with one.
    pub oidc: Option<&'a cocon_common::context::Oidc>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl PageValues<'_> {
    fn manifest_text(&self, key: &str) -> &str {
        self.manifest.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    /// The app's name in the instance's locale (`locales.<lang>.name`), or its own.
    fn name(&self) -> &str {
        self.manifest
            .get("locales")
            .and_then(|l| l.get(self.locale))
            .and_then(|l| l.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(&self.app.name)
    }

    /// cozy-stack's `{{.CozyData}}`: what cozy-client reads from `data-cozy` as the app starts.
    fn cozy_data(&self) -> String {
        json!({
            "token": self.token,
            "domain": self.domain,
            "subdomain": self.subdomains.as_str(),
            "tracking": false,
            "locale": self.locale,
            "app": {
                "editor": self.manifest_text("editor"),
                "name": self.name(),
                "prefix": self.manifest_text("name_prefix"),
                "slug": self.app.slug,
                "icon": self.manifest_text("icon"),
            },
            "flags": self.flags,
            "capabilities": {
                "file_versioning": true,
                "flat_subdomains": self.subdomains.is_flat(),
                "can_auth_with_password": !self.oidc.is_some_and(|o| o.disable_password_authentication),
                "can_auth_with_magic_links": false,
                "can_auth_with_oidc": self.oidc.is_some(),
            },
        })
        .to_string()
    }

    /// The value of a template field, escaped; `None` for a field cozy-stack does not give.
    fn field(&self, name: &str) -> Option<String> {
        let raw = match name {
            "Token" => self.token.to_string(),
            "Domain" => self.domain.to_string(),
            "Locale" => self.locale.to_string(),
            "AppSlug" => self.app.slug.clone(),
            "AppName" => self.name().to_string(),
            "AppEditor" => self.manifest_text("editor").to_string(),
            "AppNamePrefix" => self.manifest_text("name_prefix").to_string(),
            "IconPath" => self.manifest_text("icon").to_string(),
            "CozyData" => self.cozy_data(),
            "SubDomain" => self.subdomains.as_str().to_string(),
            "Tracking" => "false".to_string(),
            "ContextName" => self.context.to_string(),
            // The instance's theme (its context's, or Cocon's), after the app's own styles.
            "ThemeCSS" => {
                return Some(format!(
                    "<link rel=\"stylesheet\" type=\"text/css\" href=\"//{}{}\">",
                    escape(self.domain),
                    crate::assets::THEME_PATH
                ));
            }
            // Cozy's bar, its legacy client and fonts are Cozy's own assets, not served here;
            // an app's icon is its favicon. Apps that include them get nothing in their place.
            "CozyBar" | "CozyClientJS" | "Favicon" | "CozyFonts" => String::new(),
            _ => return None,
        };
        Some(escape(&raw))
    }

    /// The template with every `{{.Field}}` (spaces allowed inside the braces) cozy-stack gives
    /// replaced; anything else is left as written.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 1024);
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = after[..end].trim();
            match inner.strip_prefix('.').and_then(|name| self.field(name)) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&rest[start..start + 2 + end + 2]),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// The Content-Security-Policy of an app's pages and files: its own origin and the instance's
/// (the API, its realtime socket), the instance's other apps in frames (intents), nothing else.
pub fn csp(instance_origin: &str, siblings: &str) -> String {
    let ws = instance_origin.replacen("http", "ws", 1);
    format!(
        "default-src 'self' {instance_origin}; \
         script-src 'self' 'unsafe-eval' {instance_origin}; \
         style-src 'self' 'unsafe-inline' {instance_origin}; \
         img-src 'self' data: blob: {instance_origin}; \
         font-src 'self' data: {instance_origin}; \
         media-src 'self' blob: {instance_origin}; \
         connect-src 'self' {instance_origin} {ws}; \
         frame-src 'self' {siblings}; \
         frame-ancestors 'self' {siblings}; \
         worker-src 'self' blob:; \
         object-src 'none'; base-uri 'self'; form-action 'self' {instance_origin}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_template_fields_are_replaced_and_escaped() {
        let app = Webapp {
            slug: "notes".into(),
            name: "Notes".into(),
            ..Default::default()
        };
        let manifest = json!({"editor": "Cozy & co", "locales": {"fr": {"name": "Carnet"}}});
        let flags = json!({"drive.office": true});
        let values = PageValues {
            token: "a.b.c",
            domain: "alice.test:8080",
            locale: "fr",
            app: &app,
            manifest: &manifest,
            subdomains: crate::Subdomains::Nested,
            context: "school",
            flags: flags.as_object().unwrap(),
            oidc: None,
        };
        let page = values.render(
            r#"<div data-token="{{.Token}}" data-domain="{{ .Domain }}" data-cozy="{{.CozyData}}" data-context="{{.ContextName}}">{{.AppName}} {{.AppEditor}} {{.Unknown}} {{if .X}}</div>"#,
        );
        assert!(page.contains(r#"data-context="school""#), "{page}");
        assert!(page.contains(r#"data-token="a.b.c""#), "{page}");
        assert!(page.contains(r#"data-domain="alice.test:8080""#), "{page}");
        assert!(page.contains("Carnet Cozy &amp; co {{.Unknown}} {{if .X}}"), "{page}");
        // The JSON sits in an attribute: its quotes are escaped, and it reads back whole.
        let start = page.find("data-cozy=\"").unwrap() + 11;
        let end = start + page[start..].find('"').unwrap();
        let data: Value = serde_json::from_str(&page[start..end].replace("&#34;", "\"")).unwrap();
        assert_eq!(data["token"], "a.b.c");
        assert_eq!(data["app"]["slug"], "notes");
        assert_eq!(data["flags"], json!({"drive.office": true}), "the context's flags");
        assert_eq!(values.render("no braces {{ unterminated"), "no braces {{ unterminated");
        assert_eq!(
            values.render("{{.ThemeCSS}}"),
            r#"<link rel="stylesheet" type="text/css" href="//alice.test:8080/assets/styles/theme.css">"#,
            "the theme from the instance's host"
        );
        assert_eq!(values.render("{{.CozyBar}}"), "");
    }
}
