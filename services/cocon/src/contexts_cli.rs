//! `cocon contexts …`: the contexts of a running server's configuration (`[contexts.<name>]`).

use clap::Subcommand;
use serde_json::Value;

use crate::cli::{Admin, AdminArgs};

#[derive(Subcommand)]
pub enum ContextsCommand {
    /// List the contexts of the server's configuration, with the defaults of their new instances.
    #[command(after_help = "Example:\n  cocon contexts ls")]
    Ls {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print one context's configuration as JSON.
    #[command(after_help = "Example:\n  cocon contexts show school")]
    Show {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn run(cmd: ContextsCommand) -> anyhow::Result<()> {
    match cmd {
        ContextsCommand::Ls { admin } => {
            let list = Admin::new(&admin)?
                .call(reqwest::Method::GET, "/instances/contexts", &[])
                .await?;
            println!("CONTEXT\tQUOTA\tLOCALE\tDOMAINS\tAPPS");
            for c in list.as_array().into_iter().flatten() {
                let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or("-").to_string();
                let quota = match c.get("disk_quota").and_then(Value::as_u64) {
                    Some(0) => "none".to_string(),
                    Some(bytes) => bytes.to_string(),
                    None => "-".to_string(),
                };
                let apps = c.get("apps").and_then(Value::as_object).map_or(0, serde_json::Map::len);
                println!(
                    "{}\t{quota}\t{}\t{}\t{apps}",
                    text("context"),
                    text("locale"),
                    text("domain_template")
                );
            }
        }
        ContextsCommand::Show { name, admin } => {
            let context = Admin::new(&admin)?
                .call(reqwest::Method::GET, &format!("/instances/contexts/{name}"), &[])
                .await?;
            println!("{}", serde_json::to_string_pretty(&context)?);
        }
    }
    Ok(())
}
