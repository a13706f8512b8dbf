//! Cocon's own mails to the person (an onboarding link, a passphrase reset): a `sendmail` job
//! with one of the jobs service's templates, queued as the server (a trusted caller), to the
//! address the instance was given.

use cocon_proto::auth::v1 as auth;
use cocon_proto::jobs::v1 as pb;
use serde_json::{Value, json};

use crate::ApiError;

/// Queues template `template` to the instance's address, with `values`; the job's id.
pub async fn send(
    jobs: &cocon_mesh::JobsClient,
    link: &auth::IssueOnboardingResponse,
    domain: &str,
    template: &str,
    values: Value,
) -> Result<String, ApiError> {
    let arguments = json!({
        "mode": "noreply",
        "to": [{"email": link.email}],
        "locale": if link.locale.is_empty() { "en" } else { link.locale.as_str() },
        "template_name": template,
        "template_values": values,
    });
    let answer = jobs
        .clone()
        .push_job(pb::PushJobRequest {
            scope: Some(pb::Scope {
                instance: link.instance_id.clone(),
                ticket: link.instance_ticket.clone(),
                trusted: true,
                domain: domain.to_string(),
            }),
            worker: "sendmail".into(),
            arguments: arguments.to_string().into_bytes().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer.job.map(|j| j.id).unwrap_or_default())
}
