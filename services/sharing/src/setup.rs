//! Setting a sharing up between two hosts, as cozy-stack does it (`cozy-protocols.md` §1.6):
//! the owner creates it and sends each recipient whose Cozy it knows a request (`PUT
//! /sharings/:id` on the recipient's host); a recipient it does not know gives their address on
//! the discovery page; the recipient's person consents; the recipient's host then makes an
//! OAuth client for the owner and answers (`POST /sharings/:id/answer` on the owner), and the
//! owner makes one for the recipient in return. Both sides then hold tokens scoped to the
//! sharing alone.

use cocon_common::cozy::doctype;
use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::sharing::v1 as pb;
use reqwest::Method;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::doc::{Credentials, Group, Member, Rule, Sharing, now, status};
use crate::error::{Result, SharingError};
use crate::rules;
use crate::service::SharingService;

/// The recipients a body names: contacts, and groups with their contacts.
#[derive(Default)]
pub(crate) struct Recipients {
    pub members: Vec<Member>,
    pub groups: Vec<(Group, Vec<Member>)>,
}

/// Most members a sharing has, as cozy-stack's default.
pub(crate) const MAX_MEMBERS: usize = 90;

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `data.attributes` of a JSON-API body, or the body itself.
fn attributes(body: &Value) -> &Value {
    match body.get("data").and_then(|d| d.get("attributes")) {
        Some(a) => a,
        None => body,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A contact as a member: its name, primary e-mail and Cozy.
pub(crate) fn member_of_contact(contact: &Value, read_only: bool) -> Member {
    let primary = |list: &str, field: &str| -> String {
        let items = contact.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
        let chosen = items
            .iter()
            .find(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
            .or(items.first());
        chosen.map(|i| str_of(i, field).to_string()).unwrap_or_default()
    };
    let mut name = str_of(contact, "fullname").to_string();
    if name.is_empty() {
        let n = contact.get("name").cloned().unwrap_or_default();
        name = format!("{} {}", str_of(&n, "givenName"), str_of(&n, "familyName"))
            .trim()
            .to_string();
    }
    let cozy = primary("cozy", "url");
    Member {
        status: status::MAIL_NOT_SENT.into(),
        name,
        email: primary("email", "address"),
        instance: crate::peer::normalise_origin(&cozy).unwrap_or_default(),
        read_only,
        ..Default::default()
    }
}

impl SharingService {
    /// `POST /sharings/`: the owner's side. Members whose Cozy is known get the request at once.
    pub(crate) async fn create(&self, req: pb::CreateSharingRequest) -> Result<Sharing> {
        let instance = self.instance(req.instance, true)?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let attrs = attributes(&body);
        let mut rules: Vec<Rule> = serde_json::from_value(attrs.get("rules").cloned().unwrap_or(json!([])))
            .map_err(|e| SharingError::BadRequest(format!("rules: {e}")))?;
        rules::check(&mut rules)?;
        self.mark_single_files(&instance.id, &mut rules).await?;
        let owner = Member {
            status: status::OWNER.into(),
            public_name: req.public_name.clone(),
            email: req.email.clone(),
            instance: instance.origin.clone(),
            ..Default::default()
        };
        let recipients = self.members_of_body(&instance, &body).await?;
        let at = now();
        let mut sharing = Sharing {
            id: uuid::Uuid::now_v7().simple().to_string(),
            active: true,
            owner: true,
            open_sharing: attrs.get("open_sharing").and_then(Value::as_bool).unwrap_or(false),
            description: str_of(attrs, "description").chars().take(1000).collect(),
            app_slug: req.app_slug.clone(),
            preview_path: str_of(attrs, "preview_path").to_string(),
            created_at: at.clone(),
            updated_at: at,
            rules,
            members: vec![owner],
            ..Default::default()
        };
        let invite = crate::members::take_recipients(&mut sharing, recipients, 0)?;
        if invite.is_empty() {
            return Err(SharingError::BadRequest(
                "a sharing needs at least one recipient (a contact, or a group with contacts)".into(),
            ));
        }
        {
            let _guard = self.lock(&instance.id).await;
            self.save(&instance.id, &[(&sharing, "created")]).await?;
        }
        tracing::info!(sharing = %sharing.id, members = sharing.members.len() - 1, "sharing created");
        Ok(self.invite(&instance, sharing, &invite).await)
    }

    /// The recipients a JSON-API body names (`recipients`, `read_only_recipients`): contacts,
    /// and contact groups with the contacts in them.
    pub(crate) async fn members_of_body(&self, instance: &pb::Instance, body: &Value) -> Result<Recipients> {
        let mut recipients = Recipients::default();
        let relationships = body
            .get("data")
            .and_then(|d| d.get("relationships"))
            .cloned()
            .unwrap_or_default();
        for (key, read_only) in [("recipients", false), ("read_only_recipients", true)] {
            let list = relationships
                .get(key)
                .and_then(|r| r.get("data"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in list {
                let (kind, id) = (str_of(&item, "type"), str_of(&item, "id"));
                if id.is_empty() {
                    return Err(SharingError::BadRequest(format!("{key}: each names an id")));
                }
                match kind {
                    doctype::CONTACTS => {
                        let contact = self.document(instance, doctype::CONTACTS, id).await?;
                        recipients.members.push(member_of_contact(&contact, read_only));
                    }
                    doctype::CONTACTS_GROUPS => recipients.groups.push(self.group(instance, id, read_only).await?),
                    _ => {
                        return Err(SharingError::BadRequest(format!(
                            "{key} are contacts or groups: {{\"type\": \"io.cozy.contacts\" or \"io.cozy.contacts.groups\", \"id\": ...}}"
                        )));
                    }
                }
            }
        }
        Ok(recipients)
    }

    /// Sends members `indexes` of an owner's sharing the request on their Cozy, or when it is
    /// not known the invitation mail; answers the sharing as stored after. A member whose
    /// request or mail did not go stays `mail-not-sent` (it can be sent again).
    pub(crate) async fn invite(&self, instance: &pb::Instance, mut sharing: Sharing, indexes: &[usize]) -> Sharing {
        for &index in indexes {
            if sharing.members[index].instance.is_empty() {
                match self.mail_invitation(instance, &sharing, index).await {
                    Ok(sent) => sharing = sent,
                    Err(err) => {
                        tracing::warn!(sharing = %sharing.id, member = index, error = %err, "the invitation mail was not queued")
                    }
                }
                continue;
            }
            match self.send_request(instance, &sharing.id, index).await {
                Ok(sent) => sharing = sent,
                Err(err) => {
                    tracing::warn!(sharing = %sharing.id, member = index, error = %err, "the sharing request did not reach the member's Cozy")
                }
            }
        }
        sharing
    }

    /// A contact (or a group) of the instance, read with the caller's ticket.
    pub(crate) async fn document(&self, instance: &pb::Instance, doctype: &str, id: &str) -> Result<Value> {
        let found = self
            .clients()?
            .documents
            .clone()
            .get_document(docs_pb::GetDocumentRequest {
                scope: Some(docs_pb::Scope {
                    instance: instance.id.clone(),
                    doctype: doctype.into(),
                    ticket: instance.ticket.clone(),
                    read_only: Vec::new(),
                }),
                id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => SharingError::BadRequest(format!("no {doctype} {id:?}")),
                _ => status.into(),
            })?;
        serde_json::from_slice(&found.into_inner().json).map_err(|e| SharingError::Corrupt(e.to_string()))
    }

    /// What the owner sends member `index`: the sharing as the recipient keeps it (not active,
    /// not owner, rule values by id turned into the recipient's ids, `local` rules left out, the
    /// other members without their Cozy and name) with the invitation's state.
    fn request_for(sharing: &Sharing, index: usize) -> Value {
        let creds = sharing.credentials_of(index).cloned().unwrap_or_default();
        let rules: Vec<Rule> = sharing
            .rules
            .iter()
            .filter(|r| !r.local)
            .map(|r| {
                let mut r = r.clone();
                if matches!(r.selector.as_str(), "" | "id" | "_id" | "organization_id") {
                    r.values = r.values.iter().map(|v| rules::xor_id(v, &creds.xor_key)).collect();
                } else if r.selector == "referenced_by" {
                    r.values = r
                        .values
                        .iter()
                        .map(|v| match v.split_once('/') {
                            Some((d, id)) => format!("{d}/{}", rules::xor_id(id, &creds.xor_key)),
                            None => v.clone(),
                        })
                        .collect();
                }
                r
            })
            .collect();
        let members: Vec<Member> = sharing
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut m = m.clone();
                if i != 0 && i != index {
                    m.instance.clear();
                    m.name.clear();
                }
                m
            })
            .collect();
        let doc = Sharing {
            active: false,
            owner: false,
            rules,
            members,
            credentials: vec![Credentials {
                state: creds.state,
                ..Default::default()
            }],
            ..sharing.clone()
        };
        let mut attributes = serde_json::to_value(&doc).expect("a sharing serialises");
        if let Some(map) = attributes.as_object_mut() {
            map.remove("_id");
        }
        json!({"data": {"type": doctype::SHARINGS, "id": sharing.id, "attributes": attributes}})
    }

    /// Sends member `index` the request on its Cozy; the member is then `pending`. Answers the
    /// sharing as stored after.
    async fn send_request(&self, instance: &pb::Instance, id: &str, index: usize) -> Result<Sharing> {
        let sharing = self.must_load(&instance.id, id).await?;
        let member = sharing
            .members
            .get(index)
            .ok_or_else(|| SharingError::NotFound(format!("no member {index}")))?;
        let mut body = Self::request_for(&sharing, index);
        if let Some(rule) = crate::files_rule::files_rule(&sharing) {
            match self.count_files(&instance.id, rule).await {
                Ok(n) => body["data"]["attributes"]["initial_number_of_files_to_sync"] = n.into(),
                Err(err) => {
                    tracing::warn!(sharing = %id, error = %err, "the shared folder's files could not be counted")
                }
            }
        }
        let path = format!("/sharings/{id}");
        self.inner
            .peers
            .call(Method::PUT, &member.instance, &path, None, &body)
            .await?;
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, id).await?;
        if let Some(m) = sharing.members.get_mut(index)
            && m.status == status::MAIL_NOT_SENT
        {
            m.status = status::PENDING.into();
            sharing.updated_at = now();
            self.save(&instance.id, &[(&sharing, "updated")]).await?;
        }
        Ok(sharing)
    }

    /// Mails member `index` (whose Cozy is not known) the discovery link, through the jobs
    /// service's `sendmail`; the member is then `pending`.
    async fn mail_invitation(&self, instance: &pb::Instance, sharing: &Sharing, index: usize) -> Result<Sharing> {
        let member = &sharing.members[index];
        if member.email.is_empty() {
            return Err(SharingError::BadRequest(
                "this recipient has neither a Cozy nor an e-mail address in the contact".into(),
            ));
        }
        let owner = &sharing.members[0];
        let who = if owner.public_name.is_empty() {
            &owner.instance
        } else {
            &owner.public_name
        };
        let creds = sharing.credentials_of(index).cloned().unwrap_or_default();
        let state: String = url::form_urlencoded::byte_serialize(creds.state.as_bytes()).collect();
        let link = format!("{}/sharings/{}/discovery?state={state}", instance.origin, sharing.id);
        let what = if sharing.description.is_empty() {
            "something".to_string()
        } else {
            format!("“{}”", sharing.description)
        };
        let text = format!(
            "Hello {name},\n\n{who} wants to share {what} with you.\n\nTo receive it in your Cozy, open this link and give your Cozy's address:\n{link}\n",
            name = if member.name.is_empty() {
                &member.email
            } else {
                &member.name
            },
        );
        let html = format!(
            "<p>{who} wants to share {what} with you.</p><p><a href=\"{link}\">Receive it in your Cozy</a></p>",
            who = html_escape(who),
            what = html_escape(&what),
            link = html_escape(&link),
        );
        let mut message = json!({
            "mode": "from",
            "to": [{"name": member.name, "email": member.email}],
            "subject": format!("{who} wants to share {what} with you"),
            "parts": [{"type": "text/plain", "body": text}, {"type": "text/html", "body": html}],
        });
        if !owner.email.is_empty() {
            message["reply_to"] = json!({"name": owner.public_name, "email": owner.email});
        }
        self.clients()?
            .jobs
            .clone()
            .push_job(cocon_proto::jobs::v1::PushJobRequest {
                scope: Some(cocon_proto::jobs::v1::Scope {
                    instance: instance.id.clone(),
                    ticket: instance.ticket.clone(),
                    trusted: true,
                    domain: instance.domain.clone(),
                }),
                worker: "sendmail".into(),
                arguments: message.to_string().into_bytes().into(),
                ..Default::default()
            })
            .await?;
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &sharing.id).await?;
        if let Some(m) = sharing.members.get_mut(index)
            && m.status == status::MAIL_NOT_SENT
        {
            m.status = status::PENDING.into();
            sharing.updated_at = now();
            self.save(&instance.id, &[(&sharing, "updated")]).await?;
        }
        Ok(sharing)
    }

    /// `PUT /sharings/:id` on a recipient: keeps the request until the person answers it.
    pub(crate) async fn receive_request(&self, req: pb::ReceiveRequestRequest) -> Result<Sharing> {
        let instance = self.instance(req.instance, false)?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let mut sharing: Sharing = serde_json::from_value(attributes(&body).clone())
            .map_err(|e| SharingError::BadRequest(format!("not a sharing: {e}")))?;
        sharing.id = req.id.clone();
        if sharing.id.is_empty() || sharing.id.len() > 64 {
            return Err(SharingError::BadRequest("a sharing id has 1 to 64 characters".into()));
        }
        let owner = sharing.members.first().cloned().unwrap_or_default();
        if owner.status != status::OWNER || owner.instance.is_empty() {
            return Err(SharingError::BadRequest(
                "the first member must be the owner, with its Cozy".into(),
            ));
        }
        crate::peer::normalise_origin(&owner.instance)?;
        rules::check(&mut sharing.rules)?;
        let state = sharing.credentials.first().map(|c| c.state.clone()).unwrap_or_default();
        if state.is_empty() {
            return Err(SharingError::BadRequest("the request carries no state".into()));
        }
        sharing.active = false;
        sharing.owner = false;
        sharing.initial_sync = false;
        sharing.credentials = vec![Credentials {
            state,
            ..Default::default()
        }];
        let _guard = self.lock(&instance.id).await;
        // (No token comes with a request: its secrets stay sealed.)
        let all = self.all_shown(&instance.id).await?;
        if let Some(existing) = all.iter().find(|s| s.id == sharing.id) {
            if existing.owner {
                return Err(SharingError::BadRequest("this Cozy owns that sharing".into()));
            }
            if existing.active {
                return Err(SharingError::Conflict("the sharing was accepted already".into()));
            }
        }
        let pending = all
            .iter()
            .filter(|s| !s.owner && !s.active && s.id != sharing.id)
            .count();
        if pending >= self.inner.config.max_pending_requests {
            return Err(SharingError::TooMany(format!(
                "this Cozy already holds {pending} sharing requests nobody answered"
            )));
        }
        self.save(&instance.id, &[(&sharing, "created")]).await?;
        drop(_guard);
        tracing::info!(sharing = %sharing.id, from = %owner.instance, "sharing request received");
        if let Err(err) = self.notify_request(&instance, &sharing).await {
            // The request is kept: the person also finds it in their sharings.
            tracing::warn!(sharing = %sharing.id, error = %err, "the person could not be told of a sharing request");
        }
        Ok(sharing)
    }

    /// Tells the person a sharing waits for their answer, with the link to the consent page.
    async fn notify_request(&self, instance: &pb::Instance, sharing: &Sharing) -> Result<()> {
        let owner = &sharing.members[0];
        let who = if owner.public_name.is_empty() {
            &owner.instance
        } else {
            &owner.public_name
        };
        let state = sharing
            .credentials
            .first()
            .map(|c| c.state.as_str())
            .unwrap_or_default();
        let state: String = url::form_urlencoded::byte_serialize(state.as_bytes()).collect();
        let link = format!(
            "{}/auth/authorize/sharing?sharing_id={}&state={state}",
            instance.origin, sharing.id
        );
        let what = if sharing.description.is_empty() {
            "something".to_string()
        } else {
            format!("“{}”", sharing.description)
        };
        let attributes = json!({
            "category": "sharing-request",
            "title": format!("{who} wants to share {what} with you"),
            "message": format!("Open {link} to accept it."),
            "data": {"redirectLink": link},
        });
        let ticket = self
            .inner
            .mesh_key
            .issue(&instance.id, cocon_common::time::now_secs() + 300);
        self.clients()?
            .notifications
            .clone()
            .create(cocon_proto::notifications::v1::CreateRequest {
                scope: Some(cocon_proto::notifications::v1::Scope {
                    instance: instance.id.clone(),
                    ticket,
                    domain: instance.domain.clone(),
                }),
                originator: "stack".into(),
                slug: "sharing".into(),
                attributes: attributes.to_string().into_bytes().into(),
            })
            .await?;
        Ok(())
    }

    /// The request a recipient's person is asked about, if `state` is its state.
    pub(crate) async fn request(&self, instance: &str, id: &str, state: &str) -> Result<Sharing> {
        let sharing = self.must_load(instance, id).await?;
        let stored = sharing
            .credentials
            .first()
            .map(|c| c.state.as_str())
            .unwrap_or_default();
        if sharing.owner || !same_secret(stored, state) {
            return Err(SharingError::NotFound(format!(
                "no sharing request {id:?} with this state"
            )));
        }
        Ok(sharing)
    }

    /// The recipient's person accepted: a client for the owner, the answer, the owner's
    /// credentials kept. Answers where the person goes next.
    pub(crate) async fn accept(&self, req: pb::ConsentRequest) -> Result<String> {
        let instance = self.instance(req.instance, false)?;
        let sharing = self.request(&instance.id, &req.id, &req.state).await?;
        if sharing.active {
            return Ok(format!("{}/", instance.origin));
        }
        let owner = sharing.members[0].clone();
        let read_only = sharing.read_only_rules()
            || sharing
                .members
                .iter()
                .any(|m| m.instance == instance.origin && m.read_only);
        let issued = self
            .issue_client(
                &instance.domain,
                &sharing.id,
                &owner.instance,
                &owner.public_name,
                false,
            )
            .await?;
        let body = json!({"data": {"type": "io.cozy.sharings.answer", "id": sharing.id, "attributes": {
            "state": req.state,
            "public_name": req.public_name,
            "client": issued.client,
            "access_token": issued.access_token,
        }}});
        // The owner may send as soon as it has the answer: its calls are taken from now on.
        {
            let _guard = self.lock(&instance.id).await;
            let mut sharing = self.must_load(&instance.id, &req.id).await?;
            if let Some(c) = sharing.credentials.first_mut() {
                c.inbound_client_id = issued.client_id.clone();
            }
            self.save(&instance.id, &[(&sharing, "updated")]).await?;
        }
        let path = format!("/sharings/{}/answer", sharing.id);
        let answer = self
            .inner
            .peers
            .call(Method::POST, &owner.instance, &path, None, &body)
            .await?;
        let attrs = attributes(&answer);
        let xor_key = str_of(attrs, "xor_key").to_string();
        if xor_key.is_empty() || attrs.get("client").is_none() || attrs.get("access_token").is_none() {
            return Err(SharingError::Peer(
                "the owner's Cozy answered without credentials".into(),
            ));
        }
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        sharing.credentials = vec![Credentials {
            state: req.state.clone(),
            client: attrs.get("client").cloned(),
            access_token: attrs.get("access_token").cloned(),
            xor_key,
            inbound_client_id: issued.client_id,
        }];
        for m in sharing.members.iter_mut().skip(1) {
            if !m.instance.is_empty()
                && [status::MAIL_NOT_SENT, status::PENDING, status::SEEN].contains(&m.status.as_str())
            {
                m.status = status::READY.into();
            }
        }
        sharing.active = true;
        // The owner's files come now: apps show their progress until the owner says it is over.
        sharing.initial_sync = crate::files_rule::files_rule(&sharing).is_some();
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        tracing::info!(sharing = %sharing.id, read_only, "sharing accepted");
        // A shared folder shows under "Shared with me" at once, even while it is empty.
        if let Err(err) = self.ensure_shared_folder(&instance.id, &sharing).await {
            tracing::warn!(sharing = %sharing.id, error = %err, "the shared folder could not be made yet");
        }
        self.start_senders(&instance.id, &sharing, None);
        Ok(format!("{}/?sharing={}", instance.origin, sharing.id))
    }

    /// `POST /sharings/:id/answer` on the owner: the recipient of the state is ready; a client
    /// for it in return, read-only when it or the rules are.
    pub(crate) async fn receive_answer(&self, req: pb::ReceiveAnswerRequest) -> Result<Value> {
        let instance = self.instance(req.instance, false)?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let attrs = attributes(&body).clone();
        let state = str_of(&attrs, "state");
        let (client, access_token) = match (attrs.get("client"), attrs.get("access_token")) {
            (Some(c), Some(t)) if c.is_object() && t.is_object() => (c.clone(), t.clone()),
            _ => {
                return Err(SharingError::BadRequest(
                    "an answer carries a client and an access_token".into(),
                ));
            }
        };
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.owner {
            return Err(SharingError::BadRequest("this Cozy does not own that sharing".into()));
        }
        let index = (1..sharing.members.len())
            .find(|&i| sharing.credentials_of(i).is_some_and(|c| same_secret(&c.state, state)))
            .ok_or_else(|| SharingError::NotFound("no member has this state".into()))?;
        let member = sharing.members[index].clone();
        if member.status == status::REVOKED {
            return Err(SharingError::BadRequest("this member was revoked".into()));
        }
        if member.status == status::READY {
            return Err(SharingError::Conflict("this member answered already".into()));
        }
        if member.instance.is_empty() {
            return Err(SharingError::BadRequest(
                "this member has no Cozy yet: use the invitation link".into(),
            ));
        }
        let read_only = member.read_only || sharing.read_only_rules();
        let public_name = str_of(&attrs, "public_name").to_string();
        let issued = self
            .issue_client(&instance.domain, &sharing.id, &member.instance, &public_name, read_only)
            .await?;
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        let xor_key = {
            let creds = sharing
                .credentials
                .get_mut(index - 1)
                .ok_or_else(|| SharingError::Corrupt("credentials missing".into()))?;
            creds.client = Some(client);
            creds.access_token = Some(access_token);
            creds.inbound_client_id = issued.client_id.clone();
            creds.xor_key.clone()
        };
        let m = &mut sharing.members[index];
        m.status = status::READY.into();
        if !public_name.is_empty() {
            m.public_name = public_name;
        }
        sharing.active = true;
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        tracing::info!(sharing = %sharing.id, member = index, read_only, "sharing answered");
        self.start_senders(&instance.id, &sharing, None);
        // The members see the new one in (cozy-stack tells them once the new one is set up).
        self.tell_members_later(&instance.id, &sharing.id);
        Ok(
            json!({"data": {"type": "io.cozy.sharings.answer", "id": sharing.id, "attributes": {
                "xor_key": xor_key,
                "client": issued.client,
                "access_token": issued.access_token,
            }}}),
        )
    }

    /// `GET|POST /sharings/:id/discovery` on the owner: the page's data, or, given the
    /// recipient's address, the request sent there and the consent page to go to.
    pub(crate) async fn discover(&self, req: pb::DiscoverRequest) -> Result<pb::DiscoverAnswer> {
        let instance = self.instance(req.instance, false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        let index = (1..sharing.members.len())
            .find(|&i| {
                sharing
                    .credentials_of(i)
                    .is_some_and(|c| same_secret(&c.state, &req.state))
            })
            .filter(|_| sharing.owner)
            .ok_or_else(|| SharingError::NotFound("this invitation link is not valid (any more)".into()))?;
        let member = sharing.members[index].clone();
        if member.status == status::REVOKED {
            return Err(SharingError::NotFound("this invitation was revoked".into()));
        }
        let mut answer = pb::DiscoverAnswer {
            description: sharing.description.clone(),
            owner_name: sharing.members[0].public_name.clone(),
            email: member.email.clone(),
            ..Default::default()
        };
        let url = if req.url.is_empty() {
            member.instance.clone()
        } else {
            req.url.clone()
        };
        if url.is_empty() {
            return Ok(answer);
        }
        let origin = crate::peer::normalise_origin(&url)?;
        if member.instance != origin {
            let _guard = self.lock(&instance.id).await;
            let mut sharing = self.must_load(&instance.id, &req.id).await?;
            sharing.members[index].instance = origin.clone();
            sharing.updated_at = now();
            self.save(&instance.id, &[(&sharing, "updated")]).await?;
        }
        if member.status != status::READY {
            self.send_request(&instance, &req.id, index).await?;
        }
        let state: String = url::form_urlencoded::byte_serialize(req.state.as_bytes()).collect();
        answer.redirect = format!("{origin}/auth/authorize/sharing?sharing_id={}&state={state}", req.id);
        Ok(answer)
    }

    /// A client on this instance for the other side of a sharing, with its tokens.
    pub(crate) async fn issue_client(
        &self,
        domain: &str,
        sharing_id: &str,
        peer_origin: &str,
        peer_name: &str,
        read_only: bool,
    ) -> Result<Issued> {
        let metadata = json!({
            "redirect_uris": [format!("{peer_origin}/sharings/answer")],
            "client_name": format!("Sharing {}", if peer_name.is_empty() { peer_origin } else { peer_name }),
            "client_kind": "sharing",
            "client_uri": peer_origin,
            "software_id": "github.com/cozy/cozy-stack",
            "software_version": env!("CARGO_PKG_VERSION"),
        });
        let verb = if read_only { "GET" } else { "ALL" };
        let answer = self
            .clients()?
            .auth
            .clone()
            .issue_sharing_client(auth_pb::IssueSharingClientRequest {
                domain: domain.to_string(),
                metadata_json: metadata.to_string(),
                scope: format!("{}:{verb}:{sharing_id}", doctype::SHARINGS),
            })
            .await?
            .into_inner();
        let client: Value =
            serde_json::from_str(&answer.client_json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
        let tokens = answer.tokens.unwrap_or_default();
        Ok(Issued {
            client_id: str_of(&client, "client_id").to_string(),
            client,
            access_token: json!({
                "token_type": "bearer",
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "scope": tokens.scope,
            }),
        })
    }
}

pub(crate) struct Issued {
    pub client_id: String,
    pub client: Value,
    pub access_token: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_contact_becomes_a_member() {
        let contact = json!({
            "fullname": "Bob Martin",
            "email": [{"address": "old@example.org"}, {"address": "bob@example.org", "primary": true}],
            "cozy": [{"url": "bob.example"}],
        });
        let m = member_of_contact(&contact, true);
        assert_eq!(m.name, "Bob Martin");
        assert_eq!(m.email, "bob@example.org");
        assert_eq!(m.instance, "https://bob.example");
        assert_eq!(m.status, status::MAIL_NOT_SENT);
        assert!(m.read_only);
        let named = member_of_contact(&json!({"name": {"givenName": "Jane", "familyName": "Doe"}}), false);
        assert_eq!(named.name, "Jane Doe");
        assert!(named.instance.is_empty());
    }

    #[test]
    fn test_the_request_hides_other_members_and_turns_ids() {
        let key = rules::new_xor_key();
        let sharing = Sharing {
            id: "s".into(),
            owner: true,
            active: true,
            rules: vec![
                Rule {
                    title: "a note".into(),
                    doctype: "io.cozy.notes".into(),
                    values: vec!["0123abcd".into()],
                    ..Default::default()
                },
                Rule {
                    title: "preview".into(),
                    doctype: "io.cozy.notes".into(),
                    values: vec!["x".into()],
                    local: true,
                    ..Default::default()
                },
            ],
            members: vec![
                Member {
                    status: status::OWNER.into(),
                    instance: "https://alice.example".into(),
                    ..Default::default()
                },
                Member {
                    status: status::PENDING.into(),
                    name: "Jane".into(),
                    instance: "https://jane.example".into(),
                    ..Default::default()
                },
                Member {
                    status: status::MAIL_NOT_SENT.into(),
                    name: "Bob".into(),
                    instance: "https://bob.example".into(),
                    ..Default::default()
                },
            ],
            credentials: vec![
                Credentials {
                    state: "jane-state".into(),
                    xor_key: rules::new_xor_key(),
                    ..Default::default()
                },
                Credentials {
                    state: "bob-state".into(),
                    xor_key: key.clone(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let req = SharingService::request_for(&sharing, 2);
        let attrs = &req["data"]["attributes"];
        assert!(attrs.get("owner").is_none() && attrs.get("active").is_none());
        assert_eq!(attrs["rules"].as_array().unwrap().len(), 1, "local rules stay home");
        assert_eq!(attrs["rules"][0]["values"][0], rules::xor_id("0123abcd", &key));
        assert_eq!(attrs["members"][1]["instance"], json!(null), "{attrs}");
        assert_eq!(attrs["members"][2]["instance"], "https://bob.example");
        assert_eq!(attrs["credentials"], json!([{"state": "bob-state"}]));
        assert!(!req.to_string().contains("jane-state"));
    }
}
