//! How often a webhook may be called: a count per trigger and minute, in this process.

use std::collections::HashMap;
use std::sync::Mutex;

pub struct WebhookLimits {
    per_minute: u32,
    /// (instance, trigger) → (minute, calls in it).
    counts: Mutex<HashMap<(String, String), (i64, u32)>>,
}

/// Past this many webhooks counted, those of earlier minutes are forgotten.
const PRUNE_AT: usize = 10_000;

impl WebhookLimits {
    pub fn new(per_minute: u32) -> WebhookLimits {
        WebhookLimits {
            per_minute,
            counts: Mutex::default(),
        }
    }

    /// Counts a call; false when the trigger had its calls for this minute.
    pub fn allow(&self, instance: &str, trigger: &str) -> bool {
        self.allow_at(instance, trigger, cocon_common::time::now_secs() / 60)
    }

    fn allow_at(&self, instance: &str, trigger: &str, minute: i64) -> bool {
        let mut counts = self.counts.lock().expect("webhook limits poisoned");
        if counts.len() >= PRUNE_AT {
            counts.retain(|_, (m, _)| *m == minute);
        }
        let entry = counts
            .entry((instance.to_string(), trigger.to_string()))
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_calls_past_the_limit_are_refused_per_trigger() {
        let limits = super::WebhookLimits::new(2);
        assert!(limits.allow_at("i", "t1", 7));
        assert!(limits.allow_at("i", "t1", 7));
        assert!(!limits.allow_at("i", "t1", 7));
        assert!(limits.allow_at("i", "t2", 7), "another trigger has its own count");
        assert!(limits.allow_at("i", "t1", 8), "the next minute starts afresh");
    }
}
