//! Calls from this node to other nodes over TCP, with Tandem's API key: one connection per
//! address, many requests in flight on it, answers matched by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
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

/// Who waits for which answer on a connection, and whether the connection is gone. Both under
/// one lock: a caller must never register a waiter on a connection whose reader has already
/// ended, or it would wait for an answer nobody will deliver (a peer killed with SIGKILL).
#[derive(Default)]
struct PendingState {
    /// The raw answer frame, by correlation id: the caller decodes it (Kafka or Tandem).
    waiters: HashMap<i32, oneshot::Sender<Bytes>>,
    closed: bool,
}

type Pending = Arc<Mutex<PendingState>>;

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
            if !existing.frames.is_closed() && !existing.pending.lock().closed {
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
            // Kafka and Tandem answers both start with the correlation id.
            while let Some(Ok(frame)) = incoming.next().await {
                let Some(id) = frame.get(..4) else {
                    debug!(%peer, "dropping the connection: an answer without a correlation id");
                    break;
                };
                let correlation_id = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                if let Some(waiter) = reader_pending.lock().waiters.remove(&correlation_id) {
                    let _ = waiter.send(frame.freeze());
                }
            }
            // Everyone still waiting learns the connection is gone, and nobody new waits on it.
            let mut pending = reader_pending.lock();
            pending.closed = true;
            pending.waiters.clear();
        });
        let connection = Arc::new(Connection { frames, pending });
        self.connections
            .lock()
            .insert(address.to_string(), Arc::clone(&connection));
        Ok(connection)
    }

    /// Sends one Tandem request and waits for its answer.
    pub async fn call(
        &self,
        address: &str,
        request: TandemRequest,
    ) -> Result<TandemResponse, Unreachable> {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = encode_tandem_request(correlation_id, &request);
        let answer = self.exchange(address, correlation_id, frame).await?;
        decode_tandem_response(answer)
            .map(|(_, response)| response)
            .map_err(|e| Unreachable {
                address: address.to_string(),
                reason: format!("undecodable answer: {}", e.kind),
            })
    }

    /// Sends one Kafka request (this node acting as a Kafka client of another, as a follower
    /// does with Fetch) and waits for its answer.
    pub async fn call_kafka(
        &self,
        address: &str,
        api_key: ApiKey,
        api_version: i16,
        body: RequestKind,
    ) -> Result<ResponseKind, Unreachable> {
        let bad = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("tandem-replica")));
        let frame = tandem_protocol::encode_request(&header, &body)
            .map_err(|e| bad(format!("cannot encode {api_key:?}: {e}")))?;
        let answer = self.exchange(address, correlation_id, frame).await?;
        tandem_protocol::decode_response(api_key, api_version, answer)
            .map(|(_, response)| response)
            .map_err(|e| bad(format!("undecodable answer: {}", e.kind)))
    }

    /// Sends a frame and waits for the frame that answers it.
    async fn exchange(
        &self,
        address: &str,
        correlation_id: i32,
        frame: Bytes,
    ) -> Result<Bytes, Unreachable> {
        let unreachable = |reason: &str| Unreachable {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let connection = self.connect(address).await?;
        let (waiter, answer) = oneshot::channel();
        {
            let mut pending = connection.pending.lock();
            if pending.closed {
                drop(pending);
                self.connections.lock().remove(address);
                return Err(unreachable("connection closed"));
            }
            pending.waiters.insert(correlation_id, waiter);
        }
        if connection.frames.send(frame).is_err() {
            self.connections.lock().remove(address);
            return Err(unreachable("connection closed"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => {
                self.connections.lock().remove(address);
                Err(unreachable("connection closed"))
            }
            Err(_) => {
                connection.pending.lock().waiters.remove(&correlation_id);
                Err(unreachable("timed out"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A peer that answers one request, then its process dies (SIGKILL): the socket closes
    /// while the client's pooled connection is idle. The next call must fail at once (and the
    /// one after reconnect), not wait out the call timeout on a connection nobody reads.
    #[tokio::test]
    async fn a_connection_the_peer_closed_while_idle_is_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut length = [0u8; 4];
                    if socket.read_exact(&mut length).await.is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
                    if socket.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    let correlation_id =
                        i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                    let answer = tandem_protocol::encode_tandem_response(
                        correlation_id,
                        &TandemResponse::ClusterStatus("{}".into()),
                    );
                    let _ = socket.write_all(&(answer.len() as u32).to_be_bytes()).await;
                    let _ = socket.write_all(&answer).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(socket); // the peer dies
                });
            }
        });
        let client = PeerClient::new(1 << 20);
        let answer = client.call(&address, TandemRequest::ClusterStatus).await;
        assert!(
            matches!(answer, Ok(TandemResponse::ClusterStatus(_))),
            "{answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // the peer is gone, the pool is not told
        let started = std::time::Instant::now();
        let _ = client.call(&address, TandemRequest::ClusterStatus).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a call on a dead pooled connection took {:?}",
            started.elapsed()
        );
    }
}
