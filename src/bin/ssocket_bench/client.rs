//! A minimal protocol client for benchmarks: one WebSocket connection,
//! requests answered one at a time.

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use ssocket::protocol::{decode, encode_parts, EventType, Message};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

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
