//! `cocon apps …`: cozy-stack's commands for web apps, through the public API of a running
//! server with a short-lived CLI token.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use crate::jobs_cli::{Api, ApiArgs, source_param, url_encode};

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Install web app SLUG on an instance from SOURCE: registry://SLUG/CHANNEL (the apps
    /// registry of the server's configuration), an https://….tar.gz#sha256, or a directory or
    /// a .tar.gz on the server's machine holding `manifest.webapp` and the built app.
    #[command(after_help = "Examples:\n  \
        cocon apps install drive registry://drive/stable --domain alice.localhost\n  \
        cocon apps install notes ./notes/build --domain alice.localhost\n\n\
        The app then opens at http://SLUG.DOMAIN (e.g. http://notes.alice.localhost:8080).")]
    Install {
        slug: String,
        source: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Update web app SLUG, from SOURCE or else from where it was installed from.
    #[command(after_help = "Example:\n  cocon apps update drive --domain alice.localhost")]
    Update {
        slug: String,
        source: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the web apps installed on an instance: slug, version, name, source.
    #[command(after_help = "Example:\n  cocon apps ls --domain alice.localhost")]
    Ls {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove web app SLUG from an instance (its documents stay).
    #[command(after_help = "Example:\n  cocon apps uninstall notes --domain alice.localhost")]
    Uninstall {
        slug: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn print_app(verb: &str, answer: &Value) -> anyhow::Result<()> {
    let a = &answer["data"]["attributes"];
    eprintln!(
        "{verb} {} {} ({})",
        a["slug"].as_str().unwrap_or_default(),
        a["version"].as_str().unwrap_or_default(),
        a["name"].as_str().unwrap_or_default()
    );
    println!("{}", serde_json::to_string_pretty(&answer["data"])?);
    Ok(())
}

pub async fn run(cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::Install { slug, source, api } => {
            let source = source_param(&source)?;
            let api = Api::open(&api, "io.cozy.apps", Duration::from_secs(900)).await?;
            let path = format!("/apps/{slug}?Source={}", url_encode(&source));
            let result = api.call_watched(reqwest::Method::POST, &path).await;
            api.close().await;
            print_app("installed", &result?)
        }
        AppsCommand::Update { slug, source, api } => {
            let query = match source {
                Some(s) => format!("?Source={}", url_encode(&source_param(&s)?)),
                None => String::new(),
            };
            let api = Api::open(&api, "io.cozy.apps", Duration::from_secs(900)).await?;
            let result = api
                .call_watched(reqwest::Method::PUT, &format!("/apps/{slug}{query}"))
                .await;
            api.close().await;
            print_app("updated", &result?)
        }
        AppsCommand::Ls { api } => {
            let api = Api::open(&api, "io.cozy.apps:GET", Duration::from_secs(60)).await?;
            let result = api.call(reqwest::Method::GET, "/apps/", None).await;
            api.close().await;
            let list = result?["data"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("no app yet: install one with `cocon apps install SLUG SOURCE --domain DOMAIN`");
            }
            for app in list {
                let a = &app["attributes"];
                let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
                println!(
                    "{}\t{}\t{}\t{}",
                    text(&a["slug"]),
                    text(&a["version"]),
                    text(&a["name"]),
                    text(&a["source"])
                );
            }
            Ok(())
        }
        AppsCommand::Uninstall { slug, api } => {
            let api = Api::open(&api, "io.cozy.apps", Duration::from_secs(60)).await?;
            let result = api.call(reqwest::Method::DELETE, &format!("/apps/{slug}"), None).await;
            api.close().await;
            result?;
            eprintln!("{slug} uninstalled");
            Ok(())
        }
    }
}
