//! Rate limits on the routes that guess at secrets (login, passphrase, onboarding): per client
//! address on one instance, and per instance whatever the address (a spread-out attack). Past a
//! limit the answer is 429 with `Retry-After`.

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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            passphrase_per_ip_per_minute: 10,
            passphrase_per_instance_per_minute: 60,
        }
    }
}

/// Keys are dropped once their bucket is full again, when the table grows past this.
const PRUNE_ABOVE: usize = 100_000;

pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<(String, IpAddr)>,
    per_instance: DefaultKeyedRateLimiter<String>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"))
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            per_ip: RateLimiter::keyed(per_minute(config.passphrase_per_ip_per_minute)),
            per_instance: RateLimiter::keyed(per_minute(config.passphrase_per_instance_per_minute)),
        }
    }

    /// Counts one passphrase attempt on `domain` from `ip`, or says when to retry.
    pub fn passphrase_attempt(&self, domain: &str, ip: IpAddr) -> Result<(), ApiError> {
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
                    format!("too many passphrase attempts: try again in {secs} s"),
                );
                err.retry_after = Some(secs.max(1));
                Err(err)
            }
        }
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
