//! The `io.cozy.sharings` document as cozy-stack keeps it (`model/sharing/sharing.go`): rules,
//! members and, per member, the credentials of the other side. The same id names it on every
//! member's instance; `members[0]` is the owner, and on the owner `credentials[i]` belongs to
//! `members[i + 1]` (a recipient has one, for the owner).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Now, as the documents' dates are written.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sharing {
    #[serde(rename = "_id", default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub owner: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub open_sharing: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_slug: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preview_path: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub initial_sync: bool,
    /// On a recipient until its initial sync ends: the files the owner's folder held when it
    /// sent the request (what apps show the count against).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub initial_number_of_files_to_sync: u64,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub members: Vec<Member>,
    /// The contact groups shared with (`io.cozy.contacts.groups`); members name them by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// Never shown outside the service; sealed at rest (`store.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credentials>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rule {
    pub title: String,
    pub doctype: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub local: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub add: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remove: String,
}

/// A member's status: `owner`, `mail-not-sent`, `pending`, `seen`, `ready` or `revoked`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    /// The member's Cozy, as an origin (`https://bob.example`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// In the sharing only through groups (`groups`), not as a recipient of their own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub only_in_groups: bool,
    /// The indexes of the sharing's groups this member is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<usize>,
}

/// A contact group shared with, as cozy-stack keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The member who added it (0: the owner).
    #[serde(rename = "addedBy", default)]
    pub added_by: usize,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoked: bool,
}

pub mod status {
    pub const OWNER: &str = "owner";
    pub const MAIL_NOT_SENT: &str = "mail-not-sent";
    pub const PENDING: &str = "pending";
    pub const SEEN: &str = "seen";
    pub const READY: &str = "ready";
    pub const REVOKED: &str = "revoked";
}

/// What one side holds to work with the other: the state of the invitation, the client the
/// other side registered for it and its tokens (used to call the other side), the key that
/// turns ids into the recipient's, and the id of the client made here for the other side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Value>,
    /// 16 nibbles (0..15), base64 as cozy-stack encodes a `[]byte`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub xor_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inbound_client_id: String,
}

impl Sharing {
    /// The credentials of member `index` (≥ 1) on the owner's side.
    pub fn credentials_of(&self, index: usize) -> Option<&Credentials> {
        index.checked_sub(1).and_then(|i| self.credentials.get(i))
    }

    /// Whether the other side's replication is taken: the sharing is active, or this
    /// recipient is answering the owner (it made the client whose tokens the owner will call
    /// with, and the owner may start sending before the answer's reply is back here).
    pub fn takes_peer_calls(&self) -> bool {
        self.active
            || (!self.owner
                && self
                    .credentials
                    .first()
                    .is_some_and(|c| !c.inbound_client_id.is_empty()))
    }

    /// Whether no rule lets a recipient's changes come back (`sync`).
    pub fn read_only_rules(&self) -> bool {
        !self
            .rules
            .iter()
            .any(|r| r.add == "sync" || r.update == "sync" || r.remove == "sync")
    }

    /// The doctypes of the rules that are shared (not `local`).
    pub fn doctypes(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter(|r| !r.local).map(|r| r.doctype.as_str())
    }

    /// As cozy's API shows it: JSON-API `data`, credentials left out.
    pub fn api_view(&self) -> Value {
        let mut attributes = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for internal in ["_id", "credentials"] {
            attributes.remove(internal);
        }
        attributes.insert("triggers".into(), json!({}));
        json!({
            "type": cocon_common::cozy::doctype::SHARINGS,
            "id": self.id,
            "attributes": attributes,
            "links": {"self": format!("/sharings/{}", self.id)},
            "relationships": {"shared_docs": {"data": []}},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_recipient_takes_the_owners_calls_once_it_answers() {
        let mut sharing = Sharing {
            credentials: vec![Credentials {
                state: "s".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(!sharing.takes_peer_calls(), "a request not answered");
        sharing.credentials[0].inbound_client_id = "c".into();
        assert!(sharing.takes_peer_calls(), "answering: the owner may already send");
        sharing.owner = true;
        assert!(!sharing.takes_peer_calls(), "an owner's inactive sharing");
        sharing.active = true;
        assert!(sharing.takes_peer_calls());
    }

    #[test]
    fn test_the_api_view_never_shows_credentials() {
        let sharing = Sharing {
            id: "s1".into(),
            owner: true,
            active: true,
            rules: vec![Rule {
                title: "notes".into(),
                doctype: "io.cozy.notes".into(),
                values: vec!["n1".into()],
                add: "sync".into(),
                ..Default::default()
            }],
            credentials: vec![Credentials {
                state: "secret-state".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let view = sharing.api_view();
        assert_eq!(view["id"], "s1");
        assert_eq!(view["attributes"]["owner"], true);
        assert_eq!(view["attributes"]["rules"][0]["doctype"], "io.cozy.notes");
        assert!(!view.to_string().contains("secret-state"));
        assert!(!sharing.read_only_rules());
        let parsed: Sharing = serde_json::from_value(serde_json::to_value(&sharing).unwrap()).unwrap();
        assert_eq!(parsed, sharing);
    }
}
