//! A plug run for the HTTP API (`POST /api/call/EVENT`, SPEC 9.5): no
//! socket, so what the plug yields to its sender is collected here and
//! becomes the HTTP response. Broadcasts and sends to other clients go out
//! as usual. The run gets a `conn::` state of its own, dropped with it.

use std::sync::Mutex;

use crate::client::ConnState;
use crate::plugs::router::Reply;

/// The replies of one call, bounded in bytes like a client's queue.
pub struct CallSink {
    /// `limits.outboundQueueBytes`: a plug cannot make the server hold an
    /// unbounded response.
    limit: usize,
    inner: Mutex<Collected>,
    /// `conn::` for the length of the call.
    pub state: ConnState,
}

#[derive(Default)]
struct Collected {
    replies: Vec<Reply>,
    bytes: usize,
    /// The ERROR payload, if the plug failed.
    error: Option<serde_json::Value>,
}

/// How a call ended.
#[derive(Debug)]
pub enum CallOutcome {
    /// It ran to the end: what it yielded to its sender, in order.
    Done(Vec<Reply>),
    /// It failed: the ERROR payload a client would have got.
    Failed(serde_json::Value),
    /// No plug answers the event.
    NotFound,
}

impl CallSink {
    pub fn new(limit: usize) -> CallSink {
        CallSink { limit, inner: Mutex::new(Collected::default()), state: ConnState::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep a reply; false if that would pass the limit (the reply is
    /// dropped and the plug should stop).
    pub fn push(&self, reply: Reply) -> bool {
        let mut inner = self.lock();
        let len = reply.len();
        if inner.bytes > 0 && inner.bytes + len > self.limit {
            return false;
        }
        inner.bytes += len;
        inner.replies.push(reply);
        true
    }

    /// The plug failed with this ERROR payload.
    pub fn fail(&self, payload: serde_json::Value) {
        self.lock().error.get_or_insert(payload);
    }

    /// What the caller answers once the run has ended.
    pub fn outcome(&self) -> CallOutcome {
        let mut inner = self.lock();
        match inner.error.take() {
            Some(payload) => CallOutcome::Failed(payload),
            None => CallOutcome::Done(std::mem::take(&mut inner.replies)),
        }
    }
}
