//! `cocon instances …`: talks to the admin API of a running server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Clone)]
pub struct AdminArgs {
    /// The admin API of the server.
    #[arg(
        long,
        env = "COCON_ADMIN_URL",
        default_value = "http://127.0.0.1:6060",
        global = true
    )]
    admin: String,
    /// The admin token; by default read from <data-dir>/admin-token.
    #[arg(long, env = "COCON_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// The server's data directory, to find the admin token.
    #[arg(long, env = "COCON_DATA_DIR", default_value = "./cocon-data", global = true)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum InstancesCommand {
    /// Create an instance, served at DOMAIN, and print its one-time onboarding link (the owner
    /// opens it to choose a passphrase). With --email, the link is also mailed to the owner
    /// (through the jobs service's sendmail worker: set [jobs.smtp]), and later passphrase
    /// resets go to that address.
    #[command(
        after_help = "Examples:\n  cocon instances add alice.localhost\n          cocon instances add alice.example.org --email alice@example.org --locale fr"
    )]
    Add {
        domain: String,
        /// The owner's e-mail address: where the onboarding link and passphrase resets go.
        #[arg(long)]
        email: Option<String>,
        /// The language of Cocon's mails and pages to the owner: en (default) or fr.
        #[arg(long)]
        locale: Option<String>,
        /// The context the instance belongs to (`cocon contexts ls`): its defaults apply.
        #[arg(long)]
        context: Option<String>,
        /// The owner's name, as the instance shows it.
        #[arg(long)]
        name: Option<String>,
        /// The disk quota (e.g. 5GB, none); default: the context's.
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create the instances of a roster (a CSV file) in a context, with a progress bar. The
    /// header names the columns, in any order: domain or user (a user name the context's
    /// domain_template turns into a domain), email, name, locale, quota, class, role (pupil or
    /// teacher; a teacher's class may name several, 6A;6B). Rows that cannot be created are
    /// reported with their line and the reason; instances already there in the context are
    /// left as they are, so the same command can run again once the roster is fixed. With a
    /// role column, each teacher then gets a contact group per class they teach
    /// (`cocon contexts classes`).
    #[command(after_help = "Example:\n  \
        printf 'user,name,email,class,role\\njdupont,Jean Dupont,jean@example.org,6A,\\nmprof,Marie Prof,,6A;6B,teacher\\n' > school.csv\n  \
        cocon instances import school.csv --context school")]
    Import(crate::roster_cli::ImportArgs),
    /// Print a new one-time onboarding link for DOMAIN, replacing the previous one. On an
    /// instance that has a passphrase, the link lets its owner choose a new one (a reset) and
    /// signs out every session.
    #[command(after_help = "Example:\n  cocon instances onboarding-link alice.localhost")]
    OnboardingLink {
        domain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the instances.
    #[command(after_help = "Example:\n  cocon instances ls")]
    Ls {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Destroy an instance and, in the background, all of its data.
    #[command(after_help = "Example:\n  cocon instances rm alice.localhost")]
    Rm {
        domain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Limit how much DOMAIN's files may take (contents and their versions). Uploads past it
    /// are refused with 413; what is stored stays. SIZE is bytes, or a number with KB, MB, GB,
    /// TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024); 0 or "none" removes the limit.
    #[command(after_help = "Examples:\n  \
        cocon instances set-disk-quota alice.localhost 5GB\n  \
        cocon instances set-disk-quota alice.localhost none")]
    SetDiskQuota {
        domain: String,
        #[arg(value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a bearer token for DOMAIN with the given scope (cozy-stack's grammar). Each token
    /// is its own principal, with an id (printed on stderr) to list and revoke it by.
    #[command(after_help = "Examples:\n  \
        cocon instances token-cli alice.localhost io.cozy.notes\n  \
        cocon instances token-cli alice.localhost io.cozy.contacts:GET io.cozy.notes:GET,POST\n  \
        TOKEN=$(cocon instances token-cli alice.localhost io.cozy.notes)")]
    TokenCli {
        domain: String,
        /// Permission rules: type[:verbs[:values[:selector]]], e.g. io.cozy.notes:GET.
        #[arg(required = true)]
        scope: Vec<String>,
        /// Token lifetime in seconds (default: one day).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List DOMAIN's CLI tokens that still work: id, scope, when issued, when they expire.
    /// The tokens themselves are never stored, so they cannot be shown again.
    #[command(after_help = "Example:\n  cocon instances tokens alice.localhost")]
    Tokens {
        domain: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke one of DOMAIN's CLI tokens by its id (from `cocon instances tokens`): it is
    /// refused from then on, on every gateway within a second.
    #[command(after_help = "Example:\n  cocon instances revoke-token alice.localhost 0f1e2d3c4b5a69788796a5b4c3d2e1f0")]
    RevokeToken {
        domain: String,
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `5GB`, `500MiB`, `1024`, `none` → bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    cocon_common::size::parse(text)
}

pub(crate) struct Admin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    pub(crate) fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        let token = match &args.admin_token {
            Some(t) => t.clone(),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --admin-token (or COCON_ADMIN_TOKEN), or --data-dir of the server (tried {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Admin {
            base: args.admin.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, query, None).await
    }

    /// [`Admin::call`] with a body of a content type.
    pub(crate) async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token).query(query);
        if let Some((content_type, body)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        let res = request.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {}: is `cocon serve` running? (--admin to point elsewhere)",
                self.base
            )
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(failure(status, text));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the admin API answered something that is not JSON")
    }
}

/// A failed answer as an error: its status and the reason Cocon gave (its JSON `reason`).
pub(crate) fn failure(status: reqwest::StatusCode, text: String) -> anyhow::Error {
    let reason = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or(text);
    anyhow::anyhow!("{status}: {reason}")
}

/// Tells the operator what to do with the onboarding link (on stderr: stdout stays parseable).
fn print_onboarding(v: &Value) {
    if let Some(url) = v.get("onboarding_url").and_then(Value::as_str) {
        let days = v
            .get("onboarding_expires_at")
            .and_then(Value::as_i64)
            .map(|t| (t - cocon_common::time::now_secs()) / 86_400)
            .unwrap_or_default();
        eprintln!(
            "Send this one-time link to the instance's owner; it lets them choose their passphrase \
             and works for {days} days:\n  {url}"
        );
    }
}

pub async fn run(cmd: InstancesCommand) -> anyhow::Result<()> {
    match cmd {
        InstancesCommand::Add {
            domain,
            email,
            locale,
            context,
            name,
            quota,
            admin,
        } => {
            let mut query = vec![("Domain", domain)];
            query.extend(email.map(|e| ("Email", e)));
            query.extend(locale.map(|l| ("Locale", l)));
            query.extend(context.map(|c| ("ContextName", c)));
            query.extend(name.map(|n| ("PublicName", n)));
            query.extend(quota.map(|q| ("DiskQuota", q.to_string())));
            let v = Admin::new(&admin)?
                .call(reqwest::Method::POST, "/instances", &query)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            print_onboarding(&v);
            if let Some(to) = v.get("onboarding_mailed_to").and_then(Value::as_str) {
                eprintln!(
                    "The link was also mailed to {to} (sendmail job {}; without [jobs.smtp] configured it errors).",
                    v.get("onboarding_mail_job").and_then(Value::as_str).unwrap_or_default()
                );
            }
        }
        InstancesCommand::Import(args) => crate::roster_cli::import(args).await?,
        InstancesCommand::OnboardingLink { domain, admin } => {
            let v = Admin::new(&admin)?
                .call(reqwest::Method::POST, &format!("/instances/{domain}/onboarding"), &[])
                .await?;
            println!(
                "{}",
                v.get("onboarding_url").and_then(Value::as_str).unwrap_or_default()
            );
            print_onboarding(&v);
        }
        InstancesCommand::Ls { admin } => {
            // A page at a time, each printed as it comes: a host may hold a million instances.
            const PAGE: usize = 1000;
            let admin = Admin::new(&admin)?;
            let mut after = String::new();
            let mut listed = 0;
            loop {
                let mut query = vec![("limit", PAGE.to_string())];
                if !after.is_empty() {
                    query.push(("after", after.clone()));
                }
                let v = admin.call(reqwest::Method::GET, "/instances", &query).await?;
                let page = v.as_array().cloned().unwrap_or_default();
                for i in &page {
                    let domain = i.get("domain").and_then(Value::as_str).unwrap_or_default();
                    println!("{domain}\t{}", i.get("id").and_then(Value::as_str).unwrap_or_default());
                    after = domain.to_string();
                }
                listed += page.len();
                if page.len() < PAGE {
                    break;
                }
            }
            if listed == 0 {
                eprintln!("no instance yet: create one with `cocon instances add DOMAIN`");
            }
        }
        InstancesCommand::SetDiskQuota { domain, size, admin } => {
            Admin::new(&admin)?
                .call(
                    reqwest::Method::PATCH,
                    &format!("/instances/{domain}"),
                    &[("DiskQuota", size.to_string())],
                )
                .await?;
            if size == 0 {
                eprintln!("{domain} has no disk quota");
            } else {
                eprintln!("{domain} may store up to {size} bytes");
            }
        }
        InstancesCommand::Rm { domain, admin } => {
            Admin::new(&admin)?
                .call(reqwest::Method::DELETE, &format!("/instances/{domain}"), &[])
                .await?;
            eprintln!("instance {domain} destroyed");
        }
        InstancesCommand::TokenCli {
            domain,
            scope,
            ttl,
            admin,
        } => {
            let mut query = vec![
                ("Domain", domain),
                ("Scope", scope.join(" ")),
                ("Audience", "cli".to_string()),
            ];
            if let Some(ttl) = ttl {
                query.push(("TTL", ttl.to_string()));
            }
            let v = Admin::new(&admin)?
                .call(reqwest::Method::POST, "/instances/token", &query)
                .await?;
            println!("{}", v.get("token").and_then(Value::as_str).unwrap_or_default());
            eprintln!(
                "token id {} (revoke it with `cocon instances revoke-token {} <id>`)",
                v.get("id").and_then(Value::as_str).unwrap_or_default(),
                query[0].1
            );
        }
        InstancesCommand::Tokens { domain, admin } => {
            let v = Admin::new(&admin)?
                .call(reqwest::Method::GET, &format!("/instances/{domain}/tokens"), &[])
                .await?;
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("{domain} has no CLI token in use: make one with `cocon instances token-cli {domain} SCOPE`");
            } else {
                println!("ID\tISSUED\tEXPIRES\tSCOPE");
            }
            let date =
                |t: &Value, key: &str| cocon_common::time::rfc3339(t.get(key).and_then(Value::as_i64).unwrap_or(0));
            for t in list {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.get("id").and_then(Value::as_str).unwrap_or_default(),
                    date(&t, "issued_at"),
                    date(&t, "expires_at"),
                    t.get("scope").and_then(Value::as_str).unwrap_or_default()
                );
            }
        }
        InstancesCommand::RevokeToken { domain, id, admin } => {
            Admin::new(&admin)?
                .call(
                    reqwest::Method::DELETE,
                    &format!("/instances/{domain}/tokens/{id}"),
                    &[],
                )
                .await?;
            eprintln!("token {id} of {domain} revoked");
        }
    }
    Ok(())
}
