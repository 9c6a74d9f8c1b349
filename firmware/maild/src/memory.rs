//! A node-wide budget of bytes that sessions may hold in memory, so that
//! what all of them hold together stays bounded, not only what one holds.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes shared by every session of a node; a session takes some before it
/// grows a buffer and gives them back when it frees it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget { limit, used: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if that many are left.
    pub fn try_take(&self, n: usize) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.limit)).is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: usize) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_no_more() {
        let b = MemoryBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41));
        assert!(b.try_take(40));
        assert!(!b.try_take(1));
        b.give(60);
        assert_eq!(b.used(), 40);
        assert!(b.try_take(60));
        assert!(!b.try_take(usize::MAX));
    }
}
