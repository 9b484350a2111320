//! Runs on the connection's own task: the connection lends its writer to
//! the waits inside the run.
//!
//! Most plugs answer in microseconds, and handing each message to another
//! task (the connection's runner) and the reply back cost ~9% of the
//! throughput at 1,000 busy clients (BENCHMARKS.md, issue 16). So a plug
//! that has never waited runs on the task that read its message, when
//! nothing of that client's is queued before it. But that task is also the
//! client's writer: a run that waits for room in its own client's queue
//! would wait for itself. While such a run goes on, the connection lends a
//! [`Drain`] that writes the client's queue into the socket, and the run's
//! waits call it (`Invocation::pause` while a queue is full; before a
//! sleep or a call to another service, so what was yielded goes out
//! first). A plug that waited once is marked, and its later runs go back
//! to the runner.
//!
//! The lending is scoped to one synchronous call on one thread
//! (`scoped-tls-hkt`), which is what lets the drain borrow the socket
//! without the run owning it.

use std::time::Duration;

use scoped_tls_hkt::scoped_thread_local;

use crate::hub::Writes;

/// Writes the lending client's queued replies for up to the given time
/// (no time: what the socket takes now, without blocking). False once
/// the writer has ended (the client is gone or cut off): the run stops.
pub type Drain<'a> = dyn FnMut(Duration) -> bool + 'a;

scoped_thread_local! {
    /// The drain lent to the run going on on this thread. It appears unset
    /// while in use, so it is never borrowed twice.
    static mut LENT: for<'a> &'a mut Drain<'a>
}

/// Run `job` (a plug run, synchronously) with `drain` lent to its waits.
pub fn lend<R>(drain: &mut Drain<'_>, job: impl FnOnce() -> R) -> R {
    LENT.set(drain, job)
}

std::thread_local! {
    /// Set while a run on its connection's task goes on and that
    /// connection holds no further message already read: the server keeps
    /// up with this sender, so its broadcasts may be written straight into
    /// receivers' sockets (see `OutQueue::allow_direct`). When it is behind,
    /// they are queued, so late receivers write several in one `send`.
    static CAUGHT_UP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `job` marked as caught up (or not) for its broadcasts.
pub fn with_caught_up<R>(caught_up: bool, job: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CAUGHT_UP.with(|c| c.set(false));
        }
    }
    CAUGHT_UP.with(|c| c.set(caught_up));
    let _reset = Reset;
    job()
}

/// Whether this thread runs a plug on its connection's task for a sender
/// the server keeps up with.
fn caught_up() -> bool {
    CAUGHT_UP.with(|c| c.get())
}

/// How the fan-outs of a run reach receivers whose writer sleeps: straight
/// into their sockets only from a run on its sender's own task (`on_task`)
/// while the server keeps up with that sender.
pub fn writes(on_task: bool) -> Writes {
    if on_task && caught_up() {
        Writes::Direct
    } else {
        Writes::Queued
    }
}

/// Call the drain lent to this thread's run: None when there is none
/// (the run is not on its connection's task), else whether the writer is
/// still going.
pub fn drain(wait: Duration) -> Option<bool> {
    LENT.is_set().then(|| LENT.with(|drain| drain(wait)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_lent_only_for_the_run_and_never_twice_at_once() {
        assert_eq!(drain(Duration::ZERO), None, "nothing lent outside a run");
        let mut calls = Vec::new();
        let mut writer = |wait: Duration| {
            calls.push(wait);
            // The drain itself cannot reach the drain.
            assert_eq!(drain(Duration::ZERO), None);
            calls.len() < 2
        };
        lend(&mut writer, || {
            assert_eq!(drain(Duration::ZERO), Some(true));
            assert_eq!(drain(Duration::from_millis(1)), Some(false));
        });
        assert_eq!(calls, [Duration::ZERO, Duration::from_millis(1)]);
        assert_eq!(drain(Duration::ZERO), None, "nothing lent after the run");
    }

    #[test]
    fn only_a_run_marked_caught_up_is_caught_up_and_only_while_it_runs() {
        assert!(!caught_up(), "outside a run on a connection's task");
        assert!(with_caught_up(true, caught_up));
        assert!(!with_caught_up(false, caught_up), "a connection with its next message already read");
        assert!(!caught_up(), "not after the run");
        let unwound = std::panic::catch_unwind(|| with_caught_up(true, || panic!("a run failing")));
        assert!(unwound.is_err());
        assert!(!caught_up(), "not after a run that unwound");
    }

    #[test]
    fn only_a_caught_up_run_on_its_senders_task_writes_directly() {
        assert_eq!(with_caught_up(true, || writes(true)), Writes::Direct);
        assert_eq!(with_caught_up(true, || writes(false)), Writes::Queued, "a run on another thread");
        assert_eq!(with_caught_up(false, || writes(true)), Writes::Queued, "a sender the server is behind");
        assert_eq!(writes(true), Writes::Queued, "outside a run");
    }

    #[test]
    fn a_run_that_unwinds_gives_the_drain_back() {
        let mut writer = |_: Duration| true;
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lend(&mut writer, || panic!("a run failing"));
        }));
        assert!(unwound.is_err());
        assert_eq!(drain(Duration::ZERO), None);
    }
}
