//! Permission sets of type `share` (`io.cozy.permissions`): rules that a CLI or OAuth token
//! hands on, with named codes that work as bearer tokens (sharing links). A set never grants
//! more than its creator holds, and only its creator, or a token holding all its rules, may
//! read, change or delete it. Codes are random, kept sealed for the owner to read again, and
//! looked up by their SHA-256.

use cocon_common::scope::{self, Rule};
use cocon_common::time::{now_secs, parse_rfc3339, parse_ttl, rfc3339};
use cocon_proto::events::v1::{PermissionDeleted, PermissionRule, PermissionSaved, ShareCode, envelope::Payload};
use serde_json::{Map, Value, json};

use crate::store::{
    CLI_TOKENS, InstanceRecord, NamedRule, PERMISSIONS, PermissionRecord, SHARE_CODES, ShareCodeRecord, ShareCodeRow,
};
use crate::{AuthError, AuthService, secret, token};

/// Sharing-link codes: 32 letters and digits (~190 bits); shortcodes: 12 (~71 bits), short
/// enough to type, long enough that the rate-limited guessing never gets near.
const CODE_CHARS: usize = 32;
const SHORTCODE_CHARS: usize = 12;
const MAX_RULES: usize = 100;
const MAX_CODES: usize = 100;
const MAX_NAME_CHARS: usize = 256;

/// Who is behind a bearer token.
pub(crate) struct Bearer {
    pub rules: Vec<Rule>,
    /// `cli`, `oauth` or `share`.
    pub kind: &'static str,
    pub client_id: String,
    pub permission_id: String,
    /// The id of a CLI token.
    pub token_id: String,
    pub expires_at: i64,
}

impl Bearer {
    /// What a permission set created by this bearer names as its source (codes never create):
    /// the OAuth client, or the CLI token itself; each is its own principal.
    fn source_id(&self) -> String {
        match self.kind {
            "oauth" => format!("io.cozy.oauth.clients/{}", self.client_id),
            _ => format!("cli/{}", self.token_id),
        }
    }
}

/// The attributes of a JSON-API permission body.
fn attributes(body_json: &str) -> Result<Map<String, Value>, AuthError> {
    let bad = |m: &str| AuthError::InvalidRequest(m.to_string());
    let body: Value = serde_json::from_str(body_json).map_err(|e| bad(&format!("the body is not JSON: {e}")))?;
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("the body needs a JSON-API `data` object"))?;
    if let Some(kind) = data.get("type")
        && kind != cocon_common::cozy::doctype::PERMISSIONS
    {
        return Err(bad("`data.type` must be io.cozy.permissions"));
    }
    let mut attributes = match data.get("attributes") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(bad("`data.attributes` must be an object")),
    };
    // cozy-stack's PATCH puts the rules next to the attributes; both places are read.
    if let Some(rules) = data.get("permissions") {
        attributes.insert("permissions".into(), rules.clone());
    }
    Ok(attributes)
}

fn strings(value: Option<&Value>, what: &str) -> Result<Vec<String>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| AuthError::InvalidRequest(format!("`{what}` must hold strings")))
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidRequest(format!(
            "`{what}` must be an array of strings"
        ))),
    }
}

/// One rule of the `permissions` map; `None` for `{}` (remove it, on PATCH).
fn parse_rule(name: &str, value: &Value) -> Result<Option<NamedRule>, AuthError> {
    let obj = value
        .as_object()
        .ok_or_else(|| AuthError::InvalidRequest(format!("rule {name:?} must be an object")))?;
    if obj.is_empty() {
        return Ok(None);
    }
    let text = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut verbs = strings(obj.get("verbs"), "verbs")?;
    if verbs.iter().any(|v| v == "ALL") {
        verbs.clear();
    }
    verbs.sort_by_key(|v| scope::VERBS.iter().position(|k| k == v));
    verbs.dedup();
    let rule = NamedRule {
        name: name.to_string(),
        doctype: text("type"),
        verbs,
        values: strings(obj.get("values"), "values")?,
        selector: text("selector"),
        description: text("description"),
    };
    plain(&rule)
        .validate()
        .map_err(|e| AuthError::InvalidScope(format!("rule {name:?}: {e}")))?;
    Ok(Some(rule))
}

fn plain(rule: &NamedRule) -> Rule {
    Rule {
        doctype: rule.doctype.clone(),
        verbs: rule.verbs.clone(),
        values: rule.values.clone(),
        selector: rule.selector.clone(),
    }
}

fn check_name(name: &str, what: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(format!(
            "{what} names must be 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(())
}

/// `expires_at` of the attributes: an RFC 3339 date or Unix seconds; `Some(0)` for `null`.
fn expiry(value: Option<&Value>) -> Result<Option<i64>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(0)),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| AuthError::InvalidRequest("`expires_at` must be a date".into())),
        Some(Value::String(s)) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| AuthError::InvalidRequest(format!("`expires_at` {s:?} is not an RFC 3339 date"))),
        Some(_) => Err(AuthError::InvalidRequest("`expires_at` must be a date".into())),
    }
}

impl AuthService {
    /// The caller behind a bearer token of this instance: a signed token, or a sharing-link
    /// code (anything without a dot), which needs the proof of its password if it has one.
    pub(crate) async fn bearer(
        &self,
        record: &InstanceRecord,
        bearer: &str,
        share_passes: &[String],
    ) -> Result<Bearer, AuthError> {
        if !bearer.contains('.') {
            return self.share_bearer(record, bearer, share_passes).await;
        }
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        let claims = token::verify(&secret, bearer, &record.domain)?;
        if claims.sub != record.id {
            return Err(AuthError::InvalidToken("the token belongs to another instance".into()));
        }
        if claims.aud == token::ACCESS {
            self.check_grant(&record.id, &claims).await?;
        }
        let token_id = if claims.aud == token::ACCESS {
            String::new()
        } else {
            let id = token::token_id(bearer);
            self.check_cli_token(&record.id, &id).await?;
            id
        };
        let rules = scope::parse_scope(&claims.scope)
            .map_err(|_| AuthError::InvalidToken("the token's scope is malformed".into()))?;
        Ok(Bearer {
            rules,
            kind: if claims.aud == token::ACCESS { "oauth" } else { "cli" },
            client_id: claims.client_id,
            permission_id: String::new(),
            token_id,
            expires_at: claims.exp,
        })
    }

    /// A CLI token is accepted only while the event log records it as issued and not revoked.
    async fn check_cli_token(&self, instance: &str, id: &str) -> Result<(), AuthError> {
        match self.row(CLI_TOKENS, instance, id).await? {
            Some(_) => Ok(()),
            None => Err(AuthError::InvalidToken(
                "this token was revoked (or issued before tokens could be revoked): issue a new one with `cocon instances token-cli`"
                    .into(),
            )),
        }
    }

    async fn share_bearer(
        &self,
        record: &InstanceRecord,
        code: &str,
        share_passes: &[String],
    ) -> Result<Bearer, AuthError> {
        let unknown = || AuthError::InvalidToken("unknown or revoked sharing code".into());
        if code.is_empty() || code.len() > 128 {
            return Err(unknown());
        }
        let row: ShareCodeRow = self
            .row(SHARE_CODES, &record.id, &secret::sha256_hex(code))
            .await?
            .ok_or_else(unknown)?;
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, &row.permission_id)
            .await?
            .ok_or_else(unknown)?;
        if set.expires_at != 0 && set.expires_at <= now_secs() {
            return Err(AuthError::InvalidToken("this sharing link has expired".into()));
        }
        if let Some(sealed) = &set.password {
            let secret = token::instance_secret(&self.inner().master_key, &record.id);
            // A proof holds for the password it was given for: a new password needs a new proof.
            let unlocked = share_passes
                .iter()
                .any(|p| secret::share_pass_opens(&secret, p, &set.id, sealed));
            if !unlocked {
                return Err(AuthError::Denied(
                    "this sharing link is protected by a password: send it to POST /auth/share-by-link/password first"
                        .into(),
                ));
            }
        }
        Ok(Bearer {
            rules: set.rules.iter().map(plain).collect(),
            kind: "share",
            client_id: String::new(),
            token_id: String::new(),
            // Cached by the gateway at most this long, and never past the set's expiry.
            expires_at: if set.expires_at == 0 {
                now_secs() + 86_400
            } else {
                set.expires_at
            },
            permission_id: set.id,
        })
    }

    /// A caller that may create and manage permission sets (not a sharing-link code).
    async fn manager(&self, domain: &str, bearer: &str) -> Result<(InstanceRecord, Bearer), AuthError> {
        let record = self.lookup(domain).await?;
        if bearer.is_empty() {
            return Err(AuthError::InvalidToken("this route needs a token".into()));
        }
        let caller = self.bearer(&record, bearer, &[]).await?;
        if caller.kind == "share" {
            return Err(AuthError::Denied(
                "a sharing-link code cannot manage permissions".into(),
            ));
        }
        Ok((record, caller))
    }

    /// A set the caller may see and change: one it created, or one within its own rules.
    async fn managed_set(
        &self,
        record: &InstanceRecord,
        caller: &Bearer,
        id: &str,
    ) -> Result<PermissionRecord, AuthError> {
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, id)
            .await?
            .ok_or_else(|| AuthError::NoSuchPermission(id.to_string()))?;
        if !Self::may_manage(caller, &set) {
            return Err(AuthError::Denied(
                "this permission set was made by another token or client and grants more than your token".into(),
            ));
        }
        Ok(set)
    }

    /// cozy-stack's rule: a set is seen (with its codes) and managed by its creator, or by a
    /// caller whose own rules cover every rule of it.
    fn may_manage(caller: &Bearer, set: &PermissionRecord) -> bool {
        let rules: Vec<Rule> = set.rules.iter().map(plain).collect();
        set.source_id == caller.source_id() || scope::covers(&caller.rules, &rules)
    }

    fn check_subset(caller: &Bearer, rules: &[NamedRule]) -> Result<(), AuthError> {
        for rule in rules {
            if !caller.rules.iter().any(|own| own.covers(&plain(rule))) {
                return Err(AuthError::Denied(format!(
                    "rule {:?} ({}) grants more than your token holds",
                    rule.name,
                    plain(rule).to_scope()
                )));
            }
        }
        Ok(())
    }

    fn new_code(&self, instance: &str, name: &str) -> (ShareCode, String, String) {
        let master = &self.inner().master_key;
        let code = secret::random_code(CODE_CHARS);
        let short = secret::random_code(SHORTCODE_CHARS);
        let sha = |s: &str| hex::decode(secret::sha256_hex(s)).expect("hex of a digest");
        (
            ShareCode {
                name: name.to_string(),
                code_sha256: sha(&code).into(),
                shortcode_sha256: sha(&short).into(),
                sealed_code: secret::seal(master, instance, code.as_bytes()).into(),
                sealed_shortcode: secret::seal(master, instance, short.as_bytes()).into(),
            },
            code,
            short,
        )
    }

    /// The link's password hashed (argon2id, on the blocking pool: it takes tens of
    /// milliseconds of CPU) and sealed.
    async fn sealed_password(&self, instance: &str, password: &str) -> Result<Vec<u8>, AuthError> {
        if password.chars().count() < 4 {
            return Err(AuthError::InvalidRequest(
                "a link's password needs at least 4 characters".into(),
            ));
        }
        let password = password.to_string();
        let phc = tokio::task::spawn_blocking(move || secret::hash_passphrase(&password))
            .await
            .map_err(|e| AuthError::Corrupt(format!("link password hash: {e}")))??;
        Ok(secret::seal(&self.inner().master_key, instance, phc.as_bytes()))
    }

    /// `POST /permissions?codes=…&ttl=…`: a new set within the caller's rights.
    pub async fn create_permission(
        &self,
        domain: &str,
        bearer: &str,
        body_json: &str,
        codes: &[String],
        ttl: &str,
    ) -> Result<String, AuthError> {
        let (record, caller) = self.manager(domain, bearer).await?;
        let attrs = attributes(body_json)?;
        let rules = match attrs.get("permissions") {
            Some(Value::Object(map)) => {
                let mut rules = Vec::new();
                for (name, value) in map {
                    check_name(name, "rule")?;
                    rules.extend(parse_rule(name, value)?);
                }
                rules
            }
            _ => Vec::new(),
        };
        if rules.is_empty() || rules.len() > MAX_RULES {
            return Err(AuthError::InvalidRequest(format!(
                "`data.attributes.permissions` must name 1 to {MAX_RULES} rules"
            )));
        }
        Self::check_subset(&caller, &rules)?;
        if codes.len() > MAX_CODES {
            return Err(AuthError::InvalidRequest(format!("at most {MAX_CODES} codes at once")));
        }
        let mut names: Vec<&String> = codes.iter().collect();
        names.sort();
        names.dedup();
        for name in &names {
            check_name(name, "code")?;
        }
        let mut expires_at = expiry(attrs.get("expires_at"))?.unwrap_or(0);
        if !ttl.is_empty() {
            let secs = parse_ttl(ttl).ok_or_else(|| {
                AuthError::InvalidRequest(format!("ttl {ttl:?} is not a duration like 1D, 12h or 1W"))
            })?;
            expires_at = now_secs().saturating_add(secs.min(100 * 365 * 86_400) as i64);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let password = match attrs.get("password").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => self.sealed_password(&record.id, p).await?,
            _ => Vec::new(),
        };
        let mut plain_codes = Vec::new();
        let mut share_codes = Vec::new();
        for name in names {
            let (code, plain_code, short) = self.new_code(&record.id, name);
            share_codes.push(code);
            plain_codes.push((name.clone(), plain_code, short));
        }
        let event = PermissionSaved {
            id: id.clone(),
            kind: "share".into(),
            source_id: caller.source_id(),
            rules: rules.iter().map(rule_pb).collect(),
            codes: share_codes,
            expires_at,
            sealed_password_hash: password.into(),
        };
        let _writer = self.stripe(&record.id).lock().await;
        self.append_one(&record, "permission", "created", Payload::PermissionSaved(event))
            .await?;
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, &id)
            .await?
            .ok_or_else(|| AuthError::Corrupt("a permission set vanished after its creation".into()))?;
        tracing::info!(instance = %record.id, permission = %id, codes = plain_codes.len(), "permission set created");
        self.view(&record, &set)
    }

    pub async fn get_permission(&self, domain: &str, bearer: &str, id: &str) -> Result<String, AuthError> {
        let (record, caller) = self.manager(domain, bearer).await?;
        let set = self.managed_set(&record, &caller, id).await?;
        self.view(&record, &set)
    }

    /// `PATCH /permissions/:id`: add or remove rules (`{}` removes one), replace the codes by
    /// those named (existing names keep their code), change the expiry or the password.
    pub async fn patch_permission(
        &self,
        domain: &str,
        bearer: &str,
        id: &str,
        body_json: &str,
    ) -> Result<String, AuthError> {
        let (record, caller) = self.manager(domain, bearer).await?;
        let attrs = attributes(body_json)?;
        // A new password is hashed before the writer lock is taken.
        let new_password = match attrs.get("password") {
            None => None,
            Some(Value::String(p)) if !p.is_empty() => Some(self.sealed_password(&record.id, p).await?),
            Some(Value::Null) | Some(Value::String(_)) => Some(Vec::new()),
            Some(_) => return Err(AuthError::InvalidRequest("`password` must be a string or null".into())),
        };
        let _writer = self.stripe(&record.id).lock().await;
        let set = self.managed_set(&record, &caller, id).await?;
        let mut rules = set.rules.clone();
        if let Some(value) = attrs.get("permissions") {
            let map = value
                .as_object()
                .ok_or_else(|| AuthError::InvalidRequest("`permissions` must be an object".into()))?;
            let mut added = Vec::new();
            for (name, value) in map {
                check_name(name, "rule")?;
                rules.retain(|r| r.name != *name);
                if let Some(rule) = parse_rule(name, value)? {
                    added.push(rule.clone());
                    rules.push(rule);
                }
            }
            Self::check_subset(&caller, &added)?;
        }
        if rules.is_empty() || rules.len() > MAX_RULES {
            return Err(AuthError::InvalidRequest(format!(
                "a permission set keeps 1 to {MAX_RULES} rules; delete it instead"
            )));
        }
        let mut codes: Vec<ShareCode> = set.codes.iter().map(code_pb).collect::<Result<_, _>>()?;
        if let Some(value) = attrs.get("codes") {
            let wanted = value
                .as_object()
                .ok_or_else(|| AuthError::InvalidRequest("`codes` must be an object of names".into()))?;
            if wanted.len() > MAX_CODES {
                return Err(AuthError::InvalidRequest(format!("at most {MAX_CODES} codes")));
            }
            codes.retain(|c| wanted.contains_key(&c.name));
            for name in wanted.keys() {
                check_name(name, "code")?;
                if !codes.iter().any(|c| c.name == *name) {
                    codes.push(self.new_code(&record.id, name).0);
                }
            }
        }
        let expires_at = expiry(attrs.get("expires_at"))?.unwrap_or(set.expires_at);
        let password = match new_password {
            None => match &set.password {
                Some(sealed) => hex::decode(sealed).map_err(|e| AuthError::Corrupt(e.to_string()))?,
                None => Vec::new(),
            },
            Some(sealed) => sealed,
        };
        let event = PermissionSaved {
            id: set.id.clone(),
            kind: set.kind.clone(),
            source_id: set.source_id.clone(),
            rules: rules.iter().map(rule_pb).collect(),
            codes,
            expires_at,
            sealed_password_hash: password.into(),
        };
        self.append_one(&record, "permission", "updated", Payload::PermissionSaved(event))
            .await?;
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, id)
            .await?
            .ok_or_else(|| AuthError::Corrupt("a permission set vanished after its update".into()))?;
        self.view(&record, &set)
    }

    pub async fn delete_permission(&self, domain: &str, bearer: &str, id: &str) -> Result<(), AuthError> {
        let (record, caller) = self.manager(domain, bearer).await?;
        let _writer = self.stripe(&record.id).lock().await;
        self.managed_set(&record, &caller, id).await?;
        self.append_one(
            &record,
            "permission",
            "deleted",
            Payload::PermissionDeleted(PermissionDeleted { id: id.to_string() }),
        )
        .await?;
        tracing::info!(instance = %record.id, permission = %id, "permission set deleted");
        Ok(())
    }

    /// The sets that share documents of `doctype` by link that the caller may see: it needs GET
    /// on the whole doctype, and sees only the sets it made or whose every rule it holds.
    pub async fn list_shared_by_link(
        &self,
        domain: &str,
        bearer: &str,
        doctype: &str,
    ) -> Result<Vec<String>, AuthError> {
        let (record, caller) = self.manager(domain, bearer).await?;
        if scope::grant(&caller.rules, "GET", doctype, None) != scope::Grant::Whole {
            return Err(AuthError::Denied(format!(
                "listing the links of {doctype} needs GET on the whole doctype"
            )));
        }
        let sets: Vec<PermissionRecord> = self.rows(PERMISSIONS, &record.id).await?;
        sets.iter()
            .filter(|s| s.kind == "share" && s.rules.iter().any(|r| scope::doctype_matches(&r.doctype, doctype)))
            .filter(|s| Self::may_manage(&caller, s))
            .map(|s| self.view(&record, s))
            .collect()
    }

    /// Whether a grantor that a secret was bound to still holds its rights (see
    /// `cocon_common::bound`): a set that exists and has not expired, a registered client, a
    /// CLI token neither revoked nor expired.
    pub async fn grantor_alive(&self, domain: &str, grantor: &str) -> Result<bool, AuthError> {
        let record = self.lookup(domain).await?;
        let now = now_secs();
        Ok(match grantor.split_once('-') {
            Some(("p", id)) => self
                .row(PERMISSIONS, &record.id, id)
                .await?
                .is_some_and(|set| set.expires_at == 0 || set.expires_at > now),
            Some(("c", id)) => self.client(&record.id, id).await?.is_some(),
            Some(("t", id)) => self
                .row(CLI_TOKENS, &record.id, id)
                .await?
                .is_some_and(|t| t.expires_at > now),
            _ => false,
        })
    }

    /// Checks the password of a protected link; the proof lets its codes in from then on.
    pub async fn unlock_share(&self, domain: &str, code: &str, password: &str) -> Result<(String, String), AuthError> {
        let record = self.lookup(domain).await?;
        let wrong = || AuthError::WrongPassphrase;
        let row: ShareCodeRow = self
            .row(SHARE_CODES, &record.id, &secret::sha256_hex(code))
            .await?
            .ok_or_else(|| AuthError::InvalidToken("unknown or revoked sharing code".into()))?;
        let set: PermissionRecord = self
            .row(PERMISSIONS, &record.id, &row.permission_id)
            .await?
            .ok_or_else(|| AuthError::InvalidToken("unknown or revoked sharing code".into()))?;
        let Some(sealed) = &set.password else {
            return Err(AuthError::InvalidRequest("this sharing link has no password".into()));
        };
        let sealed = hex::decode(sealed).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        let phc = secret::open(&self.inner().master_key, &record.id, &sealed)?;
        let phc = String::from_utf8(phc).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        let password = password.to_string();
        let right = tokio::task::spawn_blocking(move || secret::verify_passphrase(&password, &phc))
            .await
            .map_err(|e| AuthError::Corrupt(format!("link password check: {e}")))?;
        if !right {
            return Err(wrong());
        }
        let instance_secret = token::instance_secret(&self.inner().master_key, &record.id);
        let sealed_hex = set.password.as_deref().unwrap_or_default();
        Ok((
            set.id.clone(),
            secret::share_pass(&instance_secret, &set.id, sealed_hex),
        ))
    }

    /// The set as cozy-stack shows it (JSON-API resource), with its codes opened.
    fn view(&self, record: &InstanceRecord, set: &PermissionRecord) -> Result<String, AuthError> {
        let master = &self.inner().master_key;
        let open = |hex_text: &str| -> Result<String, AuthError> {
            let sealed = hex::decode(hex_text).map_err(|e| AuthError::Corrupt(e.to_string()))?;
            String::from_utf8(secret::open(master, &record.id, &sealed)?).map_err(|e| AuthError::Corrupt(e.to_string()))
        };
        let mut codes = Map::new();
        let mut shortcodes = Map::new();
        for c in &set.codes {
            codes.insert(c.name.clone(), json!(open(&c.sealed)?));
            shortcodes.insert(c.name.clone(), json!(open(&c.sealed_short)?));
        }
        let permissions: Map<String, Value> = set
            .rules
            .iter()
            .map(|r| {
                let mut rule = plain(r).to_json();
                if !r.description.is_empty() {
                    rule["description"] = json!(r.description);
                }
                (r.name.clone(), rule)
            })
            .collect();
        let mut attributes = json!({
            "type": set.kind,
            "source_id": set.source_id,
            "permissions": permissions,
            "codes": codes,
            "shortcodes": shortcodes,
            "password": set.password.is_some(),
            "cozyMetadata": {
                "createdAt": rfc3339(set.created_at),
                "updatedAt": rfc3339(set.updated_at),
            },
        });
        if set.expires_at != 0 {
            attributes["expires_at"] = json!(rfc3339(set.expires_at));
        }
        Ok(json!({
            "type": cocon_common::cozy::doctype::PERMISSIONS,
            "id": set.id,
            "attributes": attributes,
            "meta": {},
            "links": {"self": format!("/permissions/{}", set.id)},
        })
        .to_string())
    }
}

fn rule_pb(r: &NamedRule) -> PermissionRule {
    PermissionRule {
        name: r.name.clone(),
        doctype: r.doctype.clone(),
        verbs: r.verbs.clone(),
        values: r.values.clone(),
        selector: r.selector.clone(),
        description: r.description.clone(),
    }
}

fn code_pb(c: &ShareCodeRecord) -> Result<ShareCode, AuthError> {
    let bytes = |h: &str| hex::decode(h).map_err(|e| AuthError::Corrupt(e.to_string()));
    Ok(ShareCode {
        name: c.name.clone(),
        code_sha256: bytes(&c.sha256)?.into(),
        shortcode_sha256: bytes(&c.short_sha256)?.into(),
        sealed_code: bytes(&c.sealed)?.into(),
        sealed_shortcode: bytes(&c.sealed_short)?.into(),
    })
}
