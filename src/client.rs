//! One connected client as everything but its socket sees it: its id and
//! the flag that stops its running plugs when it leaves. The hub hands out
//! a [`ClientHandle`] when a client registers; dispatch, invocations and
//! INIT's callbacks carry it, so what a client owns (its `conn::` state,
//! identity and rooms) has one place to live.

use std::sync::Arc;

use crate::cancel::Cancel;

/// A client's id: unique for the life of the process, never reused.
pub type ClientId = u64;

/// Cheap to clone: a handle on one client's shared record. It outlives the
/// client's hub entry while anything (an `on_disconnect` callback, a plug
/// finishing) still holds it.
#[derive(Clone)]
pub struct ClientHandle(Arc<Client>);

struct Client {
    id: ClientId,
    /// Fired when the client goes, so its running plugs stop.
    cancel: Cancel,
}

impl ClientHandle {
    pub fn new(id: ClientId) -> ClientHandle {
        ClientHandle(Arc::new(Client { id, cancel: Cancel::new() }))
    }

    pub fn id(&self) -> ClientId {
        self.0.id
    }

    /// Set once the client has left (or been cut off).
    pub fn cancel(&self) -> &Cancel {
        &self.0.cancel
    }
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").field("id", &self.0.id).finish()
    }
}
