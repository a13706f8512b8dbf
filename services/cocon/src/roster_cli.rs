//! `cocon instances import ROSTER.csv --context NAME`: sends a roster to the admin API in parts
//! (one commit each on the server), with a progress bar and a report of the rows rejected; a
//! roster with a `role` column then gets its teachers' class groups written.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::cli::{Admin, AdminArgs};

#[derive(Args)]
pub struct ImportArgs {
    /// The roster: a CSV file with a header line (`-` reads it from stdin).
    roster: PathBuf,
    /// The context the instances belong to (`cocon contexts ls`).
    #[arg(long, default_value = cocon_common::context::DEFAULT)]
    context: String,
    /// Rows sent per request (each request is one commit on the server; at most 10000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    batch: u16,
    /// Write the rejected rows there as CSV (line, who, reason) instead of listing them on stderr.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Give each new instance its one-time onboarding link: `link` writes them to --links,
    /// `mail` also mails each to the row's e-mail address ([jobs.smtp] must be set).
    #[arg(long, value_enum, default_value_t = Onboarding::None)]
    onboarding: Onboarding,
    /// Where the onboarding links go, as CSV (domain, email, onboarding_url, expires_at).
    #[arg(long)]
    links: Option<PathBuf>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Onboarding {
    None,
    Link,
    Mail,
}

/// One rejected row, as the admin API reports it.
#[derive(serde::Deserialize)]
struct Rejected {
    line: u64,
    who: String,
    reason: String,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    if args.onboarding == Onboarding::Link && args.links.is_none() {
        anyhow::bail!("--onboarding link writes the links to a file: say which with --links FILE");
    }
    let mut links = match &args.links {
        Some(path) => {
            let mut out = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
            out.write_record(["domain", "email", "onboarding_url", "expires_at"])?;
            Some(out)
        }
        None => None,
    };
    let admin = Admin::new(&args.admin)?;
    let text = if args.roster.as_os_str() == "-" {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text).context("cannot read the roster from stdin")?;
        text
    } else {
        std::fs::read(&args.roster).with_context(|| format!("cannot read the roster {}", args.roster.display()))?
    };
    // Rows are read here only to cut the roster in parts at row boundaries (a quoted field may
    // hold a line break); the server reads the columns and reports what is wrong with a row.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_slice());
    let header = reader
        .byte_headers()
        .context("the roster's header line cannot be read")?
        .clone();
    let mut rows = Vec::new();
    for row in reader.byte_records() {
        let row = row.with_context(|| format!("the roster cannot be read past row {}", rows.len() + 1))?;
        let line = row.position().map_or(0, |p| p.line());
        rows.push((line, row));
    }
    if rows.is_empty() {
        anyhow::bail!("the roster has no row under its header: nothing to import");
    }

    let bar = indicatif::ProgressBar::new(rows.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("importing into {}", args.context));
    let started = Instant::now();
    let (mut created, mut existing) = (0u64, 0u64);
    let mut rejected: Vec<Rejected> = Vec::new();
    for part in rows.chunks(usize::from(args.batch)) {
        let mut body = csv::Writer::from_writer(Vec::new());
        body.write_byte_record(&header)?;
        for (_, row) in part {
            body.write_byte_record(row)?;
        }
        let body = body.into_inner().context("cannot write a part of the roster")?;
        let onboarding = match args.onboarding {
            Onboarding::None => "none",
            Onboarding::Link => "link",
            Onboarding::Mail => "mail",
        };
        let query = [
            ("ContextName", args.context.clone()),
            ("line", part[0].0.to_string()),
            ("Onboarding", onboarding.to_string()),
        ];
        let answer = admin
            .call_with(
                reqwest::Method::POST,
                "/instances/import",
                &query,
                Some(("text/csv", body)),
            )
            .await
            .inspect_err(|_| bar.abandon())?;
        created += answer["created"].as_u64().unwrap_or_default();
        existing += answer["existing"].as_u64().unwrap_or_default();
        let part_rejected: Vec<Rejected> =
            serde_json::from_value(answer.get("rejected").cloned().unwrap_or(Value::Null)).unwrap_or_default();
        rejected.extend(part_rejected);
        if let Some(out) = links.as_mut() {
            for i in answer["instances"].as_array().into_iter().flatten() {
                let Some(url) = i["onboarding_url"].as_str() else {
                    continue;
                };
                let expires = cocon_common::time::rfc3339(i["onboarding_expires_at"].as_i64().unwrap_or(0));
                let email = i["email"].as_str().unwrap_or_default();
                out.write_record([i["domain"].as_str().unwrap_or_default(), email, url, &expires])?;
            }
            out.flush()?;
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{created} instances created, {existing} already there, {} rows rejected, in {secs:.1} s ({:.0} rows/s)",
        rejected.len(),
        rows.len() as f64 / secs.max(1e-3)
    );
    // A roster naming teachers: their class groups follow it.
    if header.iter().any(|h| h.trim_ascii().eq_ignore_ascii_case(b"role")) {
        crate::contexts_cli::classes(&admin, &args.context).await?;
    }
    if rejected.is_empty() {
        return Ok(());
    }
    match &args.report {
        Some(path) => {
            let mut out = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
            out.write_record(["line", "who", "reason"])?;
            for r in &rejected {
                out.write_record([r.line.to_string().as_str(), &r.who, &r.reason])?;
            }
            out.flush()?;
            eprintln!("the rejected rows are in {}", path.display());
        }
        None => {
            let mut err = std::io::stderr().lock();
            for r in &rejected {
                writeln!(err, "line {} ({}): {}", r.line, r.who, r.reason)?;
            }
        }
    }
    anyhow::bail!(
        "{} rows rejected: fix them and run the same command again (the instances created stay as they are)",
        rejected.len()
    )
}
