//! Contexts, cozy-stack's model for institutions: the instances created in a context share its
//! configuration (the defaults of a new instance, the keys every app reads as it starts, feature
//! flags, apps installed on each new instance, the registry they come from, the mail server
//! their mail goes through, the OpenID Connect provider they sign in with). Contexts are named
//! in the configuration file (`[contexts.<name>]`), read by every process that needs them, as
//! cozy-stack reads its `contexts:`; an instance names its context when it is created.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The context of instances created without one.
pub const DEFAULT: &str = "default";

/// One context's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Context {
    /// Disk quota of the instances created in the context (a size such as `"2GB"`, `"none"`
    /// for no limit); unset: the auth service's `default_disk_quota`.
    #[serde(deserialize_with = "optional_size", skip_serializing_if = "Option::is_none")]
    pub disk_quota: Option<u64>,
    /// Locale (`en`, `fr`) of the instances created in the context without one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locale: String,
    /// How a roster's user name becomes an instance's domain: `{user}.school.example`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain_template: String,
    /// Apps installed on each new instance of the context, after Cocon's own: slug → source,
    /// as `cocon apps install SLUG SOURCE` takes them (`registry://notes/stable`,
    /// `https://….tgz#sha256`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, String>,
    /// The registry `registry://` sources name for the context's instances (cozy's registry
    /// protocol); empty: the jobs service's `[jobs.apps] registry`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub registry: String,
    /// The keys apps read as they start (`GET /settings/context`): cozy-stack's context
    /// configuration, such as `help_link`, `support_address`, `noreply_name`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    /// Feature flags of the context's instances (`GET /settings/flags`).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub flags: Map<String, Value>,
    /// Where the mail of the context's instances goes: keys of `[jobs.smtp]` ([`SMTP_KEYS`])
    /// that replace the server's for them, such as another `host` or `noreply_address`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub smtp: Map<String, Value>,
    /// A directory whose files replace Cocon's assets for the context's instances, as
    /// cozy-stack's context assets: `styles/theme.css` (colours, logo), favicons, images.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub assets: String,
    /// The institution's OpenID Connect provider: cozy-stack's delegated authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Oidc>,
    /// The secret an external system (the institution's portal) signs sign-in links with,
    /// cozy-stack's `jwt_secret`: `https://<instance>/?jwt=<HS256 JWT>` whose claim `name`
    /// is the instance's domain. Empty: no such links.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub jwt_secret: Secret,
}

/// A secret of the configuration: kept out of `Debug` output (logs, traces).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "<redacted>" })
    }
}

/// Sign-in through an OpenID Connect provider (`/oidc/start`), per context. The names of
/// cozy-stack's `authentication.<context>.oidc` are accepted as aliases.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Oidc {
    /// The provider's issuer, exactly as it names itself: its discovery document is
    /// `<issuer>/.well-known/openid-configuration`, and its ID tokens must carry it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked besides `openid` (space-separated); empty: `profile email`.
    pub scope: String,
    /// The one callback URL registered with the provider, on a host of its own or any host
    /// Cocon answers on: `https://oauthcallback.example/oidc/redirect`.
    pub redirect_uri: String,
    /// The claim (of the ID token, or of the UserInfo answer) that names the person's
    /// instance: `<prefix><value><suffix>` is its domain; with neither, the context's
    /// `domain_template` makes it. Empty: `sub`.
    #[serde(alias = "userinfo_instance_field")]
    pub instance_claim: String,
    #[serde(alias = "userinfo_instance_prefix")]
    pub instance_prefix: String,
    #[serde(alias = "userinfo_instance_suffix")]
    pub instance_suffix: String,
    /// A host of no instance where the context's people sign in with the provider (and are
    /// sent to their own instance).
    pub login_domain: String,
    /// An instance the claim names but that does not exist yet is created in the context on
    /// its first sign-in (through the login domain).
    pub allow_instance_creation: bool,
    /// The provider is the only way in: the passphrase sign-in is refused and its page sends
    /// to the provider.
    pub disable_password_authentication: bool,
    /// OAuth clients of the context's instances (a mobile app) may trade a token of the
    /// provider for Cocon's, `POST /oidc/access_token`; an ID token must be for `client_id`.
    pub allow_oauth_token: bool,
}

/// The client secret stays out of logs.
impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("instance_claim", &self.instance_claim)
            .field("login_domain", &self.login_domain)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The scopes asked, `openid` first.
    pub fn scopes(&self) -> Vec<String> {
        let rest = if self.scope.trim().is_empty() {
            "profile email"
        } else {
            &self.scope
        };
        let mut scopes = vec!["openid".to_string()];
        scopes.extend(rest.split_whitespace().filter(|s| *s != "openid").map(str::to_string));
        scopes
    }

    pub fn claim(&self) -> &str {
        if self.instance_claim.is_empty() {
            "sub"
        } else {
            &self.instance_claim
        }
    }
}

/// The keys a context's `smtp` may set: those of `[jobs.smtp]`.
pub const SMTP_KEYS: [&str; 8] = [
    "host",
    "port",
    "security",
    "username",
    "password",
    "noreply_address",
    "noreply_name",
    "timeout_secs",
];

fn optional_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    crate::size::deserialize(d).map(Some)
}

/// Every context of the deployment, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Contexts(BTreeMap<String, Context>);

impl Contexts {
    /// The context named `name` (the default one for an empty name, configured or not).
    pub fn get(&self, name: &str) -> Option<&Context> {
        static EMPTY: std::sync::OnceLock<Context> = std::sync::OnceLock::new();
        let name = if name.is_empty() { DEFAULT } else { name };
        self.0
            .get(name)
            .or_else(|| (name == DEFAULT).then(|| EMPTY.get_or_init(Context::default)))
    }

    /// The contexts in name order, the default one included even when not configured.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Context)> {
        let default = (!self.0.contains_key(DEFAULT)).then(|| (DEFAULT, self.get(DEFAULT).expect("always there")));
        let mut all: Vec<(&str, &Context)> = self.0.iter().map(|(k, v)| (k.as_str(), v)).chain(default).collect();
        all.sort_by_key(|(name, _)| *name);
        all.into_iter()
    }

    /// The context whose OIDC login domain `host` (with or without its port) is.
    pub fn by_login_domain(&self, host: &str) -> Option<(&str, &Context)> {
        let name = crate::domain::without_port(host);
        self.iter().find(|(_, c)| {
            c.oidc
                .as_ref()
                .is_some_and(|o| !o.login_domain.is_empty() && crate::domain::without_port(&o.login_domain) == name)
        })
    }

    /// Checks every context, saying which key of which context is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, context) in &self.0 {
            let bad = |key: &str, why: String| Err(format!("contexts.{name}.{key}: {why}"));
            if !valid_name(name) {
                return Err(format!(
                    "contexts.{name}: a context's name is letters, digits, '-' and '_' (at most 64)"
                ));
            }
            if !context.locale.is_empty() && !matches!(context.locale.as_str(), "en" | "fr") {
                return bad(
                    "locale",
                    format!("{:?} is not a locale Cocon speaks: use en or fr", context.locale),
                );
            }
            if !context.domain_template.is_empty() {
                let sample = context.domain_template.replace("{user}", "user");
                if context.domain_template.matches("{user}").count() != 1 || !crate::domain::is_valid(&sample) {
                    return bad(
                        "domain_template",
                        format!(
                            "{:?} must hold {{user}} once and make a domain, such as {{user}}.school.example",
                            context.domain_template
                        ),
                    );
                }
            }
            if !context.registry.is_empty()
                && !context.registry.starts_with("https://")
                && !context.registry.starts_with("http://")
            {
                return bad("registry", format!("{:?} is not an http(s) URL", context.registry));
            }
            if let Some(key) = context.smtp.keys().find(|k| !SMTP_KEYS.contains(&k.as_str())) {
                return bad(
                    &format!("smtp.{key}"),
                    format!("not a key of [jobs.smtp]: use {}", SMTP_KEYS.join(", ")),
                );
            }
            if let Some(oidc) = &context.oidc {
                oidc.validate()
                    .map_err(|(key, why)| format!("contexts.{name}.oidc.{key}: {why}"))?;
                if oidc.instance_prefix.is_empty()
                    && oidc.instance_suffix.is_empty()
                    && context.domain_template.is_empty()
                {
                    return bad(
                        "oidc.instance_suffix",
                        "set instance_prefix/instance_suffix or the context's domain_template: they make an instance's domain of the claim".into(),
                    );
                }
            }
            for (slug, source) in &context.apps {
                let slug_ok = !slug.is_empty()
                    && slug.len() <= 64
                    && slug
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !slug_ok {
                    return bad(
                        "apps",
                        format!("{slug:?} is not an app's slug (lowercase letters, digits, '-')"),
                    );
                }
                if !source.starts_with("registry://")
                    && !source.starts_with("https://")
                    && !source.starts_with("http://")
                {
                    return bad(
                        &format!("apps.{slug}"),
                        format!("{source:?} is not a source: give registry://{slug}/stable or an https://….tgz URL"),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Oidc {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = |key: &'static str, value: &str| match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
            _ => Err((key, format!("{value:?} is not an http(s) URL"))),
        };
        url("issuer", &self.issuer)?;
        let redirect = url("redirect_uri", &self.redirect_uri)?;
        if redirect.path() != "/oidc/redirect" {
            return Err((
                "redirect_uri",
                format!(
                    "{:?} must end in /oidc/redirect, the route that takes the provider's answer",
                    self.redirect_uri
                ),
            ));
        }
        if self.client_id.is_empty() {
            return Err((
                "client_id",
                "the client id registered with the provider is needed".into(),
            ));
        }
        if !self.login_domain.is_empty() && !crate::domain::is_valid(crate::domain::without_port(&self.login_domain)) {
            return Err(("login_domain", format!("{:?} is not a domain", self.login_domain)));
        }
        if self.allow_instance_creation && self.login_domain.is_empty() {
            return Err((
                "allow_instance_creation",
                "instances are created from the login domain: set login_domain too".into(),
            ));
        }
        Ok(())
    }
}

/// A context's name: what cozy-stack accepts in its configuration and on the command line.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Context {
    /// The domain the OIDC claim `value` names: the provider's prefix and suffix around it, or
    /// the domain template; `None` when the value cannot be a domain label.
    pub fn domain_of_claim(&self, value: &str) -> Option<String> {
        let oidc = self.oidc.as_ref()?;
        if oidc.instance_prefix.is_empty() && oidc.instance_suffix.is_empty() {
            return self.domain_of(value);
        }
        let label = value.trim().to_ascii_lowercase();
        let domain = format!("{}{label}{}", oidc.instance_prefix, oidc.instance_suffix);
        let (name, _) = crate::domain::split_port(&domain);
        // One label: a claim with a dot or a port would reach another domain.
        let one_label = !label.is_empty() && !label.contains(['.', ':', '/']);
        (one_label && crate::domain::is_valid(name)).then_some(domain)
    }

    /// The domain of roster user `user` in this context: the template with the user in its
    /// place, or `None` when the context has no template or the name cannot be a domain label.
    pub fn domain_of(&self, user: &str) -> Option<String> {
        if self.domain_template.is_empty() {
            return None;
        }
        let label = user.trim().to_ascii_lowercase();
        let domain = self.domain_template.replace("{user}", &label);
        (!label.contains('.') && crate::domain::is_valid(&domain)).then_some(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Contexts {
        toml::from_str::<toml::Table>(text).unwrap()["contexts"]
            .clone()
            .try_into()
            .unwrap()
    }

    #[test]
    fn test_a_context_reads_from_toml_with_its_sizes_and_free_keys() {
        let contexts = parse(
            r#"
            [contexts.school]
            disk_quota = "2GB"
            locale = "fr"
            domain_template = "{user}.school.test"
            config = { help_link = "https://help.school.test", claudy_actions = ["desktop"] }
            flags = { "drive.office" = true }
            "#,
        );
        contexts.validate().unwrap();
        let school = contexts.get("school").unwrap();
        assert_eq!(school.disk_quota, Some(2_000_000_000));
        assert_eq!(school.config["claudy_actions"], serde_json::json!(["desktop"]));
        assert_eq!(school.flags["drive.office"], serde_json::json!(true));
        assert_eq!(school.domain_of("JDupont").as_deref(), Some("jdupont.school.test"));
        assert_eq!(school.domain_of("j.dupont"), None);
        assert_eq!(school.domain_of("j dupont"), None);
        // The default context is there even when not configured; unknown ones are not.
        assert_eq!(contexts.get(""), Some(&Context::default()));
        assert!(contexts.get("other").is_none());
        let names: Vec<&str> = contexts.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["default", "school"]);
    }

    #[test]
    fn test_an_oidc_provider_reads_with_cozy_stacks_names_and_makes_domains_of_claims() {
        let contexts = parse(
            r#"
            [contexts.school]
            domain_template = "{user}.school.test"
            [contexts.school.oidc]
            issuer = "https://idp.school.test"
            client_id = "cocon"
            client_secret = "s3cret"
            redirect_uri = "https://callback.school.test/oidc/redirect"
            userinfo_instance_field = "school_id"
            scope = "openid email"
            [contexts.uni.oidc]
            issuer = "https://idp.uni.test"
            client_id = "cocon"
            redirect_uri = "https://callback.uni.test/oidc/redirect"
            userinfo_instance_prefix = "u"
            userinfo_instance_suffix = ".uni.test:8080"
            "#,
        );
        contexts.validate().unwrap();
        let school = contexts.get("school").unwrap();
        let oidc = school.oidc.as_ref().unwrap();
        assert_eq!(oidc.claim(), "school_id");
        assert_eq!(oidc.scopes(), ["openid", "email"]);
        assert!(!format!("{oidc:?}").contains("s3cret"), "the secret stays out of logs");
        assert_eq!(school.domain_of_claim("Alice").as_deref(), Some("alice.school.test"));
        assert_eq!(school.domain_of_claim("a.b"), None, "a claim is one label");
        let uni = contexts.get("uni").unwrap();
        assert_eq!(uni.oidc.as_ref().unwrap().claim(), "sub");
        assert_eq!(uni.domain_of_claim("00042").as_deref(), Some("u00042.uni.test:8080"));
        assert_eq!(uni.domain_of_claim("x y"), None);
        assert_eq!(uni.domain_of_claim("evil.test:1"), None);
        assert_eq!(
            Context::default().domain_of_claim("alice"),
            None,
            "no provider, no claim"
        );
    }

    #[test]
    fn test_wrong_contexts_are_refused_with_the_key_named() {
        for (text, key) in [
            ("[contexts.a]\nlocale = \"de\"", "contexts.a.locale"),
            (
                "[contexts.a]\ndomain_template = \"school.test\"",
                "contexts.a.domain_template",
            ),
            (
                "[contexts.a]\ndomain_template = \"{user}.{user}.test\"",
                "contexts.a.domain_template",
            ),
            ("[contexts.a]\nregistry = \"ftp://x\"", "contexts.a.registry"),
            ("[contexts.a]\nsmtp = { server = \"x\" }", "contexts.a.smtp.server"),
            ("[contexts.a]\napps = { notes = \"notes\" }", "contexts.a.apps.notes"),
            (
                "[contexts.a]\napps = { Notes = \"registry://notes/stable\" }",
                "contexts.a.apps",
            ),
            ("[contexts.\"a b\"]", "contexts.a b"),
        ] {
            let err = parse(text).validate().unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        let oidc = "[contexts.a]\ndomain_template = \"{user}.a.test\"\n[contexts.a.oidc]\nclient_id = \"c\"\n";
        for (keys, key) in [
            (
                "issuer = \"login.test\"\nredirect_uri = \"https://cb.test/oidc/redirect\"",
                "contexts.a.oidc.issuer",
            ),
            (
                "issuer = \"https://idp.test\"\nredirect_uri = \"https://cb.test/callback\"",
                "contexts.a.oidc.redirect_uri",
            ),
            (
                "issuer = \"https://idp.test\"\nredirect_uri = \"https://cb.test/oidc/redirect\"\nallow_instance_creation = true",
                "contexts.a.oidc.allow_instance_creation",
            ),
        ] {
            let err = parse(&format!("{oidc}{keys}")).validate().unwrap_err();
            assert!(err.starts_with(key), "{keys}: {err}");
        }
        let unknown = toml::from_str::<toml::Table>("[contexts.a]\nquota = 1").unwrap()["contexts"]
            .clone()
            .try_into::<Contexts>();
        assert!(unknown.is_err(), "unknown keys are refused");
    }
}
