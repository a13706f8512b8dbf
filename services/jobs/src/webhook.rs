//! How often a webhook may be called: a token bucket per trigger (governor), in this process:
//! `webhook_calls_per_minute` calls at once, then one more each `60 / n` seconds.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct WebhookLimits {
    limiter: DefaultKeyedRateLimiter<(String, String)>,
}

/// Past this many webhooks counted, the buckets that are full again are forgotten.
const PRUNE_AT: usize = 10_000;

impl WebhookLimits {
    pub fn new(per_minute: u32) -> WebhookLimits {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"));
        WebhookLimits {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Counts a call; false when the trigger has no call left for now.
    pub fn allow(&self, instance: &str, trigger: &str) -> bool {
        if self.limiter.len() >= PRUNE_AT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&(instance.to_string(), trigger.to_string()))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_calls_past_the_limit_are_refused_per_trigger() {
        let limits = super::WebhookLimits::new(2);
        assert!(limits.allow("i", "t1"));
        assert!(limits.allow("i", "t1"));
        assert!(!limits.allow("i", "t1"), "the third call within 30 s is refused");
        assert!(limits.allow("i", "t2"), "another trigger has its own bucket");
    }
}
