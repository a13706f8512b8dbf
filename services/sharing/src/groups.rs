//! Contact groups as recipients (`io.cozy.contacts.groups`), as cozy-stack shares with them: a
//! group's contacts (those whose `relationships.groups` names it) become members in it, marked
//! `only_in_groups` when they are not recipients of their own; revoking the group
//! (`DELETE /sharings/:id/groups/:index`) revokes the members in only through revoked groups.
//! When the person's contacts change, the members follow (cozy-stack's `share-group` worker): a
//! contact that joins a shared group is invited, one that leaves it is revoked unless in
//! otherwise.

use std::collections::HashMap;
use std::sync::Mutex;

use cocon_common::cozy::doctype;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::sharing::v1 as pb;
use serde_json::Value;

use crate::doc::{Group, Member, Sharing, status};
use crate::error::{Result, SharingError};
use crate::members::{fresh_credentials, same_person};
use crate::service::SharingService;
use crate::setup::{MAX_MEMBERS, member_of_contact};

/// Contacts read per page when looking for a group's.
const PAGE: u32 = 1000;

/// Adds `group` and its contacts (`members`) to an owner's sharing, for member `added_by`: a
/// person already in is marked in the group too; one revoked comes back through it. Answers the
/// indexes to invite. A group shared already (and not revoked) adds nothing.
pub(crate) fn add_group(
    sharing: &mut Sharing,
    group: Group,
    members: Vec<Member>,
    added_by: usize,
) -> Result<Vec<usize>> {
    if sharing.groups.iter().any(|g| g.id == group.id && !g.revoked) {
        return Ok(Vec::new());
    }
    sharing.groups.push(Group { added_by, ..group });
    let index = sharing.groups.len() - 1;
    let mut invite = Vec::new();
    for member in &members {
        invite.extend(join_group(sharing, index, member)?);
    }
    Ok(invite)
}

/// `contact` is in group `index` of an owner's sharing: marked so if they are a member (and
/// invited again if they were revoked before joining it), added if not. Answers the member to
/// invite, if any.
fn join_group(sharing: &mut Sharing, index: usize, contact: &Member) -> Result<Option<usize>> {
    let known = (1..sharing.members.len()).find(|&i| same_person(contact, &sharing.members[i]));
    let invite = match known {
        Some(i) if sharing.members[i].groups.contains(&index) => None,
        Some(i) => {
            let here = &mut sharing.members[i];
            here.groups.push(index);
            if here.status != status::REVOKED {
                return Ok(None);
            }
            let groups = std::mem::take(&mut here.groups);
            *here = Member {
                groups,
                only_in_groups: true,
                ..contact.clone()
            };
            sharing.credentials[i - 1] = fresh_credentials();
            Some(i)
        }
        None => {
            sharing.members.push(Member {
                only_in_groups: true,
                groups: vec![index],
                ..contact.clone()
            });
            sharing.credentials.push(fresh_credentials());
            Some(sharing.members.len() - 1)
        }
    };
    if sharing.members.len() > MAX_MEMBERS {
        return Err(SharingError::BadRequest(format!(
            "a sharing has at most {MAX_MEMBERS} members"
        )));
    }
    Ok(invite)
}

/// Marks group `index` revoked; answers the members to revoke with it: those in only through
/// groups that are all revoked now.
pub(crate) fn revoke_group(sharing: &mut Sharing, index: usize) -> Result<Vec<usize>> {
    let group = sharing
        .groups
        .get_mut(index)
        .ok_or_else(|| SharingError::NotFound(format!("this sharing has no group {index}")))?;
    group.revoked = true;
    let revoked: Vec<bool> = sharing.groups.iter().map(|g| g.revoked).collect();
    Ok((1..sharing.members.len())
        .filter(|&i| {
            let m = &sharing.members[i];
            m.status != status::REVOKED
                && m.only_in_groups
                && m.groups.contains(&index)
                && m.groups.iter().all(|&g| revoked.get(g).copied().unwrap_or(true))
        })
        .collect())
}

/// Brings the members of an owner's sharing in line with what its groups hold now (`current`:
/// each group's index, and its contacts as members): a contact that joined a group is added to
/// it (and invited, if new or revoked before it joined); one that left it leaves it. Answers the
/// members to invite and those to revoke (in only through groups, none of them left). A member
/// revoked by hand who is still in a group stays revoked.
pub(crate) fn apply_groups(
    sharing: &mut Sharing,
    current: Vec<(usize, Vec<Member>)>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut invite = Vec::new();
    for (index, contacts) in current {
        for contact in &contacts {
            invite.extend(join_group(sharing, index, contact)?);
        }
        for member in sharing.members.iter_mut().skip(1) {
            if member.groups.contains(&index) && !contacts.iter().any(|c| same_person(c, member)) {
                member.groups.retain(|&g| g != index);
            }
        }
    }
    let live = |g: &usize| sharing.groups.get(*g).is_some_and(|g| !g.revoked);
    let revoke = (1..sharing.members.len())
        .filter(|&i| {
            let m = &sharing.members[i];
            m.only_in_groups && m.status != status::REVOKED && !m.groups.iter().any(live)
        })
        .collect();
    Ok((invite, revoke))
}

/// The instances whose sharings' groups are being brought up to date, and whether their
/// contacts changed again meanwhile.
#[derive(Default)]
pub struct Regroups {
    running: Mutex<HashMap<String, bool>>,
}

/// Whether `contact` is in group `id` (cozy's `relationships.groups.data[]._id`).
fn in_group(contact: &Value, id: &str) -> bool {
    contact
        .pointer("/relationships/groups/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|g| g.get("_id").or_else(|| g.get("id")).and_then(Value::as_str) == Some(id))
}

impl SharingService {
    /// The contacts of `instance` changed: its sharings' groups are brought up to date in the
    /// background, one pass at a time per instance (changes meanwhile make one more pass).
    pub(crate) fn contacts_changed(&self, instance: &str) {
        {
            let mut running = self.inner.regroups.running.lock().expect("regroups poisoned");
            if let Some(again) = running.get_mut(instance) {
                *again = true;
                return;
            }
            running.insert(instance.to_string(), false);
        }
        let (service, instance) = (self.clone(), instance.to_string());
        tokio::spawn(async move {
            loop {
                if let Err(err) = service.regroup(&instance).await {
                    tracing::warn!(%instance, error = %err, "the shared groups' members could not follow the contacts");
                }
                let mut running = service.inner.regroups.running.lock().expect("regroups poisoned");
                match running.get_mut(&instance) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&instance);
                        break;
                    }
                }
            }
        });
    }

    /// One pass over the instance's sharings that share with groups.
    async fn regroup(&self, instance: &str) -> Result<()> {
        // The contacts are read once per pass, when a sharing has groups to compare.
        let mut contacts: Option<Vec<Value>> = None;
        for shown in self.all_shown(instance).await? {
            if !shown.owner || !shown.active || shown.groups.iter().all(|g| g.revoked) {
                continue;
            }
            let origin = shown.members.first().map(|m| m.instance.clone()).unwrap_or_default();
            let me = pb::Instance {
                id: instance.to_string(),
                domain: origin.split_once("://").map_or(origin.as_str(), |(_, d)| d).to_string(),
                ticket: self
                    .inner
                    .mesh_key
                    .issue(instance, cocon_common::time::now_secs() + 300),
                origin,
            };
            if contacts.is_none() {
                contacts = Some(self.grouped_contacts(&me).await?);
            }
            let contacts = contacts.as_deref().unwrap_or_default();
            let mut current = Vec::new();
            for (index, group) in shown.groups.iter().enumerate().filter(|(_, g)| !g.revoked) {
                let members = match self.document(&me, doctype::CONTACTS_GROUPS, &group.id).await {
                    Ok(_) => members_in(contacts, &group.id, group.read_only),
                    // The group was deleted: no one is in it.
                    Err(SharingError::BadRequest(_)) => Vec::new(),
                    Err(err) => return Err(err),
                };
                current.push((index, members));
            }
            let (sharing, invite, revoke) = {
                let _guard = self.lock(instance).await;
                let mut sharing = self.must_load(instance, &shown.id).await?;
                let before = sharing.clone();
                let (invite, revoke) = apply_groups(&mut sharing, current)?;
                if sharing == before {
                    continue;
                }
                sharing.updated_at = crate::doc::now();
                self.save(instance, &[(&sharing, "updated")]).await?;
                (sharing, invite, revoke)
            };
            tracing::info!(sharing = %sharing.id, joined = invite.len(), left = revoke.len(), "the groups' members followed the contacts");
            let sharing = self.invite(&me, sharing, &invite).await;
            if revoke.is_empty() {
                self.tell_members(instance, &sharing).await;
            } else {
                // (Telling the members comes with the revocation.)
                self.revoke_listed(instance, &sharing, &revoke, false).await?;
            }
        }
        Ok(())
    }

    /// Contact group `id` as shared with (`read_only` for `read_only_recipients`), with the
    /// contacts in it as members.
    pub(crate) async fn group(
        &self,
        instance: &pb::Instance,
        id: &str,
        read_only: bool,
    ) -> Result<(Group, Vec<Member>)> {
        let doc = self.document(instance, doctype::CONTACTS_GROUPS, id).await?;
        let group = Group {
            id: id.to_string(),
            name: doc.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            read_only,
            ..Default::default()
        };
        let contacts = self.grouped_contacts(instance).await?;
        Ok((group, members_in(&contacts, id, read_only)))
    }

    /// The instance's contacts that are in some group, read a page at a time (once per pass
    /// over the groups, however many there are).
    async fn grouped_contacts(&self, instance: &pb::Instance) -> Result<Vec<Value>> {
        let mut contacts = Vec::new();
        let mut documents = self.clients()?.documents.clone();
        let mut after = String::new();
        loop {
            let page = documents
                .all_docs(docs_pb::AllDocsRequest {
                    scope: Some(docs_pb::Scope {
                        instance: instance.id.clone(),
                        doctype: doctype::CONTACTS.into(),
                        ticket: instance.ticket.clone(),
                        read_only: Vec::new(),
                    }),
                    include_docs: true,
                    limit: PAGE,
                    has_limit: true,
                    // The page after the last contact read.
                    skip: u32::from(!after.is_empty()),
                    start_key: after.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let page: Value = serde_json::from_slice(&page.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
            let mut rows = match page {
                Value::Object(mut page) => match page.remove("rows") {
                    Some(Value::Array(rows)) => rows,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let next = match rows.last().and_then(|r| r["id"].as_str()) {
                Some(last) if rows.len() == PAGE as usize => Some(last.to_string()),
                _ => None,
            };
            contacts.extend(rows.iter_mut().map(|r| r["doc"].take()).filter(|c| {
                c.pointer("/relationships/groups/data")
                    .and_then(Value::as_array)
                    .is_some_and(|g| !g.is_empty())
            }));
            match next {
                Some(last) => after = last,
                None => return Ok(contacts),
            }
        }
    }
}

/// The members of group `id` among `contacts`: those it names that can be invited (with an
/// address or a Cozy).
fn members_in(contacts: &[Value], id: &str, read_only: bool) -> Vec<Member> {
    contacts
        .iter()
        .filter(|c| in_group(c, id))
        .map(|c| member_of_contact(c, read_only))
        .filter(|m| !m.email.is_empty() || !m.instance.is_empty())
        .take(MAX_MEMBERS + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Credentials;
    use serde_json::json;

    fn member(email: &str, state: &str) -> Member {
        Member {
            status: state.into(),
            email: email.into(),
            ..Default::default()
        }
    }

    fn group(id: &str) -> Group {
        Group {
            id: id.into(),
            name: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn test_a_groups_contacts_join_and_leave_with_it_unless_in_otherwise() {
        let mut sharing = Sharing {
            owner: true,
            members: vec![
                member("alice@a.test", status::OWNER),
                member("bob@b.test", status::READY),
            ],
            credentials: vec![Credentials::default()],
            ..Default::default()
        };
        // Family: bob (a recipient already) and carol; friends: carol and dave.
        let family = vec![
            member("bob@b.test", status::MAIL_NOT_SENT),
            member("carol@c.test", status::MAIL_NOT_SENT),
        ];
        assert_eq!(add_group(&mut sharing, group("family"), family, 0).unwrap(), vec![2]);
        let friends = vec![
            member("carol@c.test", status::MAIL_NOT_SENT),
            member("dave@d.test", status::MAIL_NOT_SENT),
        ];
        assert_eq!(add_group(&mut sharing, group("friends"), friends, 0).unwrap(), vec![3]);
        assert_eq!(sharing.credentials.len(), 3);
        assert!(!sharing.members[1].only_in_groups, "bob is a recipient of his own");
        assert_eq!(sharing.members[1].groups, vec![0]);
        assert_eq!(sharing.members[2].groups, vec![0, 1]);
        assert!(sharing.members[3].only_in_groups);
        // The same group again adds nothing.
        assert!(
            add_group(&mut sharing, group("family"), vec![member("eve@e.test", "")], 0)
                .unwrap()
                .is_empty()
        );

        // Family revoked: bob stays (his own), carol stays (friends).
        assert!(revoke_group(&mut sharing, 0).unwrap().is_empty());
        assert!(sharing.groups[0].revoked);
        // Friends revoked too: carol and dave go.
        assert_eq!(revoke_group(&mut sharing, 1).unwrap(), vec![2, 3]);
        assert!(revoke_group(&mut sharing, 7).is_err());
    }

    #[test]
    fn test_members_follow_the_contacts_that_join_and_leave_a_group() {
        let mut sharing = Sharing {
            owner: true,
            members: vec![member("alice@a.test", status::OWNER)],
            ..Default::default()
        };
        let family = vec![member("bob@b.test", ""), member("carol@c.test", "")];
        assert_eq!(add_group(&mut sharing, group("family"), family, 0).unwrap(), vec![1, 2]);
        sharing.members[1].status = status::READY.into();
        // Alice revoked carol by hand; dave joins the group, bob leaves it.
        sharing.members[2].status = status::REVOKED.into();
        let now = vec![member("carol@c.test", ""), member("dave@d.test", "")];
        let (invite, revoke) = apply_groups(&mut sharing, vec![(0, now.clone())]).unwrap();
        assert_eq!(
            invite,
            vec![3],
            "dave is invited; carol, revoked while in the group, is not"
        );
        assert_eq!(revoke, vec![1], "bob is in no shared group any more");
        assert!(sharing.members[1].groups.is_empty());
        // The same contacts again: nothing to do.
        sharing.members[1].status = status::REVOKED.into();
        let before = sharing.clone();
        assert_eq!(apply_groups(&mut sharing, vec![(0, now)]).unwrap(), (vec![], vec![]));
        assert_eq!(sharing, before);
        // Bob joins again: he comes back.
        let (invite, _) = apply_groups(&mut sharing, vec![(0, vec![member("bob@b.test", "")])]).unwrap();
        assert_eq!(invite, vec![1]);
        assert_eq!(sharing.members[1].status, "");
    }

    #[test]
    fn test_a_contact_is_in_the_groups_its_relationships_name() {
        let contact =
            json!({"relationships": {"groups": {"data": [{"_id": "g1", "_type": "io.cozy.contacts.groups"}]}}});
        assert!(in_group(&contact, "g1"));
        assert!(!in_group(&contact, "g2"));
        assert!(!in_group(&json!({"fullname": "x"}), "g1"));
        // Those that cannot be invited (no address, no Cozy) are left out.
        let contacts = [
            json!({"email": [{"address": "bob@b.test"}], "relationships": contact["relationships"]}),
            json!({"fullname": "No address", "relationships": contact["relationships"]}),
        ];
        let members = members_in(&contacts, "g1", true);
        assert_eq!(members.len(), 1);
        assert_eq!((members[0].email.as_str(), members[0].read_only), ("bob@b.test", true));
        assert!(members_in(&contacts, "g2", false).is_empty());
    }
}
