//! `io.cozy.accounts` credentials, sealed at rest as cozy-stack seals them: in `auth` (and in
//! `data.auth`), `password` becomes `credentials_encrypted` (the login and the password
//! together), and `secret`, `dob`, `code`, `answer`, `access_token`, `refresh_token`,
//! `appSecret` and `session` become `<name>_encrypted`; the login stays readable. Every write
//! of an account is sealed before it reaches the log, so neither the log, the tables, the bus
//! nor a listing ever holds them in the clear. Only a konnector's token reads one account
//! opened (`GET /data/io.cozy.accounts/:id`), as in cozy-stack.
//!
//! Sealed with `cocon_common::sealed` under the instance's `cocon-accounts` key, the field's
//! name as the label (a sealed value moved to another field or instance does not open).

use cocon_common::sealed::Sealer;
use cocon_common::ticket::MeshKey;
use serde_json::{Map, Value};

pub const DOCTYPE: &str = cocon_common::cozy::doctype::ACCOUNTS;

/// The fields sealed one by one, as cozy-stack lists them.
const SEALED: [&str; 8] = [
    "secret",
    "dob",
    "code",
    "answer",
    "access_token",
    "refresh_token",
    "appSecret",
    "session",
];
const SUFFIX: &str = "_encrypted";
const CREDENTIALS: &str = "credentials";

/// One instance's sealing key.
pub struct Vault {
    sealer: Sealer,
}

impl Vault {
    pub fn new(mesh_key: &MeshKey, instance: &str) -> Vault {
        Vault {
            sealer: Sealer::new(mesh_key, "cocon-accounts", instance),
        }
    }

    fn seal_value(&self, field: &str, plain: &Value) -> String {
        let msg = serde_json::to_vec(plain).expect("a JSON value serializes");
        self.sealer.seal(field, &msg)
    }

    fn open_value(&self, field: &str, sealed: &str) -> Option<Value> {
        serde_json::from_slice(&self.sealer.open(field, sealed)?).ok()
    }

    /// Seals the secrets of an account's `auth` (and `data.auth`) in place; whether anything
    /// changed. Values sealed already (`*_encrypted`) are kept, unless a clear value replaces
    /// them.
    pub fn seal(&self, doc: &mut Map<String, Value>) -> bool {
        let mut changed = false;
        if let Some(Value::Object(auth)) = doc.get_mut("auth") {
            changed |= self.seal_auth(auth);
        }
        if let Some(Value::Object(data)) = doc.get_mut("data") {
            changed |= self.seal(data);
        }
        changed
    }

    fn seal_auth(&self, auth: &mut Map<String, Value>) -> bool {
        let mut changed = false;
        if let Some(password) = auth.shift_remove("password") {
            let login = auth.get("login").cloned().unwrap_or(Value::Null);
            let pair = Value::Array(vec![login, password]);
            let sealed = self.seal_value(CREDENTIALS, &pair);
            auth.insert(format!("{CREDENTIALS}{SUFFIX}"), Value::String(sealed));
            changed = true;
        }
        for field in SEALED {
            if let Some(plain) = auth.shift_remove(field) {
                let sealed = self.seal_value(field, &plain);
                auth.insert(format!("{field}{SUFFIX}"), Value::String(sealed));
                changed = true;
            }
        }
        changed
    }

    /// Opens what [`Vault::seal`] sealed, in place, for a konnector. A value that does not open
    /// (sealed under another key, or damaged) stays sealed: the konnector sees no password and
    /// asks the person again, as with a wrong one.
    pub fn open(&self, doc: &mut Map<String, Value>) {
        if let Some(Value::Object(auth)) = doc.get_mut("auth") {
            self.open_auth(auth);
        }
        if let Some(Value::Object(data)) = doc.get_mut("data") {
            self.open(data);
        }
    }

    fn open_auth(&self, auth: &mut Map<String, Value>) {
        let sealed: Vec<String> = auth
            .iter()
            .filter(|(k, v)| k.ends_with(SUFFIX) && v.is_string())
            .map(|(k, _)| k.clone())
            .collect();
        for key in sealed {
            let field = &key[..key.len() - SUFFIX.len()];
            let Some(Value::String(text)) = auth.get(&key) else {
                continue;
            };
            let Some(plain) = self.open_value(field, text) else {
                tracing::warn!(
                    field,
                    "an account's sealed value does not open with this mesh key; left sealed"
                );
                continue;
            };
            auth.shift_remove(&key);
            if field == CREDENTIALS {
                if let Value::Array(mut pair) = plain
                    && pair.len() == 2
                {
                    let password = pair.pop().expect("two items");
                    let login = pair.pop().expect("two items");
                    if !login.is_null() {
                        auth.insert("login".into(), login);
                    }
                    auth.insert("password".into(), password);
                }
            } else {
                auth.insert(field.to_string(), plain);
            }
        }
    }
}

/// Seals an account's JSON body if it carries secrets in the clear; `None` when nothing changes.
pub fn seal_body(vault: &Vault, body: &[u8]) -> Option<Map<String, Value>> {
    let mut doc: Map<String, Value> = serde_json::from_slice(body).ok()?;
    vault.seal(&mut doc).then_some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn test_secrets_are_sealed_and_open_again_for_the_same_instance_only() {
        let key = MeshKey::random();
        let vault = Vault::new(&key, "inst-a");
        let clear = json!({
            "account_type": "bank",
            "auth": {"login": "alice", "password": "hunter2", "secret": {"otp": 123}, "region": "fr"},
            "data": {"auth": {"access_token": "at-1"}}
        });
        let mut doc = obj(clear.clone());
        assert!(vault.seal(&mut doc));
        let text = serde_json::to_string(&doc).unwrap();
        for secret in ["hunter2", "otp", "at-1"] {
            assert!(!text.contains(secret), "{secret} left in the clear: {text}");
        }
        assert_eq!(doc["auth"]["login"], "alice");
        assert_eq!(doc["auth"]["region"], "fr");
        assert!(
            doc["auth"]["credentials_encrypted"]
                .as_str()
                .unwrap()
                .starts_with("v1:")
        );
        assert!(doc["data"]["auth"]["access_token_encrypted"].is_string());
        // Sealing what is sealed changes nothing.
        assert!(!vault.seal(&mut doc.clone()));

        let mut other = doc.clone();
        Vault::new(&key, "inst-b").open(&mut other);
        assert!(
            other["auth"].get("password").is_none(),
            "another instance's key opened it"
        );

        vault.open(&mut doc);
        assert_eq!(Value::Object(doc), clear);
    }

    #[test]
    fn test_a_sealed_value_moved_to_another_field_does_not_open() {
        let vault = Vault::new(&MeshKey::random(), "inst");
        let mut doc = obj(json!({"auth": {"secret": "s", "code": "c"}}));
        vault.seal(&mut doc);
        let auth = doc["auth"].as_object_mut().unwrap();
        let secret = auth["secret_encrypted"].clone();
        auth.insert("code_encrypted".into(), secret);
        auth.insert("answer_encrypted".into(), json!("v1:garbage"));
        vault.open(&mut doc);
        assert_eq!(doc["auth"]["secret"], "s");
        assert!(doc["auth"].get("code").is_none());
        assert_eq!(doc["auth"]["answer_encrypted"], "v1:garbage");
    }
}
