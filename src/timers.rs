//! INIT's timers (SPEC 9.4): `server.every(ms, f)` and `server.after(ms, f)`
//! schedule `f`, `server.cancel(id)` stops it. Each timer is a task on the
//! server's runtime that, when due, hands its callback to a [`Runner`]
//! (INIT's: the plug threads, under the plug limits).
//!
//! A periodic callback still running when its next tick is due skips that
//! tick, so a slow callback never piles up runs; skips are logged and
//! counted. Timers added while INIT runs start once the server does; all
//! stop when it begins to shut down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::HashMap;
use rhai::FnPtr;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// A timer's id, as INIT sees it.
pub type TimerId = u64;

/// Most timers at once.
pub const MAX_TIMERS: usize = 10_000;

/// Runs one callback; calls `done` when the run has ended, however it ended.
pub type Runner = Arc<dyn Fn(TimerId, FnPtr, Box<dyn FnOnce() + Send>) + Send + Sync>;

/// Cheap to clone: a handle on the server's timers.
#[derive(Clone, Default)]
pub struct Timers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Source of ids; starts at 1.
    next_id: AtomicU64,
    /// Ticks skipped because the previous run was still going.
    skipped: AtomicU64,
    /// A std mutex: held for map operations only.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set by [`Timers::start`]: where callbacks run and tasks are spawned.
    started: Option<(Runner, Handle)>,
    /// Timers added before the server started.
    pending: Vec<(TimerId, Spec)>,
    /// Scheduled timers' tasks.
    tasks: HashMap<TimerId, JoinHandle<()>>,
    /// Set at shutdown: no timer runs or starts any more.
    stopped: bool,
}

#[derive(Clone)]
struct Spec {
    period: Duration,
    repeat: bool,
    f: FnPtr,
}

/// Why a timer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("a timer's period is a number of milliseconds of at least 1, not {0}")]
    BadPeriod(i64),
    #[error("at most {MAX_TIMERS} timers can exist at once; cancel some first")]
    TooMany,
    #[error("the server is shutting down; no new timers start")]
    Stopped,
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Schedule `f` every `ms` milliseconds (`repeat`) or once after `ms`.
    pub fn add(&self, ms: i64, repeat: bool, f: FnPtr) -> Result<TimerId, TimerError> {
        if ms < 1 {
            return Err(TimerError::BadPeriod(ms));
        }
        let spec = Spec { period: Duration::from_millis(ms as u64), repeat, f };
        let mut state = self.lock();
        if state.stopped {
            return Err(TimerError::Stopped);
        }
        if state.tasks.len() + state.pending.len() >= MAX_TIMERS {
            return Err(TimerError::TooMany);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        match state.started.clone() {
            Some((runner, handle)) => {
                let task = handle.spawn(self.clone().run(id, spec, runner));
                state.tasks.insert(id, task);
            }
            None => state.pending.push((id, spec)),
        }
        Ok(id)
    }

    /// Stop timer `id`; false if there is none (already fired, cancelled,
    /// never existed). A run already going finishes.
    pub fn cancel(&self, id: TimerId) -> bool {
        let mut state = self.lock();
        if let Some(task) = state.tasks.remove(&id) {
            task.abort();
            return true;
        }
        let before = state.pending.len();
        state.pending.retain(|(pending, _)| *pending != id);
        state.pending.len() != before
    }

    /// Start every timer added so far, and later ones as they come, with
    /// `runner` running their callbacks. Needs a tokio runtime.
    pub fn start(&self, runner: Runner) {
        let Ok(handle) = Handle::try_current() else {
            tracing::error!("timers cannot start: no async runtime");
            return;
        };
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        for (id, spec) in std::mem::take(&mut state.pending) {
            let task = handle.spawn(self.clone().run(id, spec, runner.clone()));
            state.tasks.insert(id, task);
        }
        state.started = Some((runner, handle));
    }

    /// Stop every timer, for good (shutdown). Runs already going finish.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        state.pending.clear();
        state.started = None;
        for (_, task) in state.tasks.drain() {
            task.abort();
        }
    }

    /// Timers scheduled now.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.tasks.len() + state.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ticks skipped so far because a run was still going.
    pub fn skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// One timer's life: wait, run (unless the last run still goes), repeat.
    async fn run(self, id: TimerId, spec: Spec, runner: Runner) {
        let start = tokio::time::Instant::now() + spec.period;
        let mut ticks = tokio::time::interval_at(start, spec.period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let running = Arc::new(AtomicBool::new(false));
        loop {
            ticks.tick().await;
            if running.swap(true, Ordering::AcqRel) {
                self.inner.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(timer = id, "timer tick skipped: the previous run is still going");
                continue;
            }
            let flag = running.clone();
            runner(id, spec.f.clone(), Box::new(move || flag.store(false, Ordering::Release)));
            if !spec.repeat {
                self.lock().tasks.remove(&id);
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn f() -> FnPtr {
        FnPtr::new("tick").unwrap()
    }

    /// A runner that counts runs and holds each for `hold`.
    fn counting(hold: Duration) -> (Runner, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let runner: Runner = Arc::new(move |_, _, done| {
            counter.fetch_add(1, Ordering::SeqCst);
            if hold.is_zero() {
                return done(); // at once: paused clocks jump ahead of other threads
            }
            std::thread::spawn(move || {
                std::thread::sleep(hold);
                done();
            });
        });
        (runner, runs)
    }

    #[test]
    fn periods_below_one_ms_are_refused() {
        let timers = Timers::new();
        assert_eq!(timers.add(0, true, f()), Err(TimerError::BadPeriod(0)));
        assert_eq!(timers.add(-5, false, f()), Err(TimerError::BadPeriod(-5)));
        assert!(timers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pending_timers_start_with_the_server_and_after_fires_once() {
        let timers = Timers::new();
        let every = timers.add(100, true, f()).unwrap();
        let once = timers.add(150, false, f()).unwrap();
        assert_eq!((every, once, timers.len()), (1, 2, 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (runner, runs) = counting(Duration::ZERO);
        timers.start(runner);
        tokio::time::sleep(Duration::from_millis(450)).await;
        // every: 100, 200, 300, 400; after: 150.
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(timers.len(), 1, "the one-shot timer is gone");
        assert!(!timers.cancel(once));
        assert!(timers.cancel(every));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 5, "cancelled");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_due_while_the_last_run_goes_is_skipped() {
        let timers = Timers::new();
        let (runner, runs) = counting(Duration::from_millis(250));
        timers.start(runner);
        timers.add(50, true, f()).unwrap();
        tokio::time::sleep(Duration::from_millis(620)).await;
        timers.stop();
        // Runs at 50 and ~300 (held 250 ms each); ticks in between skipped.
        let n = runs.load(Ordering::SeqCst);
        assert!((2..=4).contains(&n), "{n} runs");
        assert!(timers.skipped() >= 3, "{} skipped", timers.skipped());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_every_timer_and_refuses_new_ones() {
        let timers = Timers::new();
        let (runner, runs) = counting(Duration::ZERO);
        timers.start(runner);
        timers.add(10, true, f()).unwrap();
        tokio::time::sleep(Duration::from_millis(35)).await;
        timers.stop();
        let before = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((before, runs.load(Ordering::SeqCst)), (3, 3));
        assert_eq!(timers.add(10, true, f()), Err(TimerError::Stopped));
        assert!(timers.is_empty());
    }
}
