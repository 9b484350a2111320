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
use crate::errors::ErrorCode;
use crate::hub::JoinError;
use crate::plugs::invoke::{Invocation, Sender};
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
        Ok(inv.router().hub().members(&room).into_iter().map(|id| Dynamic::from(id as i64)).collect())
    });
    host("presence").set_into_module(&mut m, |ctx: NativeCallContext, room: ImmutableString| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::presence")?;
        room_name(&ctx, "presence", &room)?;
        let members = inv.router().hub().member_handles(&room);
        Ok(members
            .into_iter()
            .map(|h| {
                let entry = Map::from([("client".into(), Dynamic::from(h.id() as i64)), ("user".into(), h.user())]);
                Dynamic::from_map(entry)
            })
            .collect())
    });
    host("of").set_into_module(&mut m, |ctx: NativeCallContext, id: i64| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::of")?;
        Ok(rooms_of(&inv, client_id(id)))
    });
    host("of").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::of")?;
        let id = sender(&ctx, &inv, "of")?;
        Ok(rooms_of(&inv, id))
    });
    host("list").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Array> {
        let inv = invocation(&ctx, "rooms::list")?;
        Ok(inv.router().hub().rooms().into_iter().map(Dynamic::from).collect())
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

fn join(ctx: &NativeCallContext, inv: &Invocation, id: ClientId, room: &str, max: usize) -> HostResult<bool> {
    room_name(ctx, "join", room)?;
    match inv.router().hub().join(id, room, max) {
        Ok(joined) => Ok(joined),
        Err(JoinError::NoClient) => Ok(false),
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
    Ok(inv.router().hub().leave(id, room))
}

/// A client's rooms: a connected one's, or the sender's own even after it
/// left (its `on_disconnect` still sees them).
fn rooms_of(inv: &Invocation, id: ClientId) -> Array {
    let handle = match &inv.sender {
        Sender::Client(client) if client.id() == id => Some(client.clone()),
        _ => inv.router().hub().handle(id),
    };
    handle.map(|h| h.rooms().into_iter().map(Dynamic::from).collect()).unwrap_or_default()
}
