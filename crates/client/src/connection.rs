//! One TCP connection to a node: many requests in flight (pipelining), answers matched to
//! callers by correlation id. Kafka answers a connection's requests in order and Tandem's key
//! as soon as each is ready; matching by id serves both. Versions are negotiated once, with
//! ApiVersions, when the connection opens.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tandem_protocol::kafka_protocol::messages::{ApiVersionsRequest, RequestHeader};
use tandem_protocol::kafka_protocol::protocol::StrBytes;
use tandem_protocol::{
    decode_response, decode_tandem_response, encode_request, encode_tandem_request, ApiKey,
    RequestKind, ResponseKind, TandemRequest, TandemResponse,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::{Error, Result};

/// The versions this client speaks per Kafka API: (min, preferred). Topic names throughout.
const WANTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
];

/// The version to use: our preferred one capped by the server's maximum, if the ranges meet.
pub(crate) fn choose_version(ours: (i16, i16), theirs: (i16, i16)) -> Option<i16> {
    let version = ours.1.min(theirs.1);
    (version >= ours.0.max(theirs.0)).then_some(version)
}

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<Bytes>>>>;

pub(crate) struct Connection {
    address: String,
    client_id: String,
    frames: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    next_correlation: AtomicI32,
    /// Server's (min, max) per Kafka api key, from ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects and negotiates versions.
    pub(crate) async fn open(
        address: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        max_frame_bytes: usize,
    ) -> Result<Connection> {
        let unreachable = |reason: String| Error::Unreachable {
            address: address.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable(format!("connect timed out after {connect_timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        // Writer: whatever is queued goes out in one vectored write. Small frames are copied
        // into a staging buffer behind their length prefix; a large one (a produce batch) is
        // written from its own buffer, never copied.
        let writer_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let mut parts = VecDeque::new();
            let mut staging = BytesMut::new();
            while let Some(frame) = outgoing.recv().await {
                let mut queued = queue_frame(&mut parts, &mut staging, frame);
                while queued < 1 << 20 {
                    match outgoing.try_recv() {
                        Ok(frame) => queued += queue_frame(&mut parts, &mut staging, frame),
                        Err(_) => break,
                    }
                }
                if !staging.is_empty() {
                    parts.push_back(staging.split().freeze());
                }
                if write_parts(&mut write, &mut parts).await.is_err() {
                    break;
                }
            }
            writer_closed.store(true, Ordering::Release);
        });

        // Reader: each answer to whoever waits for its correlation id.
        let reader_pending = Arc::clone(&pending);
        let reader_closed = Arc::clone(&closed);
        let mut incoming = FramedRead::new(read, tandem_protocol::frame_codec(max_frame_bytes));
        let peer = address.to_string();
        tokio::spawn(async move {
            loop {
                match incoming.next().await {
                    Some(Ok(frame)) => {
                        let frame = frame.freeze();
                        let Some(id) = frame.get(..4) else {
                            tracing::debug!(%peer, "answer shorter than a correlation id");
                            break;
                        };
                        let id = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                        if let Some(waiter) = reader_pending.lock().remove(&id) {
                            let _ = waiter.send(frame);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection failed");
                        break;
                    }
                    None => break,
                }
            }
            reader_closed.store(true, Ordering::Release);
            // Dropping the senders tells every waiter the connection is gone.
            reader_pending.lock().clear();
        });

        let mut connection = Connection {
            address: address.to_string(),
            client_id: client_id.to_string(),
            frames,
            pending,
            closed,
            next_correlation: AtomicI32::new(1),
            versions: HashMap::new(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("tandem-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = connection
            .call_at(
                ApiKey::ApiVersions,
                3,
                RequestKind::ApiVersions(request),
                request_timeout,
            )
            .await?;
        let ResponseKind::ApiVersions(response) = response else {
            return Err(connection.protocol("ApiVersions answered with another api"));
        };
        if response.error_code != 0 && response.api_keys.is_empty() {
            return Err(Error::server(
                format!("ApiVersions to {address}"),
                response.error_code,
                None,
            ));
        }
        connection.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.frames.is_closed()
    }

    fn protocol(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            address: self.address.clone(),
            reason: reason.into(),
        }
    }

    /// The version to speak for `key` with this node.
    pub(crate) fn version(&self, key: ApiKey) -> Result<i16> {
        let &(_, min, max) = WANTED
            .iter()
            .find(|(k, _, _)| *k == key)
            .ok_or_else(|| Error::Other(format!("{key:?} is not used by this client")))?;
        let theirs = self
            .versions
            .get(&(key as i16))
            .copied()
            .unwrap_or((-1, -1));
        choose_version((min, max), theirs).ok_or_else(|| Error::UnsupportedVersion {
            address: self.address.clone(),
            api: format!("{key:?}"),
            min,
            max,
            server_min: theirs.0,
            server_max: theirs.1,
        })
    }

    fn header(&self, key: ApiKey, version: i16) -> (i32, RequestHeader) {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        (correlation_id, header)
    }

    /// Sends one Kafka request at the negotiated version and waits up to `timeout` for its
    /// answer.
    pub(crate) async fn call(
        &self,
        key: ApiKey,
        body: RequestKind,
        timeout: Duration,
    ) -> Result<ResponseKind> {
        let version = self.version(key)?;
        self.call_at(key, version, body, timeout).await
    }

    async fn call_at(
        &self,
        key: ApiKey,
        version: i16,
        body: RequestKind,
        timeout: Duration,
    ) -> Result<ResponseKind> {
        let (correlation_id, header) = self.header(key, version);
        let frame = encode_request(&header, &body).map_err(|e| Error::Other(e.to_string()))?;
        let answer = self.exchange(correlation_id, frame, timeout).await?;
        let (id, response) = decode_response(key, version, answer)
            .map_err(|e| self.protocol(format!("{key:?} v{version}: {e}")))?;
        if id != correlation_id {
            return Err(self.protocol("correlation id mismatch"));
        }
        Ok(response)
    }

    /// Sends a Kafka request that gets no answer (Produce with acks=0).
    pub(crate) fn send_only(&self, key: ApiKey, body: RequestKind) -> Result<()> {
        let version = self.version(key)?;
        let (_, header) = self.header(key, version);
        let frame = encode_request(&header, &body).map_err(|e| Error::Other(e.to_string()))?;
        self.frames
            .send(frame)
            .map_err(|_| Error::ConnectionClosed {
                address: self.address.clone(),
            })
    }

    /// One request under Tandem's own API key.
    pub(crate) async fn call_tandem(
        &self,
        body: &TandemRequest,
        timeout: Duration,
    ) -> Result<TandemResponse> {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = encode_tandem_request(correlation_id, body);
        let answer = self.exchange(correlation_id, frame, timeout).await?;
        let (id, response) =
            decode_tandem_response(answer).map_err(|e| self.protocol(e.to_string()))?;
        if id != correlation_id {
            return Err(self.protocol("correlation id mismatch"));
        }
        Ok(response)
    }

    async fn exchange(
        &self,
        correlation_id: i32,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let closed = || Error::ConnectionClosed {
            address: self.address.clone(),
        };
        // Closed before the request left: it was certainly not acted on, so even a write that
        // is not idempotent may be retried elsewhere (`Unreachable`, not `ConnectionClosed`).
        let not_sent = || Error::Unreachable {
            address: self.address.clone(),
            reason: "the connection closed before the request was sent".into(),
        };
        if self.is_closed() {
            return Err(not_sent());
        }
        let (waiter, answer) = oneshot::channel();
        self.pending.lock().insert(correlation_id, waiter);
        // The reader marks the connection closed before it drops every waiter: a waiter
        // added after that drop sees the mark here instead of waiting for the timeout.
        if self.is_closed() || self.frames.send(frame).is_err() {
            self.pending.lock().remove(&correlation_id);
            return Err(not_sent());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.pending.lock().remove(&correlation_id);
                Err(Error::Timeout {
                    address: self.address.clone(),
                    after_ms: timeout.as_millis() as u64,
                })
            }
        }
    }
}

/// Frames up to this size are copied into the staging buffer (one iovec for many requests).
const COPIED_FRAME_BYTES: usize = 4096;

/// Queues `frame` behind its 4-byte length prefix; returns the bytes queued.
fn queue_frame(parts: &mut VecDeque<Bytes>, staging: &mut BytesMut, frame: Bytes) -> usize {
    staging.put_u32(frame.len() as u32);
    let len = frame.len() + 4;
    if frame.len() <= COPIED_FRAME_BYTES {
        staging.put_slice(&frame);
    } else {
        parts.push_back(staging.split().freeze());
        parts.push_back(frame);
    }
    len
}

/// Writes every part, in order, with as few `writev` calls as the socket allows.
async fn write_parts(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    parts: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !parts.is_empty() {
        let mut written = {
            let slices: Vec<std::io::IoSlice<'_>> = parts
                .iter()
                .take(64)
                .map(|p| std::io::IoSlice::new(p))
                .collect();
            write.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let front = parts.front_mut().expect("written bytes come from a part");
            if written >= front.len() {
                written -= front.len();
                parts.pop_front();
            } else {
                bytes::Buf::advance(front, written);
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 7 bytes per call, to exercise partial vectored writes.
    struct Trickle(Vec<u8>);

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_go_out_length_prefixed_in_order_small_ones_copied_large_ones_not() {
        let small = Bytes::from_static(b"abc");
        let large = Bytes::from(vec![7u8; COPIED_FRAME_BYTES + 1]);
        let (mut parts, mut staging) = (VecDeque::new(), BytesMut::new());
        let mut queued = queue_frame(&mut parts, &mut staging, small.clone());
        queued += queue_frame(&mut parts, &mut staging, large.clone());
        queued += queue_frame(&mut parts, &mut staging, small.clone());
        parts.push_back(staging.split().freeze());
        assert_eq!(
            parts.len(),
            3,
            "staged prefix+small+prefix, the large frame, prefix+small"
        );
        assert_eq!(
            parts[1].as_ptr(),
            large.as_ptr(),
            "the large frame is not copied"
        );
        let mut out = Trickle(Vec::new());
        write_parts(&mut out, &mut parts).await.unwrap();
        let mut expected = Vec::new();
        for frame in [&small, &large, &small] {
            expected.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            expected.extend_from_slice(frame);
        }
        assert_eq!(out.0, expected);
        assert_eq!(queued, expected.len());
        assert!(parts.is_empty());
    }

    #[test]
    fn versions_are_capped_by_the_server_and_refused_when_disjoint() {
        assert_eq!(choose_version((3, 11), (3, 11)), Some(11));
        assert_eq!(choose_version((3, 11), (0, 9)), Some(9));
        assert_eq!(choose_version((3, 11), (0, 13)), Some(11));
        assert_eq!(choose_version((4, 12), (0, 3)), None);
        assert_eq!(choose_version((1, 6), (-1, -1)), None, "api not served");
    }

    #[test]
    fn every_wanted_range_meets_what_tandem_serves() {
        for &(key, min, max) in WANTED {
            let served = tandem_protocol::supported_range(key).expect("served");
            assert_eq!(
                choose_version((min, max), served),
                Some(max),
                "{key:?}: our preferred version is served"
            );
        }
    }
}
