//! `rooms::` (SPEC 10.2): groups of clients. A room exists while someone is
//! in it; the hub keeps who is where, so a room send, like a broadcast,
//! encodes once and queues for each member.
//!
//! `join` and `leave` act on the sender, or on any client by id; a client
//! is in at most `limits.roomsPerClient` rooms, and leaves them all when it
//! disconnects. INIT's `on_join` / `on_leave` hear of every change.

use rhai::{Array, Dynamic, Engine, ImmutableString, Map, Module, NativeCallContext, Position};

use super::{host, host_error, invocation, HostResult};
use crate::client::ClientId;
use crate::cluster::ClusterError;
use crate::errors::ErrorCode;
use crate::hub::{Backplane, JoinError};
use crate::plugs::invoke::{cluster_error, Invocation, Sender};
use crate::plugs::router::check_room;

pub fn register(engine: &mut Engine, max_rooms: usize) {
    let mut m = Module::new();
    host("join").set_into_module(&mut m, move |ctx: NativeCallContext, room: ImmutableString| -> HostResult<bool> {
        let inv = invocation(&ctx, "rooms::join")?;
        let id = sender(&ctx, &inv, "join")?;
        join(&ctx, &inv, id, &room, max_rooms)
    });
    host("join").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: i64, room: ImmutableString| -> HostResult<bool> {
            let inv = invocation(&ctx, "rooms::join")?;
            join(&ctx, &inv, client_id(id), &room, max_rooms)
        },
    );
    host("leave").set_into_module(&mut m, |ctx: NativeCallContext, room: ImmutableString| -> HostResult<bool> {
        let inv = invocation(&ctx, "rooms::leave")?;
        let id = sender(&ctx, &inv, "leave")?;
        leave(&ctx, &inv, id, &room)
    });
    host("leave").set_into_module(
        &mut m,
        |ctx: NativeCallContext, id: i64, room: ImmutableString| -> HostResult<bool> {
            let inv = invocation(&ctx, "rooms::leave")?;
            leave(&ctx, &inv, client_id(id), &room)
        },
    );
    host("members").set_into_module(&mut m, |ctx: NativeCallContext, room: ImmutableString| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::members")?;
        room_name(&ctx, "members", &room)?;
        let mut ids = inv.router().hub().members(&room);
        ids.extend(remote(&ctx, &inv, "members", |b| b.members(&room))?.unwrap_or_default());
        ids.sort_unstable();
        Ok(ids.into_iter().map(|id| Dynamic::from(id as i64)).collect())
    });
    host("presence").set_into_module(&mut m, |ctx: NativeCallContext, room: ImmutableString| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::presence")?;
        room_name(&ctx, "presence", &room)?;
        let mut members: Vec<(ClientId, Dynamic)> =
            inv.router().hub().member_handles(&room).into_iter().map(|h| (h.id(), h.user())).collect();
        members.extend(remote(&ctx, &inv, "presence", |b| b.presence(&room))?.unwrap_or_default());
        members.sort_by_key(|(id, _)| *id);
        Ok(members
            .into_iter()
            .map(|(id, user)| {
                let entry = Map::from([("client".into(), Dynamic::from(id as i64)), ("user".into(), user)]);
                Dynamic::from_map(entry)
            })
            .collect())
    });
    host("of").set_into_module(&mut m, |ctx: NativeCallContext, id: i64| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::of")?;
        rooms_of(&ctx, &inv, client_id(id))
    });
    host("of").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::of")?;
        let id = sender(&ctx, &inv, "of")?;
        rooms_of(&ctx, &inv, id)
    });
    host("list").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::list")?;
        let mut rooms = inv.router().hub().rooms();
        rooms.extend(remote(&ctx, &inv, "list", |b| b.rooms())?.unwrap_or_default());
        rooms.sort_unstable();
        rooms.dedup();
        Ok(rooms.into_iter().map(Dynamic::from).collect())
    });
    host("send").set_into_module(
        &mut m,
        |ctx: NativeCallContext, room: ImmutableString, reply: Dynamic| -> HostResult<i64> {
            let inv = invocation(&ctx, "rooms::send")?;
            room_name(&ctx, "send", &room)?;
            inv.room_send(&room, reply, ctx.call_position())
        },
    );
    engine.register_static_module("rooms", m.into());
}

/// An id from a script: negative ones name nobody.
fn client_id(id: i64) -> ClientId {
    u64::try_from(id).unwrap_or(0)
}

/// The sender's id, for the forms that act on it.
fn sender(ctx: &NativeCallContext, inv: &Invocation, op: &str) -> HostResult<ClientId> {
    match &inv.sender {
        Sender::Client(client) => Ok(client.id()),
        _ => Err(host_error(
            ErrorCode::NoClient,
            &format!("rooms::{op}: this code runs for no client; name one: rooms::{op}(id, room)"),
            serde_json::json!({}),
            ctx.call_position(),
        )),
    }
}

fn room_name(ctx: &NativeCallContext, op: &str, room: &str) -> HostResult<()> {
    check_room(room).map_err(|why| bad(op, &why, ctx.call_position()))
}

fn bad(op: &str, why: &str, pos: Position) -> Box<rhai::EvalAltResult> {
    host_error(ErrorCode::BadArgument, &format!("rooms::{op}: {why}"), serde_json::json!({}), pos)
}

/// Ask the other nodes, if there are any (off the async workers): None on
/// a single node; `cluster_unavailable` when Redis cannot answer.
fn remote<T>(
    ctx: &NativeCallContext,
    inv: &Invocation,
    op: &str,
    ask: impl FnOnce(&dyn Backplane) -> Result<T, ClusterError>,
) -> HostResult<Option<T>> {
    let Some(backplane) = inv.router().hub().backplane() else { return Ok(None) };
    let answer = inv.wait(|_, _| ask(backplane.as_ref()));
    answer.map(Some).map_err(|e| cluster_error(&format!("rooms::{op}"), e, ctx.call_position()))
}

fn join(ctx: &NativeCallContext, inv: &Invocation, id: ClientId, room: &str, max: usize) -> HostResult<bool> {
    room_name(ctx, "join", room)?;
    match inv.router().hub().join(id, room, max) {
        Ok(joined) => Ok(joined),
        // Another node's client joins there (and its limit applies there).
        Err(JoinError::NoClient) => Ok(remote(ctx, inv, "join", |b| b.join(id, room))?.unwrap_or(false)),
        Err(JoinError::TooMany(n)) => Err(host_error(
            ErrorCode::LimitExceeded,
            &format!("rooms::join: client {id} is in {n} rooms already, the most limits.roomsPerClient allows"),
            serde_json::json!({"limit": "limits.roomsPerClient"}),
            ctx.call_position(),
        )),
    }
}

fn leave(ctx: &NativeCallContext, inv: &Invocation, id: ClientId, room: &str) -> HostResult<bool> {
    room_name(ctx, "leave", room)?;
    let hub = inv.router().hub();
    if hub.handle(id).is_none() {
        return Ok(remote(ctx, inv, "leave", |b| b.leave(id, room))?.unwrap_or(false));
    }
    Ok(hub.leave(id, room))
}

/// A client's rooms: a connected one's (of any node), or the sender's own
/// even after it left (its `on_disconnect` still sees them).
fn rooms_of(ctx: &NativeCallContext, inv: &Invocation, id: ClientId) -> HostResult<Array> {
    let handle = match &inv.sender {
        Sender::Client(client) if client.id() == id => Some(client.clone()),
        _ => inv.router().hub().handle(id),
    };
    let rooms = match handle {
        Some(h) => h.rooms(),
        None => remote(ctx, inv, "of", |b| b.rooms_of(id))?.unwrap_or_default(),
    };
    Ok(rooms.into_iter().map(Dynamic::from).collect())
}
