//! How often a login may guess, kept by the auth service so the limits hold however many
//! gateways there are (every gateway asks this service).
//!
//! - Passphrases: per address on an instance, and per instance for anonymous devices. A device
//!   the person signed in from before shows a signed device cookie: it has a bucket of its own
//!   and is exempt from the instance's shared one, so nobody can lock the owner out of their own
//!   devices by draining it.
//! - Second factors (a 6-digit code is guessable): a login attempt (the first step's token)
//!   gets at most a few wrong codes, then needs the passphrase again; wrong codes on an instance
//!   make the next try wait, longer and longer (1 s, 2 s, 4 s… up to a cap), counted apart for
//!   each known device and for all anonymous ones together.
//!
//! State lives in memory: a restart of the auth service starts the counters over.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Passphrase attempts per minute from one address on one instance.
    pub passphrase_per_ip_per_minute: u32,
    /// Passphrase attempts per minute on one instance from devices not signed in before.
    pub passphrase_per_instance_per_minute: u32,
    /// Passphrase attempts per minute from one known device.
    pub passphrase_per_device_per_minute: u32,
    /// Wrong second factors one login attempt may send before it needs the passphrase again.
    pub second_factor_per_attempt: u32,
    /// Wrong second factors (per instance, or per known device) before each try must wait.
    pub second_factor_free_failures: u32,
    /// The longest wait between two second factors, in seconds.
    pub second_factor_max_delay_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            passphrase_per_ip_per_minute: 10,
            passphrase_per_instance_per_minute: 60,
            passphrase_per_device_per_minute: 10,
            second_factor_per_attempt: 5,
            second_factor_free_failures: 5,
            second_factor_max_delay_secs: 900,
        }
    }
}

/// A refusal: what to say and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub why: String,
    pub retry_after: u64,
}

/// A failure count that forgets after an hour without failures.
struct Backoff {
    failures: u32,
    last: Instant,
}

const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Counters are pruned past this many keys.
const PRUNE_ABOVE: usize = 100_000;

pub(crate) struct Throttle {
    config: LimitsConfig,
    per_ip: DefaultKeyedRateLimiter<(String, String)>,
    per_instance: DefaultKeyedRateLimiter<String>,
    per_device: DefaultKeyedRateLimiter<(String, String)>,
    /// Wrong second factors, by `i:<instance>` (anonymous devices) or `d:<instance>:<device>`.
    backoffs: Mutex<HashMap<String, Backoff>>,
    /// Wrong second factors by login attempt (the first step's token id).
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"))
}

fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Throttle {
    pub(crate) fn new(config: LimitsConfig) -> Throttle {
        Throttle {
            per_ip: RateLimiter::keyed(per_minute(config.passphrase_per_ip_per_minute)),
            per_instance: RateLimiter::keyed(per_minute(config.passphrase_per_instance_per_minute)),
            per_device: RateLimiter::keyed(per_minute(config.passphrase_per_device_per_minute)),
            config,
            backoffs: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one passphrase attempt; `device` is a known device's id.
    pub(crate) fn passphrase(&self, instance: &str, ip: &str, device: Option<&str>) -> Result<(), Refused> {
        for limiter in [&self.per_ip, &self.per_device] {
            if limiter.len() > PRUNE_ABOVE {
                limiter.retain_recent();
            }
        }
        if self.per_instance.len() > PRUNE_ABOVE {
            self.per_instance.retain_recent();
        }
        let now = DefaultClock::default().now();
        let refused = |not_until: governor::NotUntil<_>| Refused {
            why: "too many passphrase attempts".into(),
            retry_after: seconds(not_until.wait_time_from(now)),
        };
        self.per_ip
            .check_key(&(instance.to_string(), ip.to_string()))
            .map_err(refused)?;
        match device {
            Some(device) => self
                .per_device
                .check_key(&(instance.to_string(), device.to_string()))
                .map_err(refused),
            None => self.per_instance.check_key(&instance.to_string()).map_err(refused),
        }
    }

    fn backoff_key(instance: &str, device: Option<&str>) -> String {
        match device {
            Some(device) => format!("d:{instance}:{device}"),
            None => format!("i:{instance}"),
        }
    }

    /// The wait after `failures` wrong second factors.
    fn delay(&self, failures: u32) -> Duration {
        let free = self.config.second_factor_free_failures;
        if failures < free {
            return Duration::ZERO;
        }
        let doublings = (failures - free).min(30);
        Duration::from_secs((1u64 << doublings).min(self.config.second_factor_max_delay_secs.max(1)))
    }

    /// Whether a second factor may be tried now, for login attempt `attempt`.
    pub(crate) fn second_factor(&self, instance: &str, attempt: &str, device: Option<&str>) -> Result<(), Refused> {
        if let Some((failures, _)) = self.attempts.lock().expect("throttle poisoned").get(attempt)
            && *failures >= self.config.second_factor_per_attempt
        {
            return Err(Refused {
                why: "too many wrong codes for this sign-in: sign in again with your passphrase".into(),
                retry_after: 1,
            });
        }
        let backoffs = self.backoffs.lock().expect("throttle poisoned");
        if let Some(b) = backoffs.get(&Self::backoff_key(instance, device))
            && b.last.elapsed() < FORGET_AFTER
        {
            let wait = self.delay(b.failures).saturating_sub(b.last.elapsed());
            if !wait.is_zero() {
                return Err(Refused {
                    why: format!("too many wrong codes: wait {} s before the next one", seconds(wait)),
                    retry_after: seconds(wait),
                });
            }
        }
        Ok(())
    }

    /// A wrong second factor: the attempt and the instance (or known device) count it.
    pub(crate) fn second_factor_failed(&self, instance: &str, attempt: &str, device: Option<&str>) {
        let now = Instant::now();
        let mut attempts = self.attempts.lock().expect("throttle poisoned");
        if attempts.len() > PRUNE_ABOVE {
            attempts.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
        }
        let entry = attempts.entry(attempt.to_string()).or_insert((0, now));
        *entry = (entry.0 + 1, now);
        drop(attempts);
        let mut backoffs = self.backoffs.lock().expect("throttle poisoned");
        if backoffs.len() > PRUNE_ABOVE {
            backoffs.retain(|_, b| b.last.elapsed() < FORGET_AFTER);
        }
        let b = backoffs
            .entry(Self::backoff_key(instance, device))
            .or_insert(Backoff { failures: 0, last: now });
        if b.last.elapsed() >= FORGET_AFTER {
            b.failures = 0;
        }
        b.failures += 1;
        b.last = now;
    }

    /// A right second factor: its counters start over.
    pub(crate) fn second_factor_passed(&self, instance: &str, attempt: &str, device: Option<&str>) {
        self.attempts.lock().expect("throttle poisoned").remove(attempt);
        self.backoffs
            .lock()
            .expect("throttle poisoned")
            .remove(&Self::backoff_key(instance, device));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(LimitsConfig {
            passphrase_per_ip_per_minute: 3,
            passphrase_per_instance_per_minute: 4,
            passphrase_per_device_per_minute: 2,
            second_factor_per_attempt: 3,
            second_factor_free_failures: 2,
            second_factor_max_delay_secs: 8,
        })
    }

    #[test]
    fn test_a_known_device_is_exempt_from_the_drained_instance_bucket() {
        let t = throttle();
        // An attacker from many addresses drains the instance's shared bucket.
        for i in 0..4 {
            assert!(t.passphrase("a", &format!("10.0.0.{i}"), None).is_ok());
        }
        let refused = t.passphrase("a", "10.0.1.1", None).unwrap_err();
        assert!(refused.retry_after >= 1);
        // The owner's known device still gets in, within its own bucket.
        assert!(t.passphrase("a", "192.0.2.7", Some("dev1")).is_ok());
        assert!(t.passphrase("a", "192.0.2.7", Some("dev1")).is_ok());
        assert!(
            t.passphrase("a", "192.0.2.7", Some("dev1")).is_err(),
            "its own limit holds"
        );
        // Another instance is untouched.
        assert!(t.passphrase("b", "10.0.1.1", None).is_ok());
        // One address is limited on its own too.
        assert!(t.passphrase("c", "10.9.9.9", None).is_ok());
        assert!(t.passphrase("c", "10.9.9.9", None).is_ok());
        assert!(t.passphrase("c", "10.9.9.9", None).is_ok());
        assert!(t.passphrase("c", "10.9.9.9", None).is_err());
    }

    #[test]
    fn test_wrong_codes_grow_the_wait_and_burn_the_attempt() {
        let t = throttle();
        assert!(t.second_factor("a", "t1", None).is_ok());
        t.second_factor_failed("a", "t1", None);
        assert!(t.second_factor("a", "t1", None).is_ok(), "free failures");
        t.second_factor_failed("a", "t1", None);
        let wait = t.second_factor("a", "t2", None).unwrap_err();
        assert_eq!(wait.retry_after, 1);
        assert_eq!(t.delay(3), Duration::from_secs(2));
        assert_eq!(t.delay(4), Duration::from_secs(4));
        assert_eq!(t.delay(30), Duration::from_secs(8), "capped");
        // A known device is not held by the anonymous ones' failures.
        assert!(t.second_factor("a", "t3", Some("dev1")).is_ok());
        // The attempt is burnt after its wrong codes, whatever the waits.
        t.second_factor_failed("a", "t1", None);
        assert!(t.second_factor("a", "t1", None).unwrap_err().why.contains("passphrase"));
        // A right code starts the counters over.
        t.second_factor_passed("a", "t4", None);
        assert!(t.second_factor("a", "t4", None).is_ok());
    }
}
