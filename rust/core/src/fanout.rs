//! Independent read work (the queries of one `?multi=true` request) spread over the machine's
//! cores, within one process-wide budget of helper threads.
//!
//! Guarantees:
//! - [`map`] returns `f(0), …, f(n - 1)` in index order, each computed exactly once, whichever
//!   thread ran it; a panic in `f` reaches the caller (the scope joins every helper first).
//! - The calling thread always works. Helpers are borrowed from one budget shared by every
//!   caller in the process, [`budget`] = cores − 1, and taken without waiting: when concurrent
//!   requests hold it, a request runs on fewer threads, down to its own thread alone. So reads
//!   never run on more than (callers + cores − 1) threads together, a request holds helpers only
//!   for the length of one [`map`] call, and the budget is handed back even when `f` panics.
//! - Helpers are scoped threads: they borrow the caller's data and never outlive the call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Helper threads borrowed right now, across every caller.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Helper threads all callers together may borrow: one fewer than the cores, so the callers'
/// own threads and the helpers fill the machine and do not oversubscribe it.
#[must_use]
pub fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| crate::parallel::default_threads().saturating_sub(1))
}

/// Helpers borrowed from the budget; dropping it gives them back.
struct Lease(usize);

impl Lease {
    /// Up to `want` helpers, as many as the budget has free now (possibly none).
    fn take(want: usize) -> Lease {
        let limit = budget();
        let mut current = IN_USE.load(Ordering::Relaxed);
        loop {
            let got = want.min(limit.saturating_sub(current));
            if got == 0 {
                return Lease(0);
            }
            match IN_USE.compare_exchange_weak(
                current,
                current + got,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Lease(got),
                Err(seen) => current = seen,
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0 > 0 {
            IN_USE.fetch_sub(self.0, Ordering::AcqRel);
        }
    }
}

/// Helper threads borrowed right now (for tests and diagnostics).
#[must_use]
pub fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// `[f(0), …, f(n - 1)]`, items claimed one at a time by the calling thread and by as many
/// borrowed helpers as the budget lends (at most `n - 1`), so a slow item does not hold back
/// the others' threads.
pub fn map<R, F>(n: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    let lease = Lease::take(n.saturating_sub(1));
    if lease.0 == 0 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, f(i)));
        }
    };
    let mut slots: Vec<Option<R>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (0..lease.0).map(|_| s.spawn(work)).collect();
        for (i, r) in work() {
            slots[i] = Some(r);
        }
        for h in helpers {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        slots[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    drop(lease);
    slots
        .into_iter()
        .map(|r| r.expect("every index is claimed exactly once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn results_come_back_in_index_order_each_computed_once() {
        let calls: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        let out = map(64, |i| {
            calls[i].fetch_add(1, Ordering::Relaxed);
            // Uneven work, so threads finish items out of order.
            std::thread::sleep(std::time::Duration::from_micros((i % 5) as u64 * 200));
            i * 3
        });
        assert_eq!(out, (0..64).map(|i| i * 3).collect::<Vec<_>>());
        assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn helpers_never_exceed_the_budget_and_are_given_back() {
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        map(16, |_| {
            assert!(in_use() <= budget());
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(2));
        });
        assert!(threads.lock().unwrap().len() <= budget() + 1);
        assert!(in_use() <= budget());
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_lease_is_returned() {
        let caught = std::panic::catch_unwind(|| {
            map(8, |i| {
                assert!(i != 5, "item 5 fails");
                i
            })
        });
        assert!(caught.is_err());
        // Other tests may hold helpers concurrently, but never more than the budget.
        assert!(in_use() <= budget());
    }

    #[test]
    fn empty_and_single_items_run_on_the_caller() {
        assert!(map(0, |i| i).is_empty());
        let me = std::thread::current().id();
        assert_eq!(map(1, |_| std::thread::current().id()), vec![me]);
    }
}
