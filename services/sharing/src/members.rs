//! Members added to a sharing after its creation, and every member's list kept in step
//! (`cozy-protocols.md` §1.5): the owner adds contacts (`POST /sharings/:id/recipients`), or a
//! read-write recipient of an `open_sharing` sharing does, through the owner's host (`POST
//! /sharings/:id/recipients/delegated`); the owner invites them as at the creation, and pushes
//! the members as they now are to each recipient that is in (`PUT /sharings/:id/recipients`).

use std::collections::BTreeMap;

use cocon_proto::sharing::v1 as pb;
use reqwest::Method;
use serde_json::{Value, json};

use crate::doc::{Credentials, Member, Sharing, now, status};
use crate::error::{Result, SharingError};
use crate::revoke::my_member;
use crate::rules;
use crate::service::SharingService;
use crate::setup::{MAX_MEMBERS, Recipients};

/// Longest name or address taken from another host for a member.
const MAX_FIELD: usize = 320;

/// Whether two members are the same person: the same e-mail address, or for members without
/// one, the same Cozy.
pub(crate) fn same_person(a: &Member, b: &Member) -> bool {
    match a.email.is_empty() {
        false => a.email.eq_ignore_ascii_case(&b.email),
        true => !a.instance.is_empty() && a.instance == b.instance,
    }
}

/// Adds what a body names to an owner's sharing, for member `added_by`: its contacts, then its
/// groups. Answers the indexes to invite.
pub(crate) fn take_recipients(sharing: &mut Sharing, recipients: Recipients, added_by: usize) -> Result<Vec<usize>> {
    let mut invite = add_members(sharing, recipients.members)?;
    for (group, members) in recipients.groups {
        invite.extend(crate::groups::add_group(sharing, group, members, added_by)?);
    }
    invite.sort_unstable();
    invite.dedup();
    Ok(invite)
}

/// Adds `new` to an owner's sharing: a person already in stays as they are; one revoked or
/// whose invitation is unanswered is invited again (new state and key); the others are
/// appended. Answers the indexes to invite.
pub(crate) fn add_members(sharing: &mut Sharing, new: Vec<Member>) -> Result<Vec<usize>> {
    let mut invite = Vec::new();
    for member in new {
        let fresh = fresh_credentials();
        let known = (1..sharing.members.len()).find(|&i| same_person(&member, &sharing.members[i]));
        match known {
            Some(i) if sharing.members[i].status == status::READY => {
                // In through a group until now: in on their own too.
                sharing.members[i].only_in_groups = false;
                continue;
            }
            Some(i) => {
                let groups = std::mem::take(&mut sharing.members[i].groups);
                sharing.members[i] = Member { groups, ..member };
                sharing.credentials[i - 1] = fresh;
                invite.push(i);
            }
            None => {
                sharing.members.push(member);
                sharing.credentials.push(fresh);
                invite.push(sharing.members.len() - 1);
            }
        }
        if sharing.members.len() > MAX_MEMBERS {
            return Err(SharingError::BadRequest(format!(
                "a sharing has at most {MAX_MEMBERS} members"
            )));
        }
    }
    Ok(invite)
}

/// A fresh invitation: a new state and key.
pub(crate) fn fresh_credentials() -> Credentials {
    Credentials {
        state: rules::new_state(),
        xor_key: rules::new_xor_key(),
        ..Default::default()
    }
}

/// The members as the owner tells the recipients: no one's Cozy but the owner's, nor the
/// names the owner gave them.
fn members_for_recipients(sharing: &Sharing) -> Vec<Value> {
    sharing
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut shown = json!({"status": m.status, "public_name": m.public_name, "email": m.email,
                                   "read_only": m.read_only, "only_in_groups": m.only_in_groups,
                                   "groups": m.groups});
            if i == 0 {
                shown["instance"] = json!(m.instance);
            }
            shown
        })
        .collect()
}

/// A member another host sends, its fields checked.
fn member_from_peer(value: &Value) -> Result<Member> {
    let text = |key: &str| -> Result<String> {
        let v = value.get(key).and_then(Value::as_str).unwrap_or_default().trim();
        if v.len() > MAX_FIELD {
            return Err(SharingError::BadRequest(format!("a member's {key} is too long")));
        }
        Ok(v.to_string())
    };
    let instance = match text("instance")? {
        i if i.is_empty() => String::new(),
        i => crate::peer::normalise_origin(&i)?,
    };
    Ok(Member {
        status: status::MAIL_NOT_SENT.into(),
        name: text("name")?,
        email: text("email")?,
        instance,
        read_only: value.get("read_only").and_then(Value::as_bool).unwrap_or(false),
        ..Default::default()
    })
}

impl SharingService {
    /// `POST /sharings/:id/recipients`, by an app of this instance.
    pub(crate) async fn add_recipients(&self, req: pb::AddRecipientsRequest) -> Result<Sharing> {
        let instance = self.instance(req.instance, true)?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let new = self.members_of_body(&instance, &body).await?;
        if new.members.is_empty() && new.groups.is_empty() {
            return Err(SharingError::BadRequest(
                "name the contacts to add: data.relationships.recipients (or read_only_recipients)".into(),
            ));
        }
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.active {
            return Err(SharingError::BadRequest("this sharing has ended".into()));
        }
        if !sharing.owner {
            // The owner's host gets the groups' contacts as contacts (it cannot read the groups).
            let mut members = new.members;
            members.extend(new.groups.into_iter().flat_map(|(_, m)| m));
            self.delegate(&instance, &sharing, &members).await?;
            return self.must_load(&instance.id, &req.id).await;
        }
        let (sharing, invite) = self.store_members(&instance.id, &req.id, new, 0).await?;
        tracing::info!(sharing = %sharing.id, added = invite.len(), "recipients added");
        let sharing = self.invite(&instance, sharing, &invite).await;
        // The members already in learn of the newcomers in the background: a member's host
        // that is down does not hold the app's call.
        self.tell_members_later(&instance.id, &sharing.id);
        Ok(sharing)
    }

    /// [`add_members`] on the owner's sharing as stored: answers it after, with the members to
    /// invite.
    async fn store_members(
        &self,
        instance: &str,
        id: &str,
        new: Recipients,
        added_by: usize,
    ) -> Result<(Sharing, Vec<usize>)> {
        let _guard = self.lock(instance).await;
        let mut sharing = self.must_load(instance, id).await?;
        let invite = take_recipients(&mut sharing, new, added_by)?;
        sharing.updated_at = now();
        self.save(instance, &[(&sharing, "updated")]).await?;
        Ok((sharing, invite))
    }

    /// A recipient of an open sharing asks the owner's host to invite `new`.
    async fn delegate(&self, instance: &pb::Instance, sharing: &Sharing, new: &[Member]) -> Result<()> {
        let me = my_member(sharing, &instance.origin);
        if !sharing.open_sharing || me.is_none_or(|m| sharing.members[m].read_only) || sharing.read_only_rules() {
            return Err(SharingError::Denied(
                "only the owner adds recipients to this sharing (it is not open to its read-write members)".into(),
            ));
        }
        let members: Vec<Value> = new
            .iter()
            .map(|m| {
                json!({"status": m.status, "name": m.name, "email": m.email, "instance": m.instance,
                            "read_only": m.read_only})
            })
            .collect();
        let body = json!({"data": {"type": cocon_common::cozy::doctype::SHARINGS, "id": sharing.id,
                                   "relationships": {"recipients": {"data": members}}}});
        let path = format!("/sharings/{}/recipients/delegated", sharing.id);
        self.call_peer(&instance.id, sharing, 0, Method::POST, &path, &body)
            .await?;
        Ok(())
    }

    /// `POST /sharings/:id/recipients/delegated` on the owner, by a read-write member's host.
    pub(crate) async fn delegated_recipients(&self, req: pb::PeerRequest) -> Result<Value> {
        let mut instance = self.instance(req.instance.clone(), false)?;
        // The invitation mails go through the jobs service, as this instance.
        instance.ticket = self
            .inner
            .mesh_key
            .issue(&instance.id, cocon_common::time::now_secs() + 300);
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.owner || !sharing.active {
            return Err(SharingError::Denied(
                "this Cozy does not own that sharing, or it ended".into(),
            ));
        }
        let caller = Self::caller_member(&sharing, &req.client_id)?;
        if !sharing.open_sharing || sharing.members[caller].read_only || sharing.read_only_rules() {
            return Err(SharingError::Denied(
                "only the owner adds recipients to this sharing (it is not open to its read-write members)".into(),
            ));
        }
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let listed = body
            .pointer("/data/relationships/recipients/data")
            .and_then(Value::as_array)
            .ok_or_else(|| SharingError::BadRequest("the members to add: data.relationships.recipients.data".into()))?;
        let new = listed.iter().map(member_from_peer).collect::<Result<Vec<_>>>()?;
        if new.iter().any(|m| m.email.is_empty() && m.instance.is_empty()) {
            return Err(SharingError::BadRequest(
                "each member to add has an e-mail address or a Cozy".into(),
            ));
        }
        let recipients = Recipients {
            members: new,
            groups: Vec::new(),
        };
        let (sharing, invite) = self.store_members(&instance.id, &req.id, recipients, caller).await?;
        tracing::info!(sharing = %sharing.id, by = caller, added = invite.len(), "recipients added by a member");
        let states: BTreeMap<String, String> = invite
            .iter()
            .filter_map(|&i| {
                let m = &sharing.members[i];
                let key = if m.email.is_empty() { &m.instance } else { &m.email };
                Some((key.clone(), sharing.credentials_of(i)?.state.clone()))
            })
            .collect();
        // The owner's host sends the requests and mails (cozy-stack leaves the mails to the
        // member's host, with the states answered).
        let service = self.clone();
        tokio::spawn(async move {
            let sharing = service.invite(&instance, sharing, &invite).await;
            service.tell_members(&instance.id, &sharing).await;
        });
        Ok(serde_json::to_value(states).unwrap_or_default())
    }

    /// Pushes the members as they now are to each recipient that is in; best effort (the next
    /// change of members pushes them again).
    pub(crate) async fn tell_members(&self, instance: &str, sharing: &Sharing) {
        let body = json!({"data": members_for_recipients(sharing), "included": sharing.groups});
        let path = format!("/sharings/{}/recipients", sharing.id);
        for i in 1..sharing.members.len() {
            if sharing.members[i].status != status::READY {
                continue;
            }
            if let Err(err) = self.call_peer(instance, sharing, i, Method::PUT, &path, &body).await {
                tracing::info!(sharing = %sharing.id, member = i, error = %err, "a member was not told of the members");
            }
        }
    }

    /// [`Self::tell_members`] in the background, with the sharing as stored.
    pub(crate) fn tell_members_later(&self, instance: &str, id: &str) {
        let (service, instance, id) = (self.clone(), instance.to_string(), id.to_string());
        tokio::spawn(async move {
            match service.must_load(&instance, &id).await {
                Ok(sharing) if sharing.owner => service.tell_members(&instance, &sharing).await,
                Ok(_) => {}
                Err(err) => tracing::info!(sharing = %id, error = %err, "the members were not told"),
            }
        });
    }

    /// `PUT /sharings/:id/recipients` on a recipient, by the owner's host: each member's
    /// status, public name, address and read-only flag as the owner has them. This host keeps
    /// its own Cozy's address and the owner's.
    pub(crate) async fn members_from_owner(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance.clone(), false)?;
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
        let listed = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| SharingError::BadRequest("the members: {\"data\": [...]}".into()))?;
        if listed.len() > MAX_MEMBERS + 1 {
            return Err(SharingError::BadRequest(format!(
                "a sharing has at most {MAX_MEMBERS} members"
            )));
        }
        let _guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        if sharing.owner || !sharing.takes_peer_calls() {
            return Err(SharingError::Denied(
                "this sharing does not take its members from here".into(),
            ));
        }
        if Self::caller_member(&sharing, &req.client_id)? != 0 {
            return Err(SharingError::Denied("only the owner's host sends the members".into()));
        }
        let me = my_member(&sharing, &instance.origin);
        for (i, value) in listed.iter().enumerate() {
            let told = member_from_peer(value)?;
            if i >= sharing.members.len() {
                sharing.members.push(Member::default());
            }
            let member = &mut sharing.members[i];
            // This host's own state is its own; the owner stays the owner.
            if Some(i) != me && i != 0 {
                member.status = value
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            member.public_name = value
                .get("public_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(MAX_FIELD)
                .collect();
            member.email = told.email;
            member.read_only = told.read_only;
            member.only_in_groups = value.get("only_in_groups").and_then(Value::as_bool).unwrap_or(false);
            member.groups = value
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_u64().map(|g| g as usize))
                .take(MAX_MEMBERS)
                .collect();
        }
        if let Some(groups) = body.get("included").and_then(Value::as_array) {
            sharing.groups = groups
                .iter()
                .take(MAX_MEMBERS)
                .filter_map(|g| serde_json::from_value(g.clone()).ok())
                .collect();
        }
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(email: &str, instance: &str, state: &str) -> Member {
        Member {
            status: state.into(),
            email: email.into(),
            instance: instance.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_a_person_is_added_once_and_a_revoked_one_is_invited_again() {
        let mut sharing = Sharing {
            owner: true,
            members: vec![
                member("alice@a.test", "https://alice.test", status::OWNER),
                member("bob@b.test", "https://bob.test", status::READY),
                member("carol@c.test", "", status::REVOKED),
            ],
            credentials: vec![Credentials::default(), Credentials::default()],
            ..Default::default()
        };
        let invite = add_members(
            &mut sharing,
            vec![
                member("BOB@b.test", "", status::MAIL_NOT_SENT),
                member("carol@c.test", "https://carol.test", status::MAIL_NOT_SENT),
                member("", "https://dave.test", status::MAIL_NOT_SENT),
            ],
        )
        .unwrap();
        assert_eq!(invite, vec![2, 3], "bob is in already; carol comes back in her slot");
        assert_eq!(sharing.members.len(), 4);
        assert_eq!(sharing.credentials.len(), 3, "one set of credentials per recipient");
        assert_eq!(sharing.members[2].instance, "https://carol.test");
        assert!(!sharing.credentials[1].state.is_empty(), "a fresh invitation");
        assert_eq!(sharing.members[1].status, status::READY);
    }

    #[test]
    fn test_recipients_see_no_ones_cozy_but_the_owners() {
        let sharing = Sharing {
            members: vec![
                member("alice@a.test", "https://alice.test", status::OWNER),
                member("bob@b.test", "https://bob.test", status::READY),
            ],
            ..Default::default()
        };
        let shown = members_for_recipients(&sharing);
        assert_eq!(shown[0]["instance"], "https://alice.test");
        assert!(shown[1].get("instance").is_none());
        assert_eq!(shown[1]["email"], "bob@b.test");
    }

    #[test]
    fn test_members_from_another_host_are_checked() {
        assert!(member_from_peer(&json!({"email": "x".repeat(400)})).is_err());
        assert!(member_from_peer(&json!({"instance": "not a url at all ::"})).is_err());
        let m =
            member_from_peer(&json!({"email": " carol@c.test ", "instance": "carol.test", "status": "ready"})).unwrap();
        assert_eq!(m.email, "carol@c.test");
        assert_eq!(
            m.status,
            status::MAIL_NOT_SENT,
            "a new member starts uninvited, whatever it says"
        );
    }
}
