//! The per-instance writer lock: a service holds its instance's stripe from reading what an
//! event depends on until the event is appended, so two writes of one instance never both
//! pass a check that only one of them may pass. Instances share a fixed number of locks.

use tokio::sync::Mutex;

pub struct Stripes {
    locks: Box<[Mutex<()>]>,
}

impl Stripes {
    /// 64 locks: enough that two busy instances rarely share one.
    pub const DEFAULT: usize = 64;

    pub fn new(count: usize) -> Stripes {
        Stripes {
            locks: (0..count.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The lock of `instance`.
    pub fn of(&self, instance: &str) -> &Mutex<()> {
        let hash = instance
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.locks[hash % self.locks.len()]
    }
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes::new(Stripes::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::Stripes;

    #[tokio::test]
    async fn test_an_instance_always_gets_its_own_stripe() {
        let stripes = Stripes::default();
        let held = stripes.of("alice").lock().await;
        assert!(stripes.of("alice").try_lock().is_err(), "the same instance waits");
        let other = (0..100)
            .map(|i| format!("bob{i}"))
            .find(|i| !std::ptr::eq(stripes.of(i), stripes.of("alice")))
            .unwrap();
        assert!(stripes.of(&other).try_lock().is_ok(), "another stripe is free");
        drop(held);
    }
}
