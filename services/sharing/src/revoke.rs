//! Ending a sharing, and the read-only switch (`cozy-protocols.md` §1.12, §1.13).
//!
//! Whoever ends a sharing tells the other side with the token it holds, then deletes the client
//! it made for that side, so the other side's tokens stop working at once. The documents stay
//! where they are: a recipient keeps a detached copy. Ending never waits on the other host: a
//! host that was down and missed the notice learns it on its next call, whose token is refused
//! and whose refresh is refused too (its client is gone), and ends the sharing on its side then.

use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::sharing::v1 as pb;
use cocon_proto::sharing::v1::revoke_request::Who;
use reqwest::Method;
use serde_json::{Value, json};

use crate::doc::{Credentials, Sharing, now, status};
use crate::error::{Result, SharingError};
use crate::service::SharingService;

/// This recipient's own member in a sharing it received: the one at its origin (the request a
/// recipient gets lists the owner and itself).
pub(crate) fn my_member(sharing: &Sharing, origin: &str) -> Option<usize> {
    let members = &sharing.members;
    (1..members.len())
        .find(|&i| members[i].instance == origin)
        .or_else(|| (1..members.len()).find(|&i| !members[i].instance.is_empty()))
}

/// Marks member `index` (≥ 1) of an owner's sharing revoked and forgets what was held for it;
/// answers the id of the client made here for it, to delete. The slot of its credentials stays,
/// empty, so the indexes keep matching the members.
fn revoke_member(sharing: &mut Sharing, index: usize) -> Option<String> {
    let member = sharing.members.get_mut(index)?;
    if member.status == status::REVOKED {
        return None;
    }
    member.status = status::REVOKED.into();
    let creds = sharing.credentials.get_mut(index - 1)?;
    let old = std::mem::take(creds);
    Some(old.inbound_client_id).filter(|c| !c.is_empty())
}

/// Whether a member other than the owner is still in.
fn any_ready(sharing: &Sharing) -> bool {
    sharing.members.iter().skip(1).any(|m| m.status == status::READY)
}

/// The new credentials of a read-only switch, as an answer carries them.
fn credentials_of_answer(body: &[u8]) -> Result<(Value, Value)> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| SharingError::BadRequest(format!("the body is not JSON: {e}")))?;
    let attrs = body.pointer("/data/attributes").unwrap_or(&body);
    match (attrs.get("client"), attrs.get("access_token")) {
        (Some(c), Some(t)) if c.is_object() && t["access_token"].is_string() => Ok((c.clone(), t.clone())),
        _ => Err(SharingError::BadRequest(
            "the switch carries the new client and access_token".into(),
        )),
    }
}

impl SharingService {
    /// `DELETE /sharings/:id/recipients[/:index|/self]`, by an app of this instance.
    pub(crate) async fn revoke(&self, req: pb::RevokeRequest) -> Result<Sharing> {
        let instance = self.instance(req.instance.clone(), true)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        let who = Who::try_from(req.who).map_err(|_| SharingError::BadRequest("unknown revocation".into()))?;
        if who == Who::Self_ {
            if sharing.owner {
                return Err(SharingError::BadRequest(
                    "the owner does not leave a sharing: revoke it with DELETE /sharings/:id/recipients".into(),
                ));
            }
            return self.leave(&instance.id, &instance.origin, &sharing).await;
        }
        if !sharing.owner {
            return Err(SharingError::Denied(
                "only the owner revokes members; a recipient leaves with DELETE /sharings/:id/recipients/self".into(),
            ));
        }
        let members: Vec<usize> = match who {
            Who::Group => {
                let _guard = self.lock(&instance.id).await;
                let mut sharing = self.must_load(&instance.id, &req.id).await?;
                let members = crate::groups::revoke_group(&mut sharing, req.index as usize)?;
                sharing.updated_at = now();
                self.save(&instance.id, &[(&sharing, "updated")]).await?;
                if members.is_empty() {
                    self.tell_members_later(&instance.id, &sharing.id);
                    return Ok(sharing);
                }
                members
            }
            Who::Member => {
                let index = req.index as usize;
                if index == 0 || index >= sharing.members.len() {
                    return Err(SharingError::NotFound(format!(
                        "this sharing has no member {index} to revoke"
                    )));
                }
                vec![index]
            }
            _ => (1..sharing.members.len()).collect(),
        };
        self.revoke_listed(&instance.id, &sharing, &members, who == Who::All)
            .await
    }

    /// Revokes `members` of an owner's sharing: each that is in is told first (`DELETE
    /// /sharings/:id` on its host); the sharing ends with the last one, or at once when `all`.
    pub(crate) async fn revoke_listed(
        &self,
        instance: &str,
        sharing: &Sharing,
        members: &[usize],
        all: bool,
    ) -> Result<Sharing> {
        for &m in members {
            if sharing.members[m].status != status::READY {
                continue;
            }
            let path = format!("/sharings/{}", sharing.id);
            if let Err(err) = self
                .call_peer(instance, sharing, m, Method::DELETE, &path, &Value::Null)
                .await
            {
                tracing::warn!(sharing = %sharing.id, member = m, error = %err, "a revoked member was not told");
            }
        }
        self.revoke_members(instance, &sharing.id, members, all).await
    }

    /// This recipient leaves `sharing`: the owner is told, then the sharing ends here.
    pub(crate) async fn leave(&self, instance: &str, origin: &str, sharing: &Sharing) -> Result<Sharing> {
        if sharing.active {
            let path = format!("/sharings/{}/answer", sharing.id);
            if let Err(err) = self
                .call_peer(instance, sharing, 0, Method::DELETE, &path, &Value::Null)
                .await
            {
                // The owner learns it on its next call, refused here.
                tracing::warn!(sharing = %sharing.id, error = %err, "the owner was not told that this member left");
            }
        }
        self.detach(instance, origin, &sharing.id).await
    }

    /// Revokes `members` of an owner's sharing here; the sharing ends with the last one in, or
    /// at once when `all`.
    async fn revoke_members(&self, instance: &str, id: &str, members: &[usize], all: bool) -> Result<Sharing> {
        let guard = self.lock(instance).await;
        let mut sharing = self.must_load(instance, id).await?;
        let clients: Vec<String> = members.iter().filter_map(|&m| revoke_member(&mut sharing, m)).collect();
        if all || !any_ready(&sharing) {
            sharing.active = false;
        }
        sharing.updated_at = now();
        self.save(instance, &[(&sharing, "updated")]).await?;
        drop(guard);
        tracing::info!(sharing = %id, ?members, active = sharing.active, "members revoked");
        for &m in members {
            // Its sender, if any, sees the member revoked and ends.
            self.inner.senders.wake(instance, id, m);
        }
        for client in clients {
            self.delete_client(instance, &client).await;
        }
        if sharing.active {
            // The members still in see who left.
            self.tell_members_later(instance, id);
        }
        Ok(sharing)
    }

    /// Ends a sharing this instance received: no credentials kept, inactive, its member
    /// revoked; the documents stay, detached.
    async fn detach(&self, instance: &str, origin: &str, id: &str) -> Result<Sharing> {
        let guard = self.lock(instance).await;
        let mut sharing = self.must_load(instance, id).await?;
        let client = sharing
            .credentials
            .first()
            .map(|c| c.inbound_client_id.clone())
            .filter(|c| !c.is_empty());
        sharing.credentials.clear();
        sharing.active = false;
        if let Some(me) = my_member(&sharing, origin) {
            sharing.members[me].status = status::REVOKED.into();
        }
        sharing.updated_at = now();
        self.save(instance, &[(&sharing, "updated")]).await?;
        drop(guard);
        tracing::info!(sharing = %id, "sharing ended on this side");
        self.inner.senders.wake(instance, id, 0);
        if let Some(client) = client {
            self.delete_client(instance, &client).await;
        }
        Ok(sharing)
    }

    /// `DELETE /sharings/:id` (the owner revoked this recipient) or `DELETE /sharings/:id/answer`
    /// (a recipient left), by the other host with the token this host issued it.
    pub(crate) async fn peer_revoked(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance, false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        let member = Self::caller_member(&sharing, &req.client_id)?;
        if sharing.owner {
            self.revoke_members(&instance.id, &sharing.id, &[member], false).await?;
        } else {
            self.detach(&instance.id, &instance.origin, &sharing.id).await?;
        }
        Ok(Value::Null)
    }

    /// A sender found that the other side deleted its client: the sharing ends here too.
    pub(crate) async fn revoked_by_peer(&self, instance: &str, id: &str, member: usize) -> Result<()> {
        let sharing = self.must_load(instance, id).await?;
        if sharing.owner {
            self.revoke_members(instance, id, &[member], false).await?;
        } else {
            self.detach(instance, "", id).await?;
        }
        Ok(())
    }

    /// Deletes a client this instance made for another host, and with it every token it holds.
    /// A failure is logged: the member is revoked in the sharing already, which refuses it.
    async fn delete_client(&self, instance: &str, client_id: &str) {
        let deleted = async {
            let mut auth = self.clients()?.auth.clone();
            let found = auth
                .get_instance(auth_pb::GetInstanceRequest {
                    id: instance.to_string(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            auth.revoke_client(auth_pb::RevokeClientRequest {
                domain: found.domain,
                client_id: client_id.to_string(),
            })
            .await?;
            Ok::<_, SharingError>(())
        };
        if let Err(err) = deleted.await {
            tracing::warn!(instance = %instance, error = %err, "the client of a revoked member was not deleted");
        }
    }

    /// `POST|DELETE /sharings/:id/recipients/:index/readonly` on the owner.
    pub(crate) async fn set_read_only(&self, req: pb::ReadOnlyRequest) -> Result<Sharing> {
        let instance = self.instance(req.instance, true)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if !sharing.owner {
            return Err(SharingError::Denied("only the owner makes a member read-only".into()));
        }
        let index = req.index as usize;
        let member = match sharing.members.get(index) {
            Some(m) if index > 0 => m.clone(),
            _ => return Err(SharingError::NotFound(format!("this sharing has no member {index}"))),
        };
        if member.status == status::REVOKED {
            return Err(SharingError::BadRequest("this member was revoked".into()));
        }
        if member.read_only == req.read_only {
            return Ok(sharing);
        }
        let mut issued = None;
        if member.status == status::READY {
            // A client with the new scope, sent to the member's host; the old one goes once
            // it has the new one.
            let fresh = self
                .issue_client(
                    &instance.domain,
                    &sharing.id,
                    &member.instance,
                    &member.public_name,
                    req.read_only || sharing.read_only_rules(),
                )
                .await?;
            let body = json!({"data": {"type": "io.cozy.sharings.answer", "id": sharing.id, "attributes": {
                "client": fresh.client,
                "access_token": fresh.access_token,
            }}});
            let method = if req.read_only { Method::POST } else { Method::DELETE };
            let path = format!("/sharings/{}/recipients/self/readonly", sharing.id);
            if let Err(err) = self
                .call_peer(&instance.id, &sharing, index, method, &path, &body)
                .await
            {
                self.delete_client(&instance.id, &fresh.client_id).await;
                return Err(err);
            }
            issued = Some(fresh.client_id);
        }
        let guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        sharing.members[index].read_only = req.read_only;
        let old = match (issued, sharing.credentials.get_mut(index - 1)) {
            (Some(new), Some(creds)) => Some(std::mem::replace(&mut creds.inbound_client_id, new)),
            _ => None,
        };
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        drop(guard);
        tracing::info!(sharing = %sharing.id, member = index, read_only = req.read_only, "read-only switched");
        if let Some(old) = old.filter(|c| !c.is_empty()) {
            self.delete_client(&instance.id, &old).await;
        }
        Ok(sharing)
    }

    /// `POST|DELETE /sharings/:id/recipients/self/readonly` on a recipient, by the owner's host:
    /// the new credentials kept, the flag set; a read-write member starts sending again.
    pub(crate) async fn peer_read_only(&self, req: pb::PeerRequest) -> Result<Value> {
        let instance = self.instance(req.instance, false)?;
        let sharing = self.must_load(&instance.id, &req.id).await?;
        if sharing.owner || Self::caller_member(&sharing, &req.client_id)? != 0 {
            return Err(SharingError::Denied(
                "only the owner switches a member to read-only".into(),
            ));
        }
        let (client, access_token) = credentials_of_answer(&req.body)?;
        let guard = self.lock(&instance.id).await;
        let mut sharing = self.must_load(&instance.id, &req.id).await?;
        let creds = sharing
            .credentials
            .first_mut()
            .ok_or_else(|| SharingError::Corrupt("credentials missing".into()))?;
        *creds = Credentials {
            client: Some(client),
            access_token: Some(access_token),
            ..std::mem::take(creds)
        };
        if let Some(me) = my_member(&sharing, &instance.origin) {
            sharing.members[me].read_only = req.read_only;
        }
        sharing.updated_at = now();
        self.save(&instance.id, &[(&sharing, "updated")]).await?;
        drop(guard);
        if req.read_only {
            self.inner.senders.wake(&instance.id, &sharing.id, 0);
        } else {
            self.start_senders(&instance.id, &sharing, None);
        }
        Ok(Value::Null)
    }

    /// `GET /sharings/news`: the requests received that wait for the person's answer.
    pub(crate) async fn news(&self, req: pb::NewsRequest) -> Result<u32> {
        let instance = self.instance(req.instance, true)?;
        let waiting = self
            .all(&instance.id)
            .await?
            .iter()
            .filter(|s| !s.owner && !s.active)
            .filter(|s| s.credentials.first().is_some_and(|c| !c.state.is_empty()))
            .count();
        Ok(waiting as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Member;

    fn member(status: &str, instance: &str) -> Member {
        Member {
            status: status.into(),
            instance: instance.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_a_revoked_member_keeps_its_slot_and_loses_its_credentials() {
        let mut sharing = Sharing {
            owner: true,
            members: vec![
                member(status::OWNER, "https://alice.example"),
                member(status::READY, "https://bob.example"),
                member(status::READY, "https://carol.example"),
            ],
            credentials: vec![
                Credentials {
                    state: "s1".into(),
                    inbound_client_id: "c1".into(),
                    ..Default::default()
                },
                Credentials {
                    state: "s2".into(),
                    inbound_client_id: "c2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(revoke_member(&mut sharing, 1).as_deref(), Some("c1"));
        assert_eq!(revoke_member(&mut sharing, 1), None, "once");
        assert_eq!(sharing.members[1].status, status::REVOKED);
        assert_eq!(sharing.credentials.len(), 2);
        assert_eq!(sharing.credentials[0], Credentials::default());
        assert_eq!(sharing.credentials[1].inbound_client_id, "c2");
        assert!(any_ready(&sharing));
        revoke_member(&mut sharing, 2);
        assert!(!any_ready(&sharing));
    }

    #[test]
    fn test_a_recipient_finds_its_own_member() {
        let sharing = Sharing {
            members: vec![
                member(status::OWNER, "https://alice.example"),
                member(status::READY, "https://bob.example"),
            ],
            ..Default::default()
        };
        assert_eq!(my_member(&sharing, "https://bob.example"), Some(1));
        assert_eq!(my_member(&sharing, ""), Some(1));
        assert!(credentials_of_answer(br#"{"data":{"attributes":{"client":{}}}}"#).is_err());
        let (_, token) = credentials_of_answer(
            br#"{"data":{"attributes":{"client":{"client_id":"c"},"access_token":{"access_token":"t"}}}}"#,
        )
        .unwrap();
        assert_eq!(token["access_token"], "t");
    }
}
