//! Permission sets of type `share` (`io.cozy.permissions`): rules that a CLI or OAuth token
//! hands on, with named codes that work as bearer tokens (sharing links). A set never grants
//! more than its creator holds, and only its creator, or a token holding all its rules, may
//! read, change or delete it. Codes are random, kept sealed for the owner to read again, and
//! looked up by their SHA-256.

use cocon_common::scope::{self, Rule};
use cocon_common::time::{now_secs, parse_ttl};
use cocon_proto::auth::v1 as pb;
use cocon_proto::events::v1::{PermissionDeleted, PermissionRule, PermissionSaved, ShareCode, envelope::Payload};

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
/// Who calls a permission route: the bearer token and, for a web app's token, the cookie of
/// the session it was issued for (an app token works only with its live session).
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    pub token: &'a str,
    pub session: &'a str,
}

impl<'a> Credentials<'a> {
    pub fn new(token: &'a str, session: &'a str) -> Self {
        Credentials { token, session }
    }
}

impl<'a> From<&'a str> for Credentials<'a> {
    fn from(token: &'a str) -> Self {
        Credentials { token, session: "" }
    }
}

impl<'a> From<&'a String> for Credentials<'a> {
    fn from(token: &'a String) -> Self {
        Credentials { token, session: "" }
    }
}

pub(crate) struct Bearer {
    pub rules: Vec<Rule>,
    /// `cli`, `oauth`, `share`, `konnector` or `app`.
    pub kind: &'static str,
    pub client_id: String,
    pub permission_id: String,
    /// The id of a CLI token.
    pub token_id: String,
    /// A konnector token's konnector.
    pub slug: String,
    pub expires_at: i64,
}

impl Bearer {
    /// What a permission set created by this bearer names as its source (codes never create):
    /// the OAuth client, or the CLI token itself; each is its own principal.
    fn source_id(&self) -> String {
        match self.kind {
            "oauth" => format!("io.cozy.oauth.clients/{}", self.client_id),
            "app" => format!("{}/{}", cocon_common::cozy::doctype::APPS, self.slug),
            _ => format!("cli/{}", self.token_id),
        }
    }
}

/// A rule as a request names it, checked against the scope grammar; verbs in the grammar's
/// order, `ALL` as none.
pub(crate) fn checked_rule(rule: &PermissionRule) -> Result<NamedRule, AuthError> {
    check_name(&rule.name, "rule")?;
    let mut rule = NamedRule::from(rule);
    if rule.verbs.iter().any(|v| v == "ALL") {
        rule.verbs.clear();
    }
    rule.verbs.sort_by_key(|v| scope::VERBS.iter().position(|k| k == v));
    rule.verbs.dedup();
    plain(&rule)
        .validate()
        .map_err(|e| AuthError::InvalidScope(format!("rule {:?}: {e}", rule.name)))?;
    Ok(rule)
}

pub(crate) fn plain(rule: &NamedRule) -> Rule {
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

impl AuthService {
    /// The caller behind a bearer token of this instance: a signed token, or a sharing-link
    /// code (anything without a dot), which needs the proof of its password if it has one.
    pub(crate) async fn bearer(
        &self,
        record: &InstanceRecord,
        bearer: &str,
        share_passes: &[String],
        session_id: &str,
    ) -> Result<Bearer, AuthError> {
        if !bearer.contains('.') {
            return self.share_bearer(record, bearer, share_passes).await;
        }
        let secret = token::instance_secret(&self.inner().master_key, &record.id);
        let claims = token::verify(&secret, bearer, &record.domain)?;
        if claims.sub != record.id {
            return Err(AuthError::InvalidToken("the token belongs to another instance".into()));
        }
        if claims.aud == token::APP {
            return self.app_bearer(record, claims, session_id).await;
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
        if claims.aud == token::SERVICE {
            return self.app_set_bearer(record, claims, token_id).await;
        }
        let rules = scope::parse_scope(&claims.scope)
            .map_err(|_| AuthError::InvalidToken("the token's scope is malformed".into()))?;
        Ok(Bearer {
            rules,
            kind: match claims.aud.as_str() {
                token::ACCESS => "oauth",
                token::KONNECTOR => "konnector",
                _ => "cli",
            },
            client_id: claims.client_id,
            permission_id: String::new(),
            token_id,
            slug: claims.slug,
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
            slug: String::new(),
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
    async fn manager(&self, domain: &str, by: Credentials<'_>) -> Result<(InstanceRecord, Bearer), AuthError> {
        let record = self.lookup(domain).await?;
        if by.token.is_empty() {
            return Err(AuthError::InvalidToken("this route needs a token".into()));
        }
        let session_id = match by.session {
            "" => String::new(),
            cookie => self.session_of_cookie(&record, cookie).await?.unwrap_or_default(),
        };
        let caller = self.bearer(&record, by.token, &[], &session_id).await?;
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
        bearer: impl Into<Credentials<'_>>,
        changes: &pb::PermissionChanges,
        codes: &[String],
        ttl: &str,
    ) -> Result<pb::PermissionSet, AuthError> {
        let (record, caller) = self.manager(domain, bearer.into()).await?;
        for name in &changes.rules_removed {
            check_name(name, "rule")?;
        }
        let rules = changes.rules.iter().map(checked_rule).collect::<Result<Vec<_>, _>>()?;
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
        let mut expires_at = changes.expires_at.unwrap_or(0);
        if !ttl.is_empty() {
            let secs = parse_ttl(ttl).ok_or_else(|| {
                AuthError::InvalidRequest(format!("ttl {ttl:?} is not a duration like 1D, 12h or 1W"))
            })?;
            expires_at = now_secs().saturating_add(secs.min(100 * 365 * 86_400) as i64);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let password = match changes.password.as_deref() {
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
            rules: rules.iter().map(PermissionRule::from).collect(),
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

    pub async fn get_permission(
        &self,
        domain: &str,
        bearer: impl Into<Credentials<'_>>,
        id: &str,
    ) -> Result<pb::PermissionSet, AuthError> {
        let (record, caller) = self.manager(domain, bearer.into()).await?;
        let set = self.managed_set(&record, &caller, id).await?;
        self.view(&record, &set)
    }

    /// `PATCH /permissions/:id`: add or remove rules (`{}` removes one), replace the codes by
    /// those named (existing names keep their code), change the expiry or the password.
    pub async fn patch_permission(
        &self,
        domain: &str,
        bearer: impl Into<Credentials<'_>>,
        id: &str,
        changes: &pb::PermissionChanges,
    ) -> Result<pb::PermissionSet, AuthError> {
        let (record, caller) = self.manager(domain, bearer.into()).await?;
        // A new password is hashed before the writer lock is taken.
        let new_password = match changes.password.as_deref() {
            None => None,
            Some("") => Some(Vec::new()),
            Some(p) => Some(self.sealed_password(&record.id, p).await?),
        };
        let _writer = self.stripe(&record.id).lock().await;
        let set = self.managed_set(&record, &caller, id).await?;
        let mut rules = set.rules.clone();
        for name in &changes.rules_removed {
            check_name(name, "rule")?;
            rules.retain(|r| r.name != *name);
        }
        let added = changes.rules.iter().map(checked_rule).collect::<Result<Vec<_>, _>>()?;
        Self::check_subset(&caller, &added)?;
        for rule in added {
            rules.retain(|r| r.name != rule.name);
            rules.push(rule);
        }
        if rules.is_empty() || rules.len() > MAX_RULES {
            return Err(AuthError::InvalidRequest(format!(
                "a permission set keeps 1 to {MAX_RULES} rules; delete it instead"
            )));
        }
        let mut codes: Vec<ShareCode> = set.codes.iter().map(code_pb).collect::<Result<_, _>>()?;
        if let Some(wanted) = &changes.codes {
            let wanted = &wanted.names;
            if wanted.len() > MAX_CODES {
                return Err(AuthError::InvalidRequest(format!("at most {MAX_CODES} codes")));
            }
            codes.retain(|c| wanted.contains(&c.name));
            for name in wanted {
                check_name(name, "code")?;
                if !codes.iter().any(|c| c.name == *name) {
                    codes.push(self.new_code(&record.id, name).0);
                }
            }
        }
        let expires_at = changes.expires_at.unwrap_or(set.expires_at);
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
            rules: rules.iter().map(PermissionRule::from).collect(),
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

    pub async fn delete_permission(
        &self,
        domain: &str,
        bearer: impl Into<Credentials<'_>>,
        id: &str,
    ) -> Result<(), AuthError> {
        let (record, caller) = self.manager(domain, bearer.into()).await?;
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
        bearer: impl Into<Credentials<'_>>,
        doctype: &str,
    ) -> Result<Vec<pb::PermissionSet>, AuthError> {
        let (record, caller) = self.manager(domain, bearer.into()).await?;
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

    /// The set as its maker sees it, with its codes opened.
    fn view(&self, record: &InstanceRecord, set: &PermissionRecord) -> Result<pb::PermissionSet, AuthError> {
        let master = &self.inner().master_key;
        let open = |hex_text: &str| -> Result<String, AuthError> {
            let sealed = hex::decode(hex_text).map_err(|e| AuthError::Corrupt(e.to_string()))?;
            String::from_utf8(secret::open(master, &record.id, &sealed)?).map_err(|e| AuthError::Corrupt(e.to_string()))
        };
        let codes = set
            .codes
            .iter()
            .map(|c| {
                Ok(pb::LinkCode {
                    name: c.name.clone(),
                    code: open(&c.sealed)?,
                    shortcode: open(&c.sealed_short)?,
                })
            })
            .collect::<Result<_, AuthError>>()?;
        Ok(pb::PermissionSet {
            id: set.id.clone(),
            kind: set.kind.clone(),
            source_id: set.source_id.clone(),
            rules: set.rules.iter().map(PermissionRule::from).collect(),
            codes,
            password: set.password.is_some(),
            expires_at: set.expires_at,
            created_at: set.created_at,
            updated_at: set.updated_at,
        })
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
