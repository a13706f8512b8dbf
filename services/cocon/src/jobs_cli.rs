//! `cocon jobs …` and `cocon triggers …`: cozy-stack's commands, through the public API of a
//! running server with a short-lived CLI token (minted on the admin API, revoked at the end).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::{Admin, AdminArgs, failure};

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The instance, as its domain.
    #[arg(long)]
    domain: String,
    /// The server's public HTTP address.
    #[arg(long, env = "COCON_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Queue a job for WORKER on an instance, wait for it to end, and print it as JSON. Exits
    /// with an error when the job errored.
    #[command(after_help = "Examples:\n  \
        cocon jobs run log --domain alice.localhost --json '{\"hello\":\"world\"}'\n  \
        cocon jobs run sendmail --domain alice.localhost --json \
        '{\"mode\":\"noreply\",\"to\":[{\"email\":\"bob@example.org\"}],\"subject\":\"Hi\",\"parts\":[{\"type\":\"text/plain\",\"body\":\"Hello\"}]}'")]
    Run {
        worker: String,
        /// The job's arguments, as JSON.
        #[arg(long, default_value = "{}")]
        json: String,
        /// Stop waiting after this many seconds (the job goes on).
        #[arg(long, default_value_t = 3600)]
        wait: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub enum KonnectorsCommand {
    /// Install (or update) konnector SLUG on an instance from SOURCE: a directory or a .tar.gz
    /// on the server's machine holding `manifest.konnector` and the konnector's code (its
    /// `index.js` or package.json `main`, with its node_modules), an https://….tar.gz#sha256,
    /// or registry://SLUG/CHANNEL.
    #[command(after_help = "Examples:\n  \
        cocon konnectors install mybank ./mybank-konnector --domain alice.localhost\n  \
        cocon konnectors install mybank /srv/konnectors/mybank.tar.gz --domain alice.localhost")]
    Install {
        slug: String,
        source: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the konnectors installed on an instance: slug, version, name.
    #[command(after_help = "Example:\n  cocon konnectors ls --domain alice.localhost")]
    Ls {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove konnector SLUG from an instance.
    #[command(after_help = "Example:\n  cocon konnectors uninstall mybank --domain alice.localhost")]
    Uninstall {
        slug: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run konnector SLUG now, wait for it to end, and print its job. Exits with an error when
    /// it failed (the job's error says why: LOGIN_FAILED, …).
    #[command(after_help = "Example:\n  cocon konnectors run mybank --domain alice.localhost --account 0123abcd")]
    Run {
        slug: String,
        /// The io.cozy.accounts document it logs in with.
        #[arg(long)]
        account: Option<String>,
        /// Stop waiting after this many seconds (the run goes on).
        #[arg(long, default_value_t = 3600)]
        wait: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub enum TriggersCommand {
    /// List an instance's triggers: id, type, arguments, worker, and how its last job went.
    #[command(after_help = "Example:\n  cocon triggers ls --domain alice.localhost")]
    Ls {
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// A client of the public API, with a CLI token for the instance.
pub(crate) struct Api {
    base: String,
    domain: String,
    token: String,
    token_id: String,
    admin: Admin,
    http: reqwest::Client,
}

impl Api {
    pub(crate) async fn open(args: &ApiArgs, scope: &str, ttl: Duration) -> anyhow::Result<Api> {
        let admin = Admin::new(&args.admin)?;
        let issued = admin
            .call(
                reqwest::Method::POST,
                "/instances/token",
                &[
                    ("Domain", args.domain.clone()),
                    ("Scope", scope.to_string()),
                    ("Audience", "cli".to_string()),
                    ("TTL", ttl.as_secs().max(60).to_string()),
                ],
            )
            .await?;
        let field = |k: &str| issued.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(Api {
            base: args.url.trim_end_matches('/').to_string(),
            domain: args.domain.clone(),
            token: field("token"),
            token_id: field("id"),
            admin,
            http: reqwest::Client::new(),
        })
    }

    /// A request to the public API, as the instance, with the command's token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::HOST, &self.domain)
            .bearer_auth(&self.token)
    }

    /// Sends `request`; a refusal is an error saying why.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let res = request.send().await.with_context(|| {
            format!(
                "cannot reach Cocon at {}: is `cocon serve` running? (--url to point elsewhere)",
                self.base
            )
        })?;
        let status = res.status();
        if !status.is_success() {
            return Err(failure(status, res.text().await.unwrap_or_default()));
        }
        Ok(res)
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let text = self.send(request).await?.text().await.unwrap_or_default();
        serde_json::from_str(&text).context("Cocon answered something that is not JSON")
    }

    /// A call answered as an event stream (an installation): its `progress` events move a bar
    /// on the terminal, its last `state` event is the answer, an `error` event fails it.
    pub(crate) async fn call_watched(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let request = self
            .request(method, path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let mut res = self.send(request).await?;
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut pending: Vec<u8> = Vec::new();
        let mut answer = None;
        while let Some(chunk) = res
            .chunk()
            .await
            .context("the connection to Cocon broke before the end: see where it stands with `cocon apps ls`")?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = pending.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
                let (Some(event), Some(data)) = (field("event:"), field("data:")) else {
                    continue;
                };
                let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                match event {
                    "progress" => {
                        if let Some(total) = data["total"].as_u64().filter(|t| *t > 0)
                            && bar.length() != Some(total)
                        {
                            bar.set_length(total);
                            bar.set_style(
                                indicatif::ProgressStyle::with_template(
                                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                                )
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                            );
                        }
                        bar.set_position(data["received"].as_u64().unwrap_or_default());
                    }
                    "state" => {
                        let state = data["data"]["attributes"]["state"].as_str().unwrap_or_default();
                        bar.set_message(state.to_string());
                        answer = Some(data);
                    }
                    "error" => {
                        bar.finish_and_clear();
                        let e = &data["errors"][0];
                        let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                        bail!("{} {}: {}", text("status"), text("title"), text("detail"));
                    }
                    _ => {}
                }
            }
        }
        bar.finish_and_clear();
        answer
            .filter(|a| a["data"]["attributes"]["state"] == "ready")
            .context("the event stream ended before the installation did: see where it stands with `cocon apps ls`")
    }

    /// A call whose answer has no body (204).
    pub(crate) async fn call_empty(&self, method: reqwest::Method, path: &str) -> anyhow::Result<()> {
        self.send(self.request(method, path)).await?;
        Ok(())
    }

    /// Revokes the token (it would expire on its own; this keeps the list of tokens short).
    pub(crate) async fn close(self) {
        let path = format!("/instances/{}/tokens/{}", self.domain, self.token_id);
        if let Err(err) = self.admin.call(reqwest::Method::DELETE, &path, &[]).await {
            eprintln!("warning: cannot revoke the command's token ({err}); it expires on its own");
        }
    }
}

pub async fn run_jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Run {
            worker,
            json,
            wait,
            api,
        } => {
            let arguments: Value = serde_json::from_str(&json).context("--json is not valid JSON")?;
            let api = Api::open(&api, "io.cozy.jobs", Duration::from_secs(wait + 60)).await?;
            let result = run_job(&api, &worker, arguments, Duration::from_secs(wait)).await;
            api.close().await;
            let job = result?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            if job["attributes"]["state"] == "errored" {
                bail!(
                    "the job errored: {}",
                    job["attributes"]["error"].as_str().unwrap_or("no reason given")
                );
            }
            Ok(())
        }
    }
}

async fn run_job(api: &Api, worker: &str, arguments: Value, wait: Duration) -> anyhow::Result<Value> {
    let queued = api
        .call(
            reqwest::Method::POST,
            &format!("/jobs/queue/{worker}"),
            Some(serde_json::json!({"data": {"attributes": {"arguments": arguments}}})),
        )
        .await?;
    let id = queued["data"]["id"].as_str().unwrap_or_default().to_string();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(20);
    loop {
        let job = api.call(reqwest::Method::GET, &format!("/jobs/{id}"), None).await?["data"].take();
        let state = job["attributes"]["state"].as_str().unwrap_or_default().to_string();
        spinner.set_message(format!("job {id} ({worker}): {state}"));
        if matches!(state.as_str(), "done" | "errored") {
            spinner.finish_and_clear();
            return Ok(job);
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            bail!(
                "job {id} is still {state} after {} s; see it with GET /jobs/{id}",
                wait.as_secs()
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

pub async fn run_konnectors(cmd: KonnectorsCommand) -> anyhow::Result<()> {
    match cmd {
        KonnectorsCommand::Install { slug, source, api } => {
            let source = source_param(&source)?;
            let api = Api::open(&api, "io.cozy.konnectors", Duration::from_secs(600)).await?;
            let url = format!("/konnectors/{slug}?Source={}", url_encode(&source));
            let result = api.call(reqwest::Method::POST, &url, None).await;
            api.close().await;
            let installed = result?;
            let a = &installed["data"]["attributes"];
            eprintln!(
                "installed {slug} {} ({})",
                a["version"].as_str().unwrap_or_default(),
                a["name"].as_str().unwrap_or_default()
            );
            println!("{}", serde_json::to_string_pretty(&installed["data"])?);
            Ok(())
        }
        KonnectorsCommand::Ls { api } => {
            let api = Api::open(&api, "io.cozy.konnectors:GET", Duration::from_secs(60)).await?;
            let result = api.call(reqwest::Method::GET, "/konnectors/", None).await;
            api.close().await;
            let list = result?["data"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no konnector yet: install one with `cocon konnectors install SLUG SOURCE --domain DOMAIN`");
            }
            for k in list {
                let a = &k["attributes"];
                let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
                println!("{}\t{}\t{}", text(&a["slug"]), text(&a["version"]), text(&a["name"]));
            }
            Ok(())
        }
        KonnectorsCommand::Uninstall { slug, api } => {
            let api = Api::open(&api, "io.cozy.konnectors", Duration::from_secs(60)).await?;
            let result = api
                .call_empty(reqwest::Method::DELETE, &format!("/konnectors/{slug}"))
                .await;
            api.close().await;
            result?;
            eprintln!("{slug} uninstalled");
            Ok(())
        }
        KonnectorsCommand::Run {
            slug,
            account,
            wait,
            api,
        } => {
            let mut message = serde_json::json!({"konnector": slug});
            if let Some(account) = account {
                message["account"] = Value::String(account);
            }
            let api = Api::open(&api, "io.cozy.jobs", Duration::from_secs(wait + 60)).await?;
            let result = run_job(&api, "konnector", message, Duration::from_secs(wait)).await;
            api.close().await;
            let job = result?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            if job["attributes"]["state"] == "errored" {
                bail!(
                    "the konnector failed: {}",
                    job["attributes"]["error"].as_str().unwrap_or("no reason given")
                );
            }
            Ok(())
        }
    }
}

/// A source as the server takes it: a URL as given, a local path made absolute (`file://`).
pub(crate) fn source_param(text: &str) -> anyhow::Result<String> {
    if text.contains("://") {
        return Ok(text.to_string());
    }
    let path = std::fs::canonicalize(text).with_context(|| format!("cannot find {text}"))?;
    Ok(format!("file://{}", path.display()))
}

pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run_triggers(cmd: TriggersCommand) -> anyhow::Result<()> {
    match cmd {
        TriggersCommand::Ls { api } => {
            let api = Api::open(&api, "io.cozy.triggers:GET", Duration::from_secs(60)).await?;
            let result = api.call(reqwest::Method::GET, "/jobs/triggers", None).await;
            api.close().await;
            let list = result?["data"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no trigger yet");
            }
            for t in list {
                let a = &t["attributes"];
                let s = &a["current_state"];
                let str_of = |v: &Value| v.as_str().unwrap_or("-").to_string();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    str_of(&t["id"]),
                    str_of(&a["type"]),
                    str_of(&a["arguments"]).replace('\t', " "),
                    str_of(&a["worker"]),
                    if s["status"].as_str().unwrap_or_default().is_empty() {
                        "never ran".to_string()
                    } else {
                        str_of(&s["status"])
                    }
                );
            }
            Ok(())
        }
    }
}
