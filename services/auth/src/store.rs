//! The auth service's tables. `auth.events` is the source of truth; the instance and session
//! tables are its projection.

use cocon_proto::events::v1::PermissionRule;
use cocon_storage::bytes::{Bytes, BytesMut};
use cocon_storage::table::json;
use cocon_storage::{Schema, Table, json_table};
use serde::{Deserialize, Serialize};

pub const EVENTS: &str = "auth.events";
pub const OUTBOX: &str = "auth.outbox";
/// Projection: every instance, by domain → [`InstanceRecord`].
pub struct Instances;

/// Every instance sits in one partition, so they list in domain order.
pub const BY_DOMAIN: &[u8] = b"by_domain";

impl Schema for Instances {
    const NAME: &'static str = "auth.instances";
    const VERSION: u8 = 1;
    type Partition<'a> = ();
    /// The domain.
    type Sort<'a> = &'a str;
    type Row = InstanceRecord;

    fn partition(_: ()) -> Vec<u8> {
        BY_DOMAIN.to_vec()
    }

    fn sort(domain: &str) -> Vec<u8> {
        domain.as_bytes().to_vec()
    }

    fn encode(row: &InstanceRecord, out: &mut BytesMut) {
        json::encode(row, out)
    }

    fn decode(_version: u8, payload: Bytes) -> Result<InstanceRecord, String> {
        json::decode(payload)
    }
}

pub const INSTANCES: Table<Instances> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = session id → [`SessionRecord`]. Ended
    /// sessions are deleted; expired ones are refused on use and dropped by the next logout or
    /// rebuild.
    pub Sessions: "auth.sessions", version 1, SessionRecord
);
pub const SESSIONS: Table<Sessions> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = client id → [`ClientRecord`].
    pub Clients: "auth.clients", version 1, ClientRecord
);
pub const CLIENTS: Table<Clients> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = SHA-256 of the code (hex) → [`CodeRecord`].
    /// Spent codes are deleted; expired ones are dropped when the next code is issued.
    pub Codes: "auth.codes", version 1, CodeRecord
);
pub const CODES: Table<Codes> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = grant id → [`GrantRecord`].
    pub Grants: "auth.grants", version 1, GrantRecord
);
pub const GRANTS: Table<Grants> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = permission set id → [`PermissionRecord`].
    pub Permissions: "auth.permissions", version 1, PermissionRecord
);
pub const PERMISSIONS: Table<Permissions> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = SHA-256 of a sharing-link code or shortcode
    /// (hex) → [`ShareCodeRow`]: how a code used as a bearer token finds its permission set.
    pub ShareCodes: "auth.share_codes", version 1, ShareCodeRow
);
pub const SHARE_CODES: Table<ShareCodes> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = token id → [`CliTokenRecord`]: the CLI
    /// tokens that may be used. Revoked ones are deleted; expired ones are dropped when the
    /// next is issued.
    pub CliTokens: "auth.cli_tokens", version 1, CliTokenRecord
);
pub const CLI_TOKENS: Table<CliTokens> = Table::new();

json_table!(
    /// Projection: partition = instance id, sort = `""` → the instance's domain: what services
    /// that know an instance by its id (its events name it so) ask the auth service about.
    pub InstanceIds: "auth.instance_ids", version 1, String
);
pub const INSTANCE_IDS: Table<InstanceIds> = Table::new();

/// Projection tables, cleared by a rebuild.
pub const PROJECTIONS: [&str; 9] = [
    Instances::NAME,
    InstanceIds::NAME,
    Sessions::NAME,
    Clients::NAME,
    Codes::NAME,
    Grants::NAME,
    Permissions::NAME,
    ShareCodes::NAME,
    CliTokens::NAME,
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub domain: String,
    pub created_at: i64,
    /// The sealed argon2id hash of the client-side passphrase hash, hex; `None` until onboarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// PBKDF2 iterations of the client-side hash; 0 until onboarding.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kdf_iterations: u32,
    /// The pending onboarding link, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarding: Option<Onboarding>,
    /// Two-factor, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactor>,
    /// A TOTP secret proposed but not confirmed yet (sealed, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor_proposed: Option<String>,
    /// Bytes the instance's files may take; 0 for no limit.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub disk_quota: u64,
    /// Where Cocon's own mails go, and their language; empty when not given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locale: String,
    /// The person's settings (`/settings/instance`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_redirection: String,
    /// How many times the settings changed: their revision's generation.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub settings_changes: u64,
    /// The configuration's context the instance belongs to; empty: `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context: String,
    /// The group a roster put the person in (a school class; a teacher's, several, `;` apart).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class: String,
    /// `teacher` for a roster's teacher, else empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
}

impl InstanceRecord {
    /// The instance's context (`default` for one created without).
    pub fn context(&self) -> &str {
        if self.context.is_empty() {
            cocon_common::context::DEFAULT
        } else {
            &self.context
        }
    }

    /// The settings' revision as cozy shows it (`N-hash`): it changes with each change.
    pub fn settings_rev(&self) -> String {
        let fields = [
            self.public_name.as_str(),
            &self.email,
            &self.locale,
            &self.timezone,
            &self.default_redirection,
        ]
        .join("\u{0}");
        let hash = crate::secret::sha256_hex(&format!("{}\u{0}{fields}", self.settings_changes));
        format!("{}-{}", self.settings_changes + 1, &hash[..16])
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TwoFactor {
    /// The TOTP secret, sealed, hex.
    pub secret: String,
    /// The last time step a code was accepted for: older and equal steps are refused (replay).
    pub last_step: u64,
    /// SHA-256 (hex) of the recovery codes not used yet.
    pub recovery: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Onboarding {
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
    pub expires_at: i64,
    /// What the link is for: onboarding, or a passphrase reset (`true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub long_run: bool,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub remote_ip: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An OAuth client of one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: String,
    pub public: bool,
    /// SHA-256 of the client secret, hex (empty for public clients).
    pub secret_sha256: String,
    /// SHA-256 of the registration access token, hex.
    pub registration_sha256: String,
    /// The client's metadata as it registered it (JSON text).
    pub metadata: String,
    pub created_at: i64,
}

/// An authorization code waiting for its exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeRecord {
    pub sha256: String,
    pub client_id: String,
    pub scope: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expires_at: i64,
}

/// A CLI token the operator issued, by its id (the token itself is not kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CliTokenRecord {
    pub id: String,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// What the person granted a client, with its current refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub scope: String,
    pub generation: u32,
    /// SHA-256 of the current refresh token, hex.
    pub refresh_sha256: String,
    pub created_at: i64,
}

/// A permission set (`io.cozy.permissions` of type `share`): rules and the codes that open them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PermissionRecord {
    pub id: String,
    pub kind: String,
    pub source_id: String,
    pub rules: Vec<NamedRule>,
    pub codes: Vec<ShareCodeRecord>,
    /// Unix seconds; 0 for no expiry.
    pub expires_at: i64,
    /// The sealed argon2id hash of the password, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rule of a permission set, under the name the creator gave it (`rule0`, `images`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedRule {
    pub name: String,
    pub doctype: String,
    pub verbs: Vec<String>,
    pub values: Vec<String>,
    pub selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A rule as the log and the wire carry it, and back.
impl From<&PermissionRule> for NamedRule {
    fn from(r: &PermissionRule) -> NamedRule {
        NamedRule {
            name: r.name.clone(),
            doctype: r.doctype.clone(),
            verbs: r.verbs.clone(),
            values: r.values.clone(),
            selector: r.selector.clone(),
            description: r.description.clone(),
        }
    }
}

impl From<&NamedRule> for PermissionRule {
    fn from(r: &NamedRule) -> PermissionRule {
        PermissionRule {
            name: r.name.clone(),
            doctype: r.doctype.clone(),
            verbs: r.verbs.clone(),
            values: r.values.clone(),
            selector: r.selector.clone(),
            description: r.description.clone(),
        }
    }
}

/// One named code of a permission set; the plain codes are sealed under the instance's key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareCodeRecord {
    pub name: String,
    pub sha256: String,
    pub short_sha256: String,
    pub sealed: String,
    pub sealed_short: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareCodeRow {
    pub permission_id: String,
}
