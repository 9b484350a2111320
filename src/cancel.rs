//! A cancellation flag that blocking plug threads can both poll cheaply and
//! sleep on: set when a client disconnects (or the server stops), it wakes
//! every `sleep` of that client's plugs at once instead of letting them run
//! out, and every async wait on it (a plug's HTTP request).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Polled by running scripts every few hundred operations: an atomic so
    /// the poll takes no lock.
    cancelled: AtomicBool,
    /// Only for sleepers, how many there are: the condvar needs a mutex;
    /// taking it in `cancel` means a sleeper cannot miss the wake-up between
    /// its check and wait. Counted because notifying a condvar is a system
    /// call even with no one waiting, and every client's flag is set once
    /// when it leaves, nearly always with no plug asleep on it.
    sleepers: Mutex<usize>,
    wake: Condvar,
    /// For async waiters ([`Cancel::cancelled`]).
    notify: tokio::sync::Notify,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if *self.inner.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            self.inner.wake.notify_all();
        }
        self.inner.notify.notify_waiters();
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a cancel in between wakes it.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// Sleep for `duration` or until cancelled. True if it was cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        // No deadline when `now + duration` overflows: wait for the cancel.
        let deadline = Instant::now().checked_add(duration);
        let mut guard = self.inner.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        *guard += 1;
        let cancelled = loop {
            if self.inner.cancelled.load(Ordering::SeqCst) {
                break true;
            }
            let Some(deadline) = deadline else {
                guard = self.inner.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self.inner.wake.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        };
        *guard -= 1;
        cancelled
    }

    /// Plug threads asleep on this flag now.
    #[cfg(test)]
    fn sleepers(&self) -> usize {
        *self.inner.sleepers.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_sleeper_early() {
        let c = Cancel::new();
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        c.cancel();
        assert!(t.join().unwrap());
        assert!(c.is_cancelled());
    }

    #[test]
    fn an_endless_sleep_still_wakes_on_cancel() {
        let c = Cancel::new();
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep(Duration::MAX));
        std::thread::sleep(Duration::from_millis(20));
        c.cancel();
        assert!(t.join().unwrap());
    }

    #[tokio::test]
    async fn cancelled_resolves_for_async_waiters() {
        let c = Cancel::new();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        c.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        tokio::time::timeout(Duration::from_secs(5), c.cancelled()).await.expect("already cancelled");
    }

    #[test]
    fn uncancelled_sleep_runs_out() {
        let c = Cancel::new();
        assert!(!c.sleep(Duration::from_millis(5)));
        assert_eq!(c.sleepers(), 0, "a sleep that ran out is no longer counted");
    }

    #[test]
    fn every_sleeper_is_woken_and_counted_while_it_sleeps() {
        let c = Cancel::new();
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || c.sleep(Duration::from_secs(30)))
            })
            .collect();
        let asleep = Instant::now();
        while c.sleepers() < 3 {
            assert!(asleep.elapsed() < Duration::from_secs(10), "the three sleepers never slept");
            std::thread::yield_now();
        }
        let cancelled = Instant::now();
        c.cancel();
        for sleeper in sleepers {
            assert!(sleeper.join().unwrap());
        }
        // A sleeper the cancel did not wake would see the flag only when
        // its 30 s ran out.
        assert!(cancelled.elapsed() < Duration::from_secs(10), "woken by the cancel");
        assert_eq!(c.sleepers(), 0);
        assert!(c.sleep(Duration::from_secs(30)), "a sleep after the cancel ends at once");
    }
}
