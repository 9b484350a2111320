//! One connected client as everything but its socket sees it: its id, the
//! flag that stops its running plugs when it leaves, its identity, its
//! rooms and its `conn::` state. The hub hands out a [`ClientHandle`] when
//! a client registers; dispatch, invocations and INIT's callbacks carry
//! it, so what a client owns has one place to live.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rhai::Dynamic;

use crate::cancel::Cancel;
use crate::errors::ErrorCode;

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
    /// `conn::` values: later messages and the client's `on_disconnect`
    /// see them; they go with the last handle.
    state: ConnState,
    /// Who the client is (`msg.user`, `conn::user()`): the map INIT's
    /// `on_auth` returned or a verified token's claims; `()` if anonymous.
    user: Dynamic,
    /// The rooms the client is in. The hub keeps it in step with its room
    /// index, under its lock; after a disconnect it still lists the rooms
    /// the client was in, for `on_disconnect`.
    rooms: Mutex<BTreeSet<Arc<str>>>,
}

impl ClientHandle {
    /// An anonymous client.
    pub fn new(id: ClientId) -> ClientHandle {
        ClientHandle::with_user(id, Dynamic::UNIT)
    }

    /// A client with identity `user`.
    pub fn with_user(id: ClientId, user: Dynamic) -> ClientHandle {
        let rooms = Mutex::new(BTreeSet::new());
        ClientHandle(Arc::new(Client { id, cancel: Cancel::new(), state: ConnState::default(), user, rooms }))
    }

    /// The client's identity (a copy); `()` if anonymous.
    pub fn user(&self) -> Dynamic {
        self.0.user.clone()
    }

    /// Whether the client has an identity.
    pub fn is_anonymous(&self) -> bool {
        self.0.user.is_unit()
    }

    /// The rooms the client is in, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms_mut().iter().map(|r| r.to_string()).collect()
    }

    /// For the hub only, under its lock.
    pub(crate) fn rooms_mut(&self) -> MutexGuard<'_, BTreeSet<Arc<str>>> {
        self.0.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's `conn::` values.
    pub fn state(&self) -> &ConnState {
        &self.0.state
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

/// Per-connection values (`conn::`), as JSON text like the store's, so a
/// value read back is a copy and its size is what the limit counts. Empty
/// until a plug sets something: an idle connection pays one empty map.
#[derive(Default)]
pub struct ConnState {
    /// A std mutex: held for one map operation, never across a script call.
    inner: Mutex<ConnValues>,
}

#[derive(Default)]
struct ConnValues {
    map: BTreeMap<String, String>,
    /// Keys plus values, against `limits.connStateBytes`.
    bytes: usize,
}

/// Why a `conn::set` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("limits.connStateBytes is {max} bytes and this connection holds {used}; this write needs {needed} more")]
    Full { max: usize, used: usize, needed: usize },
    #[error("a conn:: key is 1 to 1024 bytes, not {0}")]
    BadKey(usize),
}

impl ConnError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ConnError::Full { .. } => ErrorCode::LimitExceeded,
            ConnError::BadKey(_) => ErrorCode::BadArgument,
        }
    }
}

impl ConnState {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnValues> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().map.get(key).cloned()
    }

    /// Set `key` to `json`, unless the connection would hold more than
    /// `max` bytes (replacing a value with a smaller one always works).
    pub fn set(&self, key: &str, json: String, max: usize) -> Result<(), ConnError> {
        if key.is_empty() || key.len() > crate::store::MAX_KEY_BYTES {
            return Err(ConnError::BadKey(key.len()));
        }
        let mut values = self.lock();
        let old = values.map.get(key).map_or(0, |v| key.len() + v.len());
        let new = key.len() + json.len();
        if new > old && values.bytes - old + new > max {
            return Err(ConnError::Full { max, used: values.bytes, needed: new - old });
        }
        values.bytes = values.bytes - old + new;
        values.map.insert(key.to_owned(), json);
        Ok(())
    }

    /// Remove `key`, returning its value.
    pub fn remove(&self, key: &str) -> Option<String> {
        let mut values = self.lock();
        let old = values.map.remove(key)?;
        values.bytes -= key.len() + old.len();
        Some(old)
    }

    /// Every key and value, by key.
    pub fn all(&self) -> Vec<(String, String)> {
        self.lock().map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Bytes held (keys plus values).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_state_counts_bytes_and_refuses_writes_past_the_limit() {
        let state = ConnState::default();
        state.set("nick", "\"ada\"".into(), 20).unwrap();
        assert_eq!(state.bytes(), 4 + 5);
        let err = state.set("bio", "\"a long text\"".into(), 20).unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert!(err.to_string().contains("limits.connStateBytes is 20 bytes"), "{err}");
        assert_eq!(state.get("bio"), None, "a refused write changes nothing");
        state.set("nick", "1".into(), 20).unwrap();
        assert_eq!(state.all(), vec![("nick".to_owned(), "1".to_owned())]);
        assert_eq!(state.remove("nick"), Some("1".into()));
        assert_eq!((state.remove("nick"), state.bytes()), (None, 0));
        assert_eq!(state.set("", "1".into(), 20).unwrap_err().code(), ErrorCode::BadArgument);
        assert_eq!(state.set(&"k".repeat(1025), "1".into(), 1 << 20).unwrap_err(), ConnError::BadKey(1025));
    }
}
