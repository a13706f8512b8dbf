//! The `sendmail` worker: cozy-stack's mail message (`mode`, `to`, `subject`, `parts`,
//! `attachments`, …) sent with lettre to the configured SMTP server.
//!
//! The mails Cocon sends itself name a `template_name` (`templates.rs`), which only the server
//! and its command line may queue. What Cocon does not know yet is refused with a message that
//! says so, never faked: an instance has no e-mail address of its own until its settings exist
//! (a `noreply` mail must name its recipients).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::{Failure, Run, Work};
use crate::config::SmtpConfig;

pub struct Sendmail {
    config: SmtpConfig,
    /// The contexts whose instances' mail goes elsewhere (`[contexts.<name>.smtp]`).
    by_context: BTreeMap<String, SmtpConfig>,
    /// Reaches the auth service, to read a mail's instance's context when some context has
    /// its own server.
    runtime: Option<Arc<crate::konnectors::Runtime>>,
}

#[derive(Debug, Deserialize)]
struct Mail {
    mode: String,
    #[serde(default)]
    to: Vec<Address>,
    from: Option<Address>,
    reply_to: Option<Address>,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    parts: Vec<Part>,
    #[serde(default)]
    template_name: String,
    #[serde(default)]
    template_values: serde_json::Value,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    attachments: Vec<AttachmentIn>,
}

#[derive(Debug, Deserialize)]
struct Address {
    #[serde(default)]
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    body: String,
}

#[derive(Debug, Deserialize)]
struct AttachmentIn {
    filename: String,
    /// Base64, possibly with line breaks (Ruby's `Base64.encode64` writes them; cozy-stack's
    /// Go decoder skips them).
    content: String,
}

impl Sendmail {
    pub fn new(
        config: SmtpConfig,
        by_context: BTreeMap<String, SmtpConfig>,
        runtime: Option<Arc<crate::konnectors::Runtime>>,
    ) -> Sendmail {
        Sendmail {
            config,
            by_context,
            runtime,
        }
    }

    /// The server (and sender) of the instance at `domain`: its context's when the context has
    /// its own, else the server's.
    async fn config_for(&self, domain: &str) -> Result<&SmtpConfig, Failure> {
        if self.by_context.is_empty() || domain.is_empty() {
            return Ok(&self.config);
        }
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(Failure::transient("the jobs service is starting: the mail waits"));
        };
        let context = runtime.context_of(domain).await.map_err(Failure::transient)?;
        Ok(self.by_context.get(&context).unwrap_or(&self.config))
    }

    fn transport(c: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, Failure> {
        let builder = match c.security.as_str() {
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| Failure::permanent(format!("cannot use SMTP server {}: {e}", c.host)))?,
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| Failure::permanent(format!("cannot use SMTP server {}: {e}", c.host)))?,
            other => {
                return Err(Failure::permanent(format!(
                    "jobs.smtp.security is {other:?}: use starttls, tls or none"
                )));
            }
        };
        let mut builder = builder
            .port(c.port)
            .timeout(Some(Duration::from_secs(c.timeout_secs.max(1))));
        if !c.username.is_empty() {
            builder = builder.credentials(Credentials::new(c.username.clone(), c.password.clone()));
        }
        Ok(builder.build())
    }

    fn build(config: &SmtpConfig, mut mail: Mail) -> Result<Message, Failure> {
        match mail.mode.as_str() {
            "noreply" | "from" => {}
            other => {
                return Err(Failure::permanent(format!(
                    "mail mode {other:?} is not supported: use noreply or from"
                )));
            }
        }
        if !mail.template_name.is_empty() {
            if !mail.parts.is_empty() {
                return Err(Failure::permanent(
                    "a mail with a template_name has no parts of its own: its template makes them",
                ));
            }
            let rendered = super::templates::render(&mail.template_name, &mail.locale, &mail.template_values)
                .map_err(Failure::permanent)?;
            mail.subject = rendered.subject;
            mail.parts = vec![
                Part {
                    kind: "text/plain".into(),
                    body: rendered.text,
                },
                Part {
                    kind: "text/html".into(),
                    body: rendered.html,
                },
            ];
        }
        if mail.to.is_empty() {
            return Err(Failure::permanent(
                "the mail has no recipient: the instance has no e-mail address of its own, so name them in \"to\"",
            ));
        }
        if mail.parts.is_empty() {
            return Err(Failure::permanent(
                "the mail has no body: give parts of type text/plain or text/html",
            ));
        }
        let noreply = Address {
            name: config.noreply_name.clone(),
            email: config.noreply_address.clone(),
        };
        // The sender is the server's address: mail sent from the person's would fail SPF and
        // DKIM; their own address goes in Reply-To.
        let mut builder = Message::builder().from(mailbox(&noreply)?).subject(mail.subject);
        if let Some(reply_to) = mail.reply_to.as_ref().or(mail.from.as_ref()) {
            builder = builder.reply_to(mailbox(reply_to)?);
        }
        for to in &mail.to {
            builder = builder.to(mailbox(to)?);
        }
        let body = body_of(&mail.parts)?;
        let message = if mail.attachments.is_empty() {
            builder.multipart(body)
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for attachment in mail.attachments {
                let cleaned: String = attachment.content.chars().filter(|c| !c.is_whitespace()).collect();
                let content = base64::engine::general_purpose::STANDARD.decode(cleaned).map_err(|e| {
                    Failure::permanent(format!("attachment {} is not base64: {e}", attachment.filename))
                })?;
                let kind = mime_of(&attachment.filename);
                mixed = mixed.singlepart(Attachment::new(attachment.filename).body(content, kind));
            }
            builder.multipart(mixed)
        };
        message.map_err(|e| Failure::permanent(format!("cannot build the mail: {e}")))
    }
}

fn mailbox(address: &Address) -> Result<Mailbox, Failure> {
    let email = address
        .email
        .parse()
        .map_err(|e| Failure::permanent(format!("{:?} is not an e-mail address: {e}", address.email)))?;
    let name = (!address.name.is_empty()).then(|| address.name.clone());
    Ok(Mailbox::new(name, email))
}

/// The parts as one `multipart/alternative` (plain text first, as RFC 2046 orders them).
fn body_of(parts: &[Part]) -> Result<MultiPart, Failure> {
    let mut sorted: Vec<&Part> = parts.iter().collect();
    sorted.sort_by_key(|p| p.kind != "text/plain");
    let mut alternative = MultiPart::alternative().build();
    for part in sorted {
        let single = match part.kind.as_str() {
            "text/plain" => SinglePart::plain(part.body.clone()),
            "text/html" => SinglePart::html(part.body.clone()),
            other => {
                return Err(Failure::permanent(format!(
                    "a mail part of type {other:?}: use text/plain or text/html"
                )));
            }
        };
        alternative = alternative.singlepart(single);
    }
    Ok(alternative)
}

fn mime_of(filename: &str) -> ContentType {
    let ext = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mime = match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("txt") => "text/plain",
        Some("ics") => "text/calendar",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    };
    ContentType::parse(mime).unwrap_or(ContentType::TEXT_PLAIN)
}

#[async_trait]
impl Work for Sendmail {
    async fn run(&self, run: Run<'_>) -> Result<(), Failure> {
        let mail: Mail = serde_json::from_slice(&run.job.message)
            .map_err(|e| Failure::permanent(format!("the mail message does not read: {e}")))?;
        let config = self.config_for(&run.job.domain).await?;
        let message = Sendmail::build(config, mail)?;
        if config.host.is_empty() {
            return Err(Failure::permanent(
                "no SMTP server is configured: set [jobs.smtp] host (or COCON_JOBS__SMTP__HOST)",
            ));
        }
        let transport = Sendmail::transport(config)?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::permanent(format!("the SMTP server refused the mail: {e}"))),
            Err(e) => Err(Failure::transient(format!("cannot send the mail: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmtpConfig {
        SmtpConfig {
            noreply_address: "noreply@cocon.example".into(),
            ..SmtpConfig::default()
        }
    }

    #[test]
    fn test_mail_with_wrapped_base64_attachment_builds() {
        let mail: Mail = serde_json::from_value(serde_json::json!({
            "mode": "from",
            "to": [{"name": "Bob", "email": "bob@example.org"}],
            "reply_to": {"name": "Alice", "email": "alice@example.org"},
            "subject": "Hello",
            "parts": [{"type": "text/html", "body": "<b>hi</b>"}, {"type": "text/plain", "body": "hi"}],
            "attachments": [{"filename": "a.txt", "content": "aGVsbG8g\nd29ybGQ=\n"}]
        }))
        .unwrap();
        let text = String::from_utf8(Sendmail::build(&config(), mail).unwrap().formatted()).unwrap();
        assert!(text.contains("To: Bob <bob@example.org>"), "{text}");
        assert!(text.contains("Reply-To: Alice <alice@example.org>"), "{text}");
        assert!(text.contains("From: Cocon <noreply@cocon.example>"), "{text}");
        assert!(text.contains("filename=\"a.txt\""), "{text}");
        // The attachment's base64 decoded across its line break.
        assert!(text.contains("\r\nhello world\r\n"), "{text}");
        assert!(text.find("text/plain").unwrap() < text.find("text/html").unwrap());
    }

    #[test]
    fn test_a_contexts_smtp_keys_replace_the_servers() {
        let keys = serde_json::json!({"host": "smtp.school.test", "noreply_address": "noreply@school.test"});
        let school = config().with(keys.as_object().unwrap()).unwrap();
        assert_eq!((school.host.as_str(), school.port), ("smtp.school.test", 587));
        assert_eq!(school.noreply_address, "noreply@school.test");
        let wrong = serde_json::json!({"port": "twenty-five"});
        assert!(config().with(wrong.as_object().unwrap()).is_err());
    }

    #[test]
    fn test_bad_mails_fail_without_retry() {
        for (body, says) in [
            (
                serde_json::json!({"mode": "noreply", "subject": "s", "parts": [{"type": "text/plain", "body": "x"}]}),
                "recipient",
            ),
            (
                serde_json::json!({"mode": "campaign", "to": [{"email": "a@b.c"}]}),
                "mode",
            ),
            (
                serde_json::json!({"mode": "noreply", "to": [{"email": "not an address"}], "parts": [{"type": "text/plain", "body": "x"}]}),
                "e-mail address",
            ),
        ] {
            let mail: Mail = serde_json::from_value(body).unwrap();
            let failure = Sendmail::build(&config(), mail).unwrap_err();
            assert!(!failure.retry);
            assert!(failure.message.contains(says), "{}", failure.message);
        }
    }
}
