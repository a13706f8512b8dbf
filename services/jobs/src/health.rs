//! Connector health, beyond cozy-stack: what kind of failure a konnector's last error was,
//! whether its automatic runs are held (after `LOGIN_FAILED` or `USER_ACTION_NEEDED` until its
//! account changes; after repeated failures for a growing while), and when it runs next.
//! Manual runs are never held: they are how the person tries again.

use std::time::Duration;

use cocon_proto::events::v1::Trigger;
use serde_json::Value;

use crate::error::Result;
use crate::service::JobsService;
use crate::tables::ACCOUNTS_CHANGED;
use crate::triggers::TriggerState;

/// The kinds of failure, for people (`current_state.last_error_kind`) and for metrics.
pub fn error_kind(error: &str) -> &'static str {
    if error.starts_with("LOGIN_FAILED") {
        "login_failed"
    } else if error.starts_with("USER_ACTION_NEEDED") {
        "user_action_needed"
    } else if error.starts_with("VENDOR_DOWN") {
        "vendor_down"
    } else if error.contains("time limit") {
        "timeout"
    } else if error.starts_with("the konnector exited with") || error.starts_with("cannot start the konnector") {
        "crash"
    } else {
        "error"
    }
}

/// Failures in a row after which automatic runs wait, and the first wait (doubling since).
const BACKOFF_AFTER: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(7 * 86_400);

/// Why automatic runs are held, if they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Until the account changes (the person fixes the password, accepts the terms).
    UntilAccountChanges(&'static str),
    /// Until this time (µs), after repeated failures.
    Until(i64),
}

impl Hold {
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::UntilAccountChanges(kind) => kind,
            Hold::Until(_) => "backoff",
        }
    }
}

/// The account a konnector trigger logs in with.
pub fn account_of(trigger: &Trigger) -> Option<String> {
    let message: Value = serde_json::from_slice(&trigger.message).ok()?;
    message.get("account")?.as_str().map(str::to_string)
}

impl JobsService {
    /// Whether the automatic runs of a konnector trigger are held, given its state.
    pub(crate) async fn hold_of(
        &self,
        instance: &str,
        trigger: &Trigger,
        state: &TriggerState,
    ) -> Result<Option<Hold>> {
        if trigger.worker != "konnector" || state.status != "errored" {
            return Ok(None);
        }
        let kind = error_kind(&state.last_error);
        if kind == "login_failed" || kind == "user_action_needed" {
            let changed = match account_of(trigger) {
                Some(account) => ACCOUNTS_CHANGED
                    .get(self.store(), instance, &account)
                    .await?
                    .unwrap_or(0),
                None => 0,
            };
            if changed <= state.last_failure_us {
                return Ok(Some(Hold::UntilAccountChanges(kind)));
            }
            return Ok(None);
        }
        if state.consecutive_failures >= BACKOFF_AFTER {
            let doublings = (state.consecutive_failures - BACKOFF_AFTER).min(20);
            let wait = FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF);
            let until = state.last_failure_us + wait.as_micros() as i64;
            if until > cocon_common::time::now_us() {
                return Ok(Some(Hold::Until(until)));
            }
        }
        Ok(None)
    }

    /// An account was deleted: its konnector triggers go, and each konnector whose manifest
    /// has an `on_delete_account` script runs it (`{"account", "konnector",
    /// "account_deleted": true}`), once per deletion even if the event comes again.
    pub(crate) async fn account_deleted(
        &self,
        instance: &str,
        event_id: &str,
        occurred_at_us: i64,
        account: &str,
        doc: &Value,
    ) -> Result<()> {
        let mut slugs: Vec<String> = Vec::new();
        let mut gone = Vec::new();
        for trigger in crate::tables::TRIGGERS.rows(self.store(), instance).await? {
            if trigger.worker != "konnector" || account_of(&trigger).as_deref() != Some(account) {
                continue;
            }
            let message: Value = serde_json::from_slice(&trigger.message).unwrap_or(Value::Null);
            if let Some(slug) = message.get("konnector").and_then(Value::as_str) {
                slugs.push(slug.to_string());
            }
            gone.push(trigger.id);
        }
        if let Some(kind) = doc.get("account_type").and_then(Value::as_str) {
            slugs.push(kind.to_string());
        }
        slugs.sort();
        slugs.dedup();
        for id in gone {
            match self.delete_trigger(instance, &id).await {
                Ok(()) | Err(crate::error::JobsError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        for slug in slugs {
            let Some(konnector) = crate::tables::KONNECTORS.get(self.store(), instance, &slug).await? else {
                continue;
            };
            let manifest: Value = serde_json::from_slice(&konnector.manifest).unwrap_or(Value::Null);
            if manifest.get("on_delete_account").is_none() {
                continue;
            }
            let message = serde_json::json!({"account": account, "konnector": slug, "account_deleted": true});
            let new = crate::jobs::NewJob {
                id: crate::consumer::job_id_for(event_id, &slug, occurred_at_us),
                domain: konnector.domain.clone(),
                worker: "konnector".into(),
                message: serde_json::to_vec(&message).expect("JSON writes").into(),
                ..Default::default()
            };
            self.push_job(instance, new).await?;
        }
        Ok(())
    }

    /// Records that an account changed (an `io.cozy.accounts` event): its konnector's runs
    /// held for its credentials go on.
    pub(crate) async fn account_changed(&self, instance: &str, account: &str, at_us: i64) -> Result<()> {
        // An event delivered again, or late, never moves the time back.
        if ACCOUNTS_CHANGED
            .get(self.store(), instance, account)
            .await?
            .unwrap_or(0)
            >= at_us
        {
            return Ok(());
        }
        let mut batch = cocon_storage::Batch::new();
        ACCOUNTS_CHANGED.put(&mut batch, instance, account, &at_us);
        self.store().apply(batch).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_failures_have_kinds() {
        use super::error_kind;
        assert_eq!(error_kind("LOGIN_FAILED"), "login_failed");
        assert_eq!(error_kind("LOGIN_FAILED.TOO_MANY_ATTEMPTS"), "login_failed");
        assert_eq!(error_kind("USER_ACTION_NEEDED.CGU_FORM"), "user_action_needed");
        assert_eq!(error_kind("VENDOR_DOWN"), "vendor_down");
        assert_eq!(
            error_kind("the job ran past its time limit (300 s) and was stopped"),
            "timeout"
        );
        assert_eq!(
            error_kind("the konnector exited with exit status: 1: TypeError"),
            "crash"
        );
        assert_eq!(error_kind("cannot save: 403"), "error");
    }
}
