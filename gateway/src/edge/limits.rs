//! Rate limits on the routes that guess at secrets (login, passphrase, onboarding, two-factor)
//! and on what creates credentials (client registration, sharing-link codes): per client address on one instance, and per instance whatever
//! the address (a spread-out attack). Past a limit the answer is 429 with `Retry-After`. The
//! counters live in this gateway process: behind N gateways the limits are N times looser.

use std::net::IpAddr;
use std::num::NonZeroU32;

use cocon_common::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::ApiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Passphrase attempts (login, change, onboarding) per minute from one address on one instance.
    pub passphrase_per_ip_per_minute: u32,
    /// Passphrase attempts per minute on one instance, all addresses together.
    pub passphrase_per_instance_per_minute: u32,
    /// OAuth client registrations per minute from one address on one instance.
    pub registration_per_ip_per_minute: u32,
    /// OAuth client registrations per minute on one instance.
    pub registration_per_instance_per_minute: u32,
    /// Permission sets with sharing-link codes created per minute from one address on one instance.
    pub codes_per_ip_per_minute: u32,
    /// Permission sets with sharing-link codes created per minute on one instance.
    pub codes_per_instance_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            passphrase_per_ip_per_minute: 10,
            passphrase_per_instance_per_minute: 60,
            registration_per_ip_per_minute: 10,
            registration_per_instance_per_minute: 30,
            codes_per_ip_per_minute: 30,
            codes_per_instance_per_minute: 120,
        }
    }
}

/// Keys are dropped once their bucket is full again, when the table grows past this.
const PRUNE_ABOVE: usize = 100_000;

/// One kind of attempt, limited per address on an instance and per instance.
struct Buckets {
    what: &'static str,
    per_ip: DefaultKeyedRateLimiter<(String, IpAddr)>,
    per_instance: DefaultKeyedRateLimiter<String>,
}

pub struct Limits {
    passphrase: Buckets,
    registration: Buckets,
    codes: Buckets,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"))
}

impl Buckets {
    fn new(what: &'static str, per_ip: u32, per_instance: u32) -> Buckets {
        Buckets {
            what,
            per_ip: RateLimiter::keyed(per_minute(per_ip)),
            per_instance: RateLimiter::keyed(per_minute(per_instance)),
        }
    }

    fn attempt(&self, domain: &str, ip: IpAddr) -> Result<(), ApiError> {
        if self.per_ip.len() > PRUNE_ABOVE {
            self.per_ip.retain_recent();
        }
        if self.per_instance.len() > PRUNE_ABOVE {
            self.per_instance.retain_recent();
        }
        let now = DefaultClock::default().now();
        let wait = match self.per_ip.check_key(&(domain.to_string(), ip)) {
            Err(not_until) => Some(not_until.wait_time_from(now)),
            Ok(()) => self
                .per_instance
                .check_key(&domain.to_string())
                .err()
                .map(|not_until| not_until.wait_time_from(now)),
        };
        match wait {
            None => Ok(()),
            Some(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut err = ApiError::new(
                    ErrorCode::TooManyRequests,
                    "too_many_requests",
                    format!("too many {}: try again in {secs} s", self.what),
                );
                err.retry_after = Some(secs.max(1));
                Err(err)
            }
        }
    }
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            passphrase: Buckets::new(
                "passphrase attempts",
                config.passphrase_per_ip_per_minute,
                config.passphrase_per_instance_per_minute,
            ),
            registration: Buckets::new(
                "client registrations",
                config.registration_per_ip_per_minute,
                config.registration_per_instance_per_minute,
            ),
            codes: Buckets::new(
                "permission sets created",
                config.codes_per_ip_per_minute,
                config.codes_per_instance_per_minute,
            ),
        }
    }

    /// Counts one attempt at a secret (passphrase, two-factor code) on `domain` from `ip`, or
    /// says when to retry.
    pub fn passphrase_attempt(&self, domain: &str, ip: IpAddr) -> Result<(), ApiError> {
        self.passphrase.attempt(domain, ip)
    }

    /// Counts one OAuth client registration.
    pub fn registration(&self, domain: &str, ip: IpAddr) -> Result<(), ApiError> {
        self.registration.attempt(domain, ip)
    }

    /// Counts one permission set (with its sharing-link codes) created.
    pub fn codes(&self, domain: &str, ip: IpAddr) -> Result<(), ApiError> {
        self.codes.attempt(domain, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_limits_per_address_and_instance() {
        let limits = Limits::new(&LimitsConfig {
            passphrase_per_ip_per_minute: 2,
            passphrase_per_instance_per_minute: 3,
            ..LimitsConfig::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.passphrase_attempt("x.test", a).is_ok());
        assert!(limits.passphrase_attempt("x.test", a).is_ok());
        let err = limits.passphrase_attempt("x.test", a).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        assert!(err.retry_after.is_some_and(|s| (1..=60).contains(&s)));
        // Another instance from the same address is not affected.
        assert!(limits.passphrase_attempt("y.test", a).is_ok());
        // Another address on the same instance, until the instance's own limit.
        assert!(limits.passphrase_attempt("x.test", b).is_ok());
        assert!(limits.passphrase_attempt("x.test", b).is_err());
    }
}
