//! What one node tells the others over Redis pub/sub: a message to deliver
//! (to everyone, a room, or one client) or a command (join or leave a room
//! for a client, disconnect everyone). Binary and pure: the message's wire
//! bytes are carried as they are, encoded once for every node and every
//! receiver.
//!
//! ```text
//! byte 0     kind (1 all, 2 room, 3 to, 4 kick all, 5 join, 6 leave)
//! bytes 1-4  origin node, u32 BE
//! all        except u64 BE (0: nobody), frame
//! room       except u64 BE, room length u8, room, frame
//! to         client u64 BE, frame
//! join/leave client u64 BE, room length u8, room
//! ```

use crate::client::ClientId;

/// One envelope, borrowed from its bytes when decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// To every client but `except`.
    All { except: Option<ClientId>, frame: &'a [u8] },
    /// To the members of `room` but `except`.
    Room { room: &'a str, except: Option<ClientId>, frame: &'a [u8] },
    /// To one client.
    To { client: ClientId, frame: &'a [u8] },
    /// Close every client (`server.kick_all()`).
    KickAll,
    /// Put a client in a room (`rooms::join(id, room)` from another node).
    Join { client: ClientId, room: &'a str },
    /// Take a client out of a room.
    Leave { client: ClientId, room: &'a str },
}

/// An envelope that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cluster message is malformed: {0}")]
pub struct BadEnvelope(&'static str);

const ALL: u8 = 1;
const ROOM: u8 = 2;
const TO: u8 = 3;
const KICK_ALL: u8 = 4;
const JOIN: u8 = 5;
const LEAVE: u8 = 6;

impl<'a> Envelope<'a> {
    /// The bytes to publish, from node `origin`.
    pub fn encode(&self, origin: u32) -> Vec<u8> {
        let frame_len = match self {
            Envelope::All { frame, .. } | Envelope::Room { frame, .. } | Envelope::To { frame, .. } => frame.len(),
            _ => 0,
        };
        let mut out = Vec::with_capacity(5 + 8 + 1 + 255 + frame_len);
        let push_room = |out: &mut Vec<u8>, room: &str| {
            // Room names are at most 128 bytes (router::MAX_ROOM_LEN).
            let room = &room.as_bytes()[..room.len().min(255)];
            out.push(room.len() as u8);
            out.extend_from_slice(room);
        };
        match self {
            Envelope::All { except, frame } => {
                head(&mut out, ALL, origin);
                out.extend_from_slice(&except.unwrap_or(0).to_be_bytes());
                out.extend_from_slice(frame);
            }
            Envelope::Room { room, except, frame } => {
                head(&mut out, ROOM, origin);
                out.extend_from_slice(&except.unwrap_or(0).to_be_bytes());
                push_room(&mut out, room);
                out.extend_from_slice(frame);
            }
            Envelope::To { client, frame } => {
                head(&mut out, TO, origin);
                out.extend_from_slice(&client.to_be_bytes());
                out.extend_from_slice(frame);
            }
            Envelope::KickAll => head(&mut out, KICK_ALL, origin),
            Envelope::Join { client, room } | Envelope::Leave { client, room } => {
                head(&mut out, if matches!(self, Envelope::Join { .. }) { JOIN } else { LEAVE }, origin);
                out.extend_from_slice(&client.to_be_bytes());
                push_room(&mut out, room);
            }
        }
        out
    }

    /// The origin node and the envelope.
    pub fn decode(bytes: &'a [u8]) -> Result<(u32, Envelope<'a>), BadEnvelope> {
        let mut r = Reader(bytes);
        let kind = r.u8()?;
        let origin = u32::from_be_bytes(r.take(4)?.try_into().map_err(|_| BadEnvelope("origin"))?);
        let envelope = match kind {
            ALL => Envelope::All { except: nonzero(r.u64()?), frame: r.rest() },
            ROOM => {
                let except = nonzero(r.u64()?);
                Envelope::Room { except, room: r.room()?, frame: r.rest() }
            }
            TO => Envelope::To { client: r.u64()?, frame: r.rest() },
            KICK_ALL => Envelope::KickAll,
            JOIN => Envelope::Join { client: r.u64()?, room: r.room()? },
            LEAVE => Envelope::Leave { client: r.u64()?, room: r.room()? },
            _ => return Err(BadEnvelope("unknown kind")),
        };
        Ok((origin, envelope))
    }
}

fn head(out: &mut Vec<u8>, kind: u8, origin: u32) {
    out.push(kind);
    out.extend_from_slice(&origin.to_be_bytes());
}

fn nonzero(id: u64) -> Option<ClientId> {
    (id != 0).then_some(id)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadEnvelope> {
        if self.0.len() < n {
            return Err(BadEnvelope("too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BadEnvelope> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, BadEnvelope> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| BadEnvelope("id"))?))
    }

    fn room(&mut self) -> Result<&'a str, BadEnvelope> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| BadEnvelope("room name not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let frame = b"\0\0\0\x09\x01\x01xyz";
        for e in [
            Envelope::All { except: None, frame },
            Envelope::All { except: Some(7), frame },
            Envelope::Room { room: "lobby", except: Some(1 << 40), frame },
            Envelope::To { client: 42, frame: b"" },
            Envelope::KickAll,
            Envelope::Join { client: 9, room: "r" },
            Envelope::Leave { client: 9, room: "é" },
        ] {
            let bytes = e.encode(3);
            assert_eq!(Envelope::decode(&bytes), Ok((3, e.clone())), "{e:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\x01", b"\x01\0\0\0\x01\0", b"\x09\0\0\0\x01", b"\x02\0\0\0\x01\0\0\0\0\0\0\0\0\x05ab"]
        {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::decode(&bytes);
        }
    }
}
