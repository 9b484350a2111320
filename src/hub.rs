//! The hub is the only owner of "who is connected". Every reply, whether a
//! yield, a broadcast or a `send_to`, reaches a socket through it, so a
//! later cross-node backplane replaces this one piece.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cancel::Cancel;

/// A client's id: unique for the life of the process, never reused.
pub type ClientId = u64;

/// What the writer half of a connection sends: an encoded message, or a
/// close with a code and reason.
#[derive(Debug, Clone)]
pub enum Outbound {
    Binary(Bytes),
    Close(u16, &'static str),
}

/// A connected client as the hub sees it.
struct Client {
    /// Feeds the connection's writer task.
    tx: mpsc::UnboundedSender<Outbound>,
    /// Fired when the client goes, so its running plugs stop.
    cancel: Cancel,
}

/// Cheap to clone: a handle on the shared table.
#[derive(Clone, Default)]
pub struct Hub {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// A std mutex: it is held only for map operations and channel sends,
    /// never across an `.await`, and is cheaper than an async lock.
    clients: Mutex<HashMap<ClientId, Client>>,
    /// Source of ids; starts at 1 so 0 never names a client.
    next_id: AtomicU64,
}

/// What a newly registered client gets back.
pub struct Registration {
    pub id: ClientId,
    pub rx: mpsc::UnboundedReceiver<Outbound>,
    pub cancel: Cancel,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Add a client and give it a fresh id and its outbound queue.
    pub fn register(&self) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Cancel::new();
        self.lock().insert(id, Client { tx, cancel: cancel.clone() });
        Registration { id, rx, cancel }
    }

    /// Forget a client and stop everything running on its behalf.
    pub fn remove(&self, id: ClientId) {
        if let Some(client) = self.lock().remove(&id) {
            client.cancel.cancel();
        }
    }

    /// Queue a message for one client. False when the client is gone.
    pub fn send_to(&self, id: ClientId, msg: Bytes) -> bool {
        match self.lock().get(&id) {
            Some(client) => client.tx.send(Outbound::Binary(msg)).is_ok(),
            None => false,
        }
    }

    /// Queue a message for every client but `except`. The bytes are
    /// encoded once and shared, not copied per recipient. Returns how many
    /// clients it was queued for.
    pub fn broadcast(&self, msg: Bytes, except: Option<ClientId>) -> usize {
        let clients = self.lock();
        clients
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter(|(_, c)| c.tx.send(Outbound::Binary(msg.clone())).is_ok())
            .count()
    }

    /// Ask one client's connection to close with `code`.
    pub fn close(&self, id: ClientId, code: u16, reason: &'static str) {
        if let Some(client) = self.lock().get(&id) {
            let _ = client.tx.send(Outbound::Close(code, reason));
        }
    }

    /// Connected ids, ascending.
    pub fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Client>> {
        // A poisoned lock only means a panic elsewhere mid-operation; the
        // map itself is still consistent, so keep serving.
        self.shared.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Option<Bytes> {
        match rx.try_recv() {
            Ok(Outbound::Binary(b)) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn ids_are_unique_and_never_reused() {
        let hub = Hub::new();
        let a = hub.register();
        hub.remove(a.id);
        let b = hub.register();
        assert_ne!(a.id, b.id);
        assert_eq!(hub.ids(), vec![b.id]);
    }

    #[test]
    fn broadcast_skips_the_excluded_client() {
        let hub = Hub::new();
        let mut a = hub.register();
        let mut b = hub.register();
        assert_eq!(hub.broadcast(Bytes::from_static(b"x"), Some(a.id)), 1);
        assert!(recv(&mut a.rx).is_none());
        assert_eq!(recv(&mut b.rx).as_deref(), Some(&b"x"[..]));
        assert_eq!(hub.broadcast(Bytes::from_static(b"y"), None), 2);
        assert!(recv(&mut a.rx).is_some() && recv(&mut b.rx).is_some());
    }

    #[test]
    fn removal_cancels_and_stops_delivery() {
        let hub = Hub::new();
        let a = hub.register();
        assert!(hub.send_to(a.id, Bytes::from_static(b"x")));
        hub.remove(a.id);
        assert!(a.cancel.is_cancelled());
        assert!(!hub.send_to(a.id, Bytes::from_static(b"x")));
    }
}
