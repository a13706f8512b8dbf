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
    /// Give each teacher of the context a contact group per class they teach, holding its
    /// pupils (from the rosters' `class` and `role` columns), so that they share a folder with a
    /// class in one step. `cocon instances import` does it after a roster with a `role` column;
    /// run it again after changing classes. Running it twice changes nothing.
    #[command(after_help = "Example:\n  cocon contexts classes school")]
    Classes {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Asks the server to write the context's class groups and says what it did; an error when a
/// teacher's groups could not be written.
pub async fn classes(admin: &Admin, name: &str) -> anyhow::Result<()> {
    let report = admin
        .call(
            reqwest::Method::POST,
            &format!("/instances/contexts/{name}/classes"),
            &[],
        )
        .await?;
    let count = |key: &str| report[key].as_u64().unwrap_or_default();
    eprintln!(
        "class groups: {} teachers in {} classes; {} groups and {} contacts written (the others were up to date)",
        count("teachers"),
        count("classes"),
        count("groups_written"),
        count("contacts_written")
    );
    let failed = report["failed"].as_array().cloned().unwrap_or_default();
    for f in &failed {
        eprintln!(
            "{}: {}",
            f["domain"].as_str().unwrap_or_default(),
            f["reason"].as_str().unwrap_or_default()
        );
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} teachers' class groups could not be written: run `cocon contexts classes {name}` again",
            failed.len()
        );
    }
    Ok(())
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
        ContextsCommand::Classes { name, admin } => classes(&Admin::new(&admin)?, &name).await?,
    }
    Ok(())
}
