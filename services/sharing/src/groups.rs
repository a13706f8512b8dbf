//! Contact groups as recipients (`io.cozy.contacts.groups`), as cozy-stack shares with them: a
//! group's contacts (those whose `relationships.groups` names it) become members in it, marked
//! `only_in_groups` when they are not recipients of their own; revoking the group
//! (`DELETE /sharings/:id/groups/:index`) revokes the members in only through revoked groups.

use cocon_common::cozy::doctype;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::sharing::v1 as pb;
use serde_json::Value;

use crate::doc::{Group, Member, Sharing, status};
use crate::error::{Result, SharingError};
use crate::members::{fresh_credentials, is_same_person};
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
    for member in members {
        let known = (1..sharing.members.len()).find(|&i| is_same_person(&member, &sharing.members[i]));
        match known {
            Some(i) => {
                let here = &mut sharing.members[i];
                if !here.groups.contains(&index) {
                    here.groups.push(index);
                }
                if here.status == status::REVOKED {
                    let groups = std::mem::take(&mut here.groups);
                    *here = Member {
                        groups,
                        only_in_groups: true,
                        ..member
                    };
                    sharing.credentials[i - 1] = fresh_credentials();
                    invite.push(i);
                }
            }
            None => {
                sharing.members.push(Member {
                    only_in_groups: true,
                    groups: vec![index],
                    ..member
                });
                sharing.credentials.push(fresh_credentials());
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
        let mut members = Vec::new();
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
            let rows = page.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
            for row in &rows {
                let contact = &row["doc"];
                if contact.is_object() && in_group(contact, id) {
                    members.push(member_of_contact(contact, read_only));
                }
            }
            match rows.last().and_then(|r| r["id"].as_str()) {
                Some(last) if rows.len() == PAGE as usize => after = last.to_string(),
                _ => break,
            }
            if members.len() > MAX_MEMBERS {
                break;
            }
        }
        // A contact without an address nor a Cozy cannot be invited.
        members.retain(|m| !m.email.is_empty() || !m.instance.is_empty());
        Ok((group, members))
    }
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
    fn test_a_contact_is_in_the_groups_its_relationships_name() {
        let contact =
            json!({"relationships": {"groups": {"data": [{"_id": "g1", "_type": "io.cozy.contacts.groups"}]}}});
        assert!(in_group(&contact, "g1"));
        assert!(!in_group(&contact, "g2"));
        assert!(!in_group(&json!({"fullname": "x"}), "g1"));
    }
}
