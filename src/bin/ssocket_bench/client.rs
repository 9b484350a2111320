//! A minimal protocol client for benchmarks: one WebSocket connection,
//! requests answered one at a time; and [`connect_light`], the raw
//! connection the load scenarios drive themselves.

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use ssocket::protocol::{decode, encode_parts, EventType, Message};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{connect_async, connect_async_with_config, MaybeTlsStream, WebSocketStream};

/// A client WebSocket connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open a WebSocket with small buffers (4 KiB read, 16 KiB gathered before a
/// write, as the server uses) and Nagle off, so thousands of connections
/// keep the load generator light and small messages are not delayed.
pub async fn connect_light(url: &str) -> Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(16 * 1024);
    let (ws, _) =
        connect_async_with_config(url, Some(config), true).await.with_context(|| format!("cannot connect to {url}"))?;
    Ok(ws)
}

/// Decode a binary frame the server sent.
pub fn decode_frame(bytes: &[u8]) -> Result<Message> {
    decode(bytes).map_err(|e| anyhow!("bad frame from the server: {e}"))
}

/// Encode a MESSAGE-type frame.
pub fn frame(event_type: EventType, event: &str, payload: &str) -> Result<WsMessage> {
    Ok(WsMessage::binary(encode_parts(event_type, event, payload.as_bytes()).map_err(|e| anyhow!("{e}"))?))
}

/// An event no plug answers (files starting with `_` are not plugs): its
/// NOT_FOUND reply is a round trip on any plugs folder.
pub const PING_EVENT: &str = "__ping__";

/// One round trip, so the server has registered this connection (and
/// broadcasts reach it) before the measurement starts.
pub async fn round_trip(ws: &mut Ws) -> Result<()> {
    ask(ws, PING_EVENT).await.map(|_| ())
}

/// Send `event` with `{}` and wait for the first message of that event
/// (other messages are skipped).
pub async fn ask(ws: &mut Ws, event: &str) -> Result<Message> {
    ws.send(frame(EventType::MESSAGE, event, "{}")?).await.context("send")?;
    loop {
        match ws.next().await {
            None => bail!("the server closed the connection"),
            Some(Err(e)) => bail!("connection failed: {e}"),
            Some(Ok(WsMessage::Binary(b))) => {
                let m = decode_frame(&b)?;
                if m.event == event {
                    return Ok(m);
                }
            }
            Some(Ok(WsMessage::Close(f))) => bail!("the server closed the connection: {f:?}"),
            Some(Ok(_)) => {}
        }
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client> {
        let (ws, _) = connect_async(url).await.with_context(|| format!("cannot connect to {url}"))?;
        Ok(Client { ws })
    }

    /// Send a MESSAGE for `event` with a JSON `payload`.
    pub async fn send(&mut self, event: &str, payload: &str) -> Result<()> {
        let bytes = encode_parts(EventType::MESSAGE, event, payload.as_bytes()).map_err(|e| anyhow!("{e}"))?;
        self.ws.send(WsMessage::binary(bytes)).await.context("send")?;
        Ok(())
    }

    /// The next message from the server.
    pub async fn recv(&mut self) -> Result<Message> {
        loop {
            match self.ws.next().await {
                None => bail!("the server closed the connection"),
                Some(Err(e)) => bail!("connection failed: {e}"),
                Some(Ok(WsMessage::Binary(bytes))) => return decode(&bytes).map_err(|e| anyhow!("bad frame: {e}")),
                Some(Ok(WsMessage::Close(frame))) => bail!("the server closed the connection: {frame:?}"),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Close the connection with a close handshake.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Send and wait for the one reply.
    pub async fn request(&mut self, event: &str, payload: &str) -> Result<Message> {
        self.send(event, payload).await?;
        self.recv().await
    }
}
