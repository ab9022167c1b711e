//! Following finalized heads over one WebSocket subscription, so that a new block is read as soon
//! as it is final instead of at the next poll.
//!
//! 1. TCP connect (within [`CONNECT_TIMEOUT`]); for `wss://` TLS with the same rustls
//!    configuration as the HTTP calls (`crate::https`); the WebSocket handshake; every incoming
//!    message and frame capped at the client's answer limit ([`super::transport::MAX_ANSWER`]).
//! 2. `chain_subscribeFinalizedHeads` (id 1), answered with a subscription id; steps 1 and 2
//!    within [`super::transport::CALL_TIMEOUT`].
//! 3. Each `chain_finalizedHead` notification of that subscription yields the header's block
//!    number (a Substrate node sends the current finalized head first, so a new subscription
//!    also catches up on what was missed while it was down).
//!
//! Anything else ends the stream with an error: the connection closing or failing, an error
//! answer, a notification of another method or subscription, a header without a number, a
//! binary or oversized message. Notifications only trigger reads: what is read, and whether the
//! registry is fresh, is still decided by the reads themselves, so a lost or lying subscription
//! can delay an update until the next poll but never admit anyone.

use super::transport::RpcError;
use futures::stream::{BoxStream, StreamExt};
use futures::SinkExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// How long the TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The JSON-RPC method of the notifications.
const NOTIFICATION: &str = "chain_finalizedHead";

/// A byte stream the WebSocket runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// Where and how to subscribe.
#[derive(Clone)]
pub(crate) struct Subscriber {
    /// The `ws://` or `wss://` URL.
    pub url: hyper::Uri,
    /// The TLS configuration of `wss://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The largest message read.
    pub max_message: usize,
    /// How long connecting and subscribing may take.
    pub timeout: Duration,
}

enum State {
    Connect(Subscriber),
    Live { ws: Box<Ws>, id: Value, max: usize },
    Done,
}

impl Subscriber {
    /// The finalized heads' numbers, as notified; the stream connects when first polled and
    /// ends after its first error.
    pub(crate) fn follow(self) -> BoxStream<'static, Result<u64, RpcError>> {
        futures::stream::unfold(State::Connect(self), |state| async move {
            match state {
                State::Done => None,
                State::Connect(s) => {
                    let max = s.max_message;
                    let subscribed = match tokio::time::timeout(s.timeout, s.subscribe()).await {
                        Ok(r) => r,
                        Err(_) => Err(RpcError::Timeout),
                    };
                    match subscribed {
                        Ok((ws, id)) => Some(next_head(ws, id, max).await),
                        Err(e) => Some((Err(e), State::Done)),
                    }
                }
                State::Live { ws, id, max } => Some(next_head(ws, id, max).await),
            }
        })
        .boxed()
    }

    async fn connect(&self) -> Result<Ws, RpcError> {
        let url = &self.url;
        let tls = match url.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(garbage("a subscription needs a ws:// or wss:// URL")),
        };
        let host = url
            .host()
            .ok_or_else(|| garbage("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| RpcError::Timeout)?
        .map_err(|e| RpcError::Unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| garbage(&format!("TLS server name {host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| RpcError::Unreachable(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let config = WebSocketConfig::default()
            // Notifications are headers of a few hundred bytes: no need for the default 128 KiB.
            .read_buffer_size(16 << 10)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message));
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url.to_string(), io, Some(config))
                .await
                .map_err(|e| ws_error(e, self.max_message))?;
        Ok(ws)
    }

    async fn subscribe(&self) -> Result<(Box<Ws>, Value), RpcError> {
        let mut ws = Box::new(self.connect().await?);
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeFinalizedHeads", "params": []});
        ws.send(Message::text(call.to_string()))
            .await
            .map_err(|e| ws_error(e, self.max_message))?;
        loop {
            let v = match read_json(&mut ws, self.max_message).await? {
                Some(v) => v,
                None => continue,
            };
            if v.get("id") != Some(&json!(1)) {
                return Err(garbage("a message before the subscription's answer"));
            }
            if let Some(err) = v.get("error") {
                return Err(RpcError::server("chain_subscribeFinalizedHeads", err));
            }
            // Substrate's ids are strings; older nodes used numbers.
            return match v.get("result") {
                Some(id @ Value::String(s)) if !s.is_empty() && s.len() <= 128 => {
                    Ok((ws, id.clone()))
                }
                Some(id @ Value::Number(_)) => Ok((ws, id.clone())),
                _ => Err(garbage("subscription answered without a subscription id")),
            };
        }
    }
}

/// Reads the next notification of subscription `id`.
async fn next_head(mut ws: Box<Ws>, id: Value, max: usize) -> (Result<u64, RpcError>, State) {
    loop {
        let v = match read_json(&mut ws, max).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => return (Err(e), State::Done),
        };
        return match head_of(&v, &id) {
            Ok(n) => (Ok(n), State::Live { ws, id, max }),
            Err(e) => (Err(e), State::Done),
        };
    }
}

/// The next text message as JSON; `None` for a ping or pong (answered by tungstenite).
async fn read_json(ws: &mut Ws, max: usize) -> Result<Option<Value>, RpcError> {
    match ws.next().await {
        None => Err(RpcError::Unreachable("the subscription was closed".into())),
        Some(Err(e)) => Err(ws_error(e, max)),
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
            .map(Some)
            .map_err(|e| garbage(&format!("notification is not JSON: {e}"))),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Close(_))) => Err(RpcError::Unreachable(
            "the node closed the subscription".into(),
        )),
        Some(Ok(Message::Binary(_) | Message::Frame(_))) => {
            Err(garbage("a binary message on the subscription"))
        }
    }
}

/// The block number of a `chain_finalizedHead` notification of subscription `id`.
fn head_of(v: &Value, id: &Value) -> Result<u64, RpcError> {
    if v.get("method").and_then(Value::as_str) != Some(NOTIFICATION) {
        return Err(garbage("not a chain_finalizedHead notification"));
    }
    let params = v
        .get("params")
        .ok_or_else(|| garbage("notification without params"))?;
    if params.get("subscription") != Some(id) {
        return Err(garbage("a notification of another subscription"));
    }
    params
        .get("result")
        .and_then(super::header_number)
        .ok_or_else(|| garbage("notified header without a block number"))
}

fn garbage(what: &str) -> RpcError {
    RpcError::Garbage(what.to_string())
}

fn ws_error(e: WsError, max: usize) -> RpcError {
    match e {
        WsError::Capacity(_) => RpcError::TooLarge(max),
        WsError::Http(resp) => RpcError::Status(resp.status().as_u16()),
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            RpcError::Unreachable("the subscription was closed".into())
        }
        WsError::Io(e) => RpcError::Unreachable(e.to_string()),
        other => garbage(&format!("WebSocket: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_checked() {
        let id = json!("abc");
        let ok = json!({"jsonrpc": "2.0", "method": NOTIFICATION,
            "params": {"subscription": "abc", "result": {"number": "0x1f", "parentHash": "0x00"}}});
        assert_eq!(head_of(&ok, &id).unwrap(), 31);
        for bad in [
            json!({"method": "chain_newHead", "params": {"subscription": "abc", "result": {"number": "0x1"}}}),
            json!({"method": NOTIFICATION, "params": {"subscription": "xyz", "result": {"number": "0x1"}}}),
            json!({"method": NOTIFICATION, "params": {"subscription": "abc", "result": {"number": 1}}}),
            json!({"method": NOTIFICATION, "params": {"subscription": "abc", "result": {}}}),
            json!({"method": NOTIFICATION, "params": {"subscription": "abc", "result": {"number": "0xzz"}}}),
            json!({"method": NOTIFICATION}),
            json!({"id": 1, "result": "abc"}),
            json!([]),
        ] {
            assert!(head_of(&bad, &id).is_err(), "{bad}");
        }
    }
}
