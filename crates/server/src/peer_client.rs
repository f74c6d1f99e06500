//! Calls from this node to other nodes over TCP, with Tandem's API key: one connection per
//! address, many requests in flight on it, answers matched by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tandem_protocol::{
    decode_tandem_response, encode_tandem_request, TandemRequest, TandemResponse,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tracing::debug;

use crate::node::Unreachable;

/// How long a call may take before it counts as unreachable. Long polls are shorter.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<TandemResponse>>>>;

struct Connection {
    frames: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
}

/// A pool of connections to other nodes.
pub struct PeerClient {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    next_correlation: AtomicI32,
    max_frame_bytes: usize,
}

impl PeerClient {
    pub fn new(max_frame_bytes: usize) -> PeerClient {
        PeerClient {
            connections: Mutex::new(HashMap::new()),
            next_correlation: AtomicI32::new(1),
            max_frame_bytes,
        }
    }

    async fn connect(&self, address: &str) -> Result<Arc<Connection>, Unreachable> {
        if let Some(existing) = self.connections.lock().get(address) {
            if !existing.frames.is_closed() {
                return Ok(Arc::clone(existing));
            }
        }
        let unreachable = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        // Writer: frames out, length-prefixed.
        tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                let length = (frame.len() as u32).to_be_bytes();
                if write.write_all(&length).await.is_err() || write.write_all(&frame).await.is_err()
                {
                    return;
                }
            }
        });
        // Reader: answers in, to whoever waits for that correlation id.
        let reader_pending = Arc::clone(&pending);
        let mut incoming =
            FramedRead::new(read, tandem_protocol::frame_codec(self.max_frame_bytes));
        let peer = address.to_string();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = incoming.next().await {
                match decode_tandem_response(frame.freeze()) {
                    Ok((correlation_id, response)) => {
                        if let Some(waiter) = reader_pending.lock().remove(&correlation_id) {
                            let _ = waiter.send(response);
                        }
                    }
                    Err(e) => {
                        debug!(%peer, error = %e.kind, "dropping the connection: undecodable answer");
                        break;
                    }
                }
            }
            // Everyone still waiting learns the connection is gone.
            reader_pending.lock().clear();
        });
        let connection = Arc::new(Connection { frames, pending });
        self.connections
            .lock()
            .insert(address.to_string(), Arc::clone(&connection));
        Ok(connection)
    }

    /// Sends one request and waits for its answer.
    pub async fn call(
        &self,
        address: &str,
        request: TandemRequest,
    ) -> Result<TandemResponse, Unreachable> {
        let unreachable = |reason: &str| Unreachable {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let connection = self.connect(address).await?;
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        connection.pending.lock().insert(correlation_id, waiter);
        let frame = encode_tandem_request(correlation_id, &request);
        if connection.frames.send(frame).is_err() {
            self.connections.lock().remove(address);
            return Err(unreachable("connection closed"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => {
                self.connections.lock().remove(address);
                Err(unreachable("connection closed"))
            }
            Err(_) => {
                connection.pending.lock().remove(&correlation_id);
                Err(unreachable("timed out"))
            }
        }
    }
}
