//! A roster's classes as contact groups in a teacher's instance: one `io.cozy.contacts.groups`
//! per class (`roster-class-<hex of its name>`) and one `io.cozy.contacts` per pupil
//! (`roster-<domain>`, with the pupil's Cozy as its primary `cozy` URL), so that the teacher
//! shares a folder with a class as with any group, and the sharing follows the class as the
//! roster changes (the groups' members follow the contacts, `groups.rs`). The roster's documents
//! are told apart by their ids: the teacher's own contacts and groups are never touched, and
//! the teacher's own groups on a roster contact are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cocon_common::cozy::doctype;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::sharing::v1 as pb;
use serde_json::{Value, json};

use crate::error::{Result, SharingError};
use crate::service::SharingService;

/// What the roster's document ids start with.
const ROSTER: &str = "roster-";
const CLASS: &str = "roster-class-";
/// Documents read and written per call.
const PAGE: u32 = 500;
/// Classes and members per teacher, as a bound on one call's work.
const MAX_CLASSES: usize = 200;
const MAX_MEMBERS: usize = 5_000;

fn group_id(class: &str) -> String {
    let hex: String = class.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{CLASS}{hex}")
}

fn contact_id(domain: &str) -> String {
    format!("{ROSTER}{domain}")
}

/// The groups a contact names, as `relationships.groups.data` holds them.
fn groups_of(contact: &Value) -> Vec<Value> {
    contact
        .pointer("/relationships/groups/data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn id_of(reference: &Value) -> &str {
    reference
        .get("_id")
        .or_else(|| reference.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl SharingService {
    pub(crate) async fn set_class_groups(&self, req: pb::ClassGroupsRequest) -> Result<pb::ClassGroupsAnswer> {
        if req.instance_id.is_empty() {
            return Err(SharingError::BadRequest("no instance named".into()));
        }
        if req.classes.len() > MAX_CLASSES {
            return Err(SharingError::BadRequest(format!(
                "{} classes for one teacher: at most {MAX_CLASSES}",
                req.classes.len()
            )));
        }
        // What the roster wants: each class's group, and each member with the classes it is in.
        let mut groups: BTreeMap<String, String> = BTreeMap::new();
        let mut members: BTreeMap<String, (&pb::ClassMember, BTreeSet<String>)> = BTreeMap::new();
        for class in &req.classes {
            let name = class.name.trim();
            if name.is_empty() {
                continue;
            }
            let id = group_id(name);
            groups.insert(id.clone(), name.to_string());
            for member in &class.members {
                if member.domain.is_empty() || member.domain == req.domain {
                    continue;
                }
                members
                    .entry(contact_id(&member.domain))
                    .or_insert_with(|| (member, BTreeSet::new()))
                    .1
                    .insert(id.clone());
            }
        }
        if members.len() > MAX_MEMBERS {
            return Err(SharingError::BadRequest(format!(
                "{} pupils for one teacher: at most {MAX_MEMBERS}",
                members.len()
            )));
        }
        let ticket = self
            .inner
            .mesh_key
            .issue(&req.instance_id, cocon_common::time::now_secs() + 300);
        let scope = |doctype: &str| docs_pb::Scope {
            instance: req.instance_id.clone(),
            doctype: doctype.to_string(),
            ticket: ticket.clone(),
            read_only: Vec::new(),
        };

        let stored_groups = self.roster_docs(scope(doctype::CONTACTS_GROUPS), CLASS).await?;
        let mut writes = Vec::new();
        for (id, name) in &groups {
            let mut doc = stored_groups.get(id).cloned().unwrap_or_else(|| json!({"_id": id}));
            if doc.get("name").and_then(Value::as_str) != Some(name) {
                doc["name"] = json!(name);
                writes.push(doc);
            }
        }
        let written_groups = self.write_all(scope(doctype::CONTACTS_GROUPS), writes).await?;

        let stored_contacts = self.roster_docs(scope(doctype::CONTACTS), ROSTER).await?;
        let mut writes = Vec::new();
        for (id, (member, classes)) in &members {
            let before = stored_contacts.get(id).cloned();
            let mut doc = before.clone().unwrap_or_else(|| json!({"_id": id}));
            let name = if member.name.is_empty() {
                &member.domain
            } else {
                &member.name
            };
            doc["fullname"] = json!(name);
            doc["displayName"] = json!(name);
            doc["cozy"] = json!([{"url": member.url, "primary": true}]);
            doc["email"] = if member.email.is_empty() {
                json!([])
            } else {
                json!([{"address": member.email, "primary": true}])
            };
            set_roster_groups(&mut doc, classes);
            if before.as_ref() != Some(&doc) {
                writes.push(doc);
            }
        }
        // Roster contacts no longer in any of the teacher's classes leave the roster's groups.
        for (id, doc) in &stored_contacts {
            if members.contains_key(id) {
                continue;
            }
            let mut doc = doc.clone();
            let before = doc.clone();
            set_roster_groups(&mut doc, &BTreeSet::new());
            if doc != before {
                writes.push(doc);
            }
        }
        let written_contacts = self.write_all(scope(doctype::CONTACTS), writes).await?;
        Ok(pb::ClassGroupsAnswer {
            groups: written_groups,
            contacts: written_contacts,
        })
    }

    /// The documents of `scope`'s doctype whose ids start with `prefix`, by id.
    async fn roster_docs(&self, scope: docs_pb::Scope, prefix: &str) -> Result<HashMap<String, Value>> {
        let mut docs = HashMap::new();
        let mut documents = self.clients()?.documents.clone();
        let mut after = String::new();
        loop {
            let page = documents
                .all_docs(docs_pb::AllDocsRequest {
                    scope: Some(scope.clone()),
                    include_docs: true,
                    limit: PAGE,
                    has_limit: true,
                    skip: u32::from(!after.is_empty()),
                    start_key: if after.is_empty() {
                        prefix.to_string()
                    } else {
                        after.clone()
                    },
                    // Every id with the prefix sorts before it followed by U+FFFF.
                    end_key: format!("{prefix}\u{ffff}"),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let page: Value = serde_json::from_slice(&page.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
            let rows = page.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
            let full = rows.len() == PAGE as usize;
            for mut row in rows {
                let id = row["id"].as_str().unwrap_or_default().to_string();
                if id.starts_with(prefix) && row["doc"].is_object() {
                    after = id.clone();
                    docs.insert(id, row["doc"].take());
                }
            }
            if !full {
                return Ok(docs);
            }
        }
    }

    /// Writes `docs` in pages; how many were written. One refused (changed meanwhile) fails
    /// the call, after the others are written: a second run finishes the work.
    async fn write_all(&self, scope: docs_pb::Scope, docs: Vec<Value>) -> Result<u32> {
        let mut documents = self.clients()?.documents.clone();
        let (mut written, mut refused) = (0u32, Vec::new());
        for page in docs.chunks(PAGE as usize) {
            let answer = documents
                .bulk_docs(docs_pb::BulkDocsRequest {
                    scope: Some(scope.clone()),
                    body: json!({"docs": page}).to_string().into_bytes().into(),
                })
                .await?
                .into_inner();
            let results: Value =
                serde_json::from_slice(&answer.json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
            for result in results.as_array().into_iter().flatten() {
                if result.get("error").is_some() {
                    refused.push(format!(
                        "{}: {}",
                        id_of(result),
                        result["reason"].as_str().unwrap_or("refused")
                    ));
                } else {
                    written += 1;
                }
            }
        }
        if !refused.is_empty() {
            return Err(SharingError::Conflict(format!(
                "{} of the roster's documents could not be written ({}); run the classes again",
                refused.len(),
                refused.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )));
        }
        Ok(written)
    }
}

/// Sets the roster's groups a contact is in to `classes`, keeping the person's own.
fn set_roster_groups(contact: &mut Value, classes: &BTreeSet<String>) {
    let mut data: Vec<Value> = groups_of(contact)
        .into_iter()
        .filter(|g| !id_of(g).starts_with(CLASS))
        .collect();
    data.extend(
        classes
            .iter()
            .map(|id| json!({"_id": id, "_type": doctype::CONTACTS_GROUPS})),
    );
    if data.is_empty() && contact.pointer("/relationships/groups").is_none() {
        return;
    }
    contact["relationships"]["groups"]["data"] = Value::Array(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_contacts_roster_groups_change_and_its_own_stay() {
        let mut contact = json!({
            "_id": "roster-a.school.test",
            "relationships": {"groups": {"data": [
                {"_id": "friends", "_type": "io.cozy.contacts.groups"},
                {"_id": group_id("6A"), "_type": "io.cozy.contacts.groups"},
            ]}},
        });
        set_roster_groups(&mut contact, &BTreeSet::from([group_id("6B")]));
        let ids: Vec<String> = groups_of(&contact).iter().map(|g| id_of(g).to_string()).collect();
        assert_eq!(ids, ["friends".to_string(), group_id("6B")]);
        set_roster_groups(&mut contact, &BTreeSet::new());
        assert_eq!(groups_of(&contact).len(), 1, "the person's own group stays");
        let mut plain = json!({"_id": "roster-b.school.test"});
        set_roster_groups(&mut plain, &BTreeSet::new());
        assert_eq!(
            plain,
            json!({"_id": "roster-b.school.test"}),
            "nothing added to a contact in no group"
        );
        assert_ne!(group_id("6A"), group_id("6a"), "classes are told apart as written");
    }
}
