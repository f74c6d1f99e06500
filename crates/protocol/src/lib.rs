//! Tandem's wire codec, shared by the server and the client.
//!
//! One listener, one framing: every frame is a 4-byte big-endian length then the frame
//! ([`frame_codec`]). A frame is either a Kafka request/response (via the `kafka-protocol`
//! crate, for the API keys and versions in [`supported_versions`]) or a Tandem one under
//! [`TANDEM_API_KEY`]. See docs/protocol.md.
//!
//! Bad input never panics or aborts: every Kafka request (and response) is walked against its
//! schema before kafka-protocol decodes it, so no claimed length can make it allocate more
//! than the frame could hold (see `schema.rs` and docs/protocol.md, "The allocation hazard").

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{FetchResponse, InitProducerIdResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

pub mod errors;
mod schema;
mod tandem;

pub use kafka_protocol;
pub use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind,
};
pub use tandem::{
    decode_tandem_response, encode_tandem_request, encode_tandem_response, ByteString, Durability,
    KvEntry, KvOp, KvQuery, KvToken, ParseDurabilityError, ReadConsistency, TandemRequest,
    TandemResponse, TANDEM_API_KEY, TANDEM_API_VERSION,
};

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// 4-byte big-endian length prefix, then the frame; refuses frames over the limit (decoding
/// and encoding both return an `io::Error` of kind `InvalidData`; close the connection).
pub fn frame_codec(max_frame_bytes: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// A decoded request frame.
// Not boxed: one Request lives per in-flight frame, and the shape is shared with the server.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Kafka {
        header: RequestHeader,
        body: RequestKind,
    },
    Tandem {
        correlation_id: i32,
        api_version: i16,
        body: TandemRequest,
    },
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        match self {
            Request::Kafka { header, .. } => header.correlation_id,
            Request::Tandem { correlation_id, .. } => *correlation_id,
        }
    }

    /// The raw api key (Kafka's, or [`TANDEM_API_KEY`]).
    pub fn api_key(&self) -> i16 {
        match self {
            Request::Kafka { header, .. } => header.request_api_key,
            Request::Tandem { .. } => TANDEM_API_KEY,
        }
    }

    pub fn api_version(&self) -> i16 {
        match self {
            Request::Kafka { header, .. } => header.request_api_version,
            Request::Tandem { api_version, .. } => *api_version,
        }
    }
}

/// Why a frame could not be decoded, with whatever of its header could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (api key {api_key:?}, version {api_version:?}, correlation id {correlation_id:?})")]
pub struct DecodeError {
    pub correlation_id: Option<i32>,
    pub api_key: Option<i16>,
    pub api_version: Option<i16>,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("unsupported version")]
    UnsupportedVersion,
    #[error("unknown or unserved api key")]
    UnknownApiKey,
    #[error("malformed frame: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("api key {0} is not one kafka-protocol knows")]
    UnknownApiKey(i16),
    #[error("the body is a {body:?} message but the api key is {api_key:?}")]
    Mismatch { api_key: ApiKey, body: ApiKey },
    #[error("kafka-protocol cannot encode {api_key:?} v{version}: {message}")]
    Kafka {
        api_key: ApiKey,
        version: i16,
        message: String,
    },
}

/// The versions we serve: (api key, min, max), intersected with what kafka-protocol supports.
/// Every version keeps topic *names* (see docs/protocol.md for each cap).
pub fn supported_versions() -> &'static [(ApiKey, i16, i16)] {
    static VERSIONS: std::sync::OnceLock<Vec<(ApiKey, i16, i16)>> = std::sync::OnceLock::new();
    VERSIONS.get_or_init(|| {
        const OURS: &[(ApiKey, i16, i16)] = &[
            (ApiKey::Produce, 3, 11),
            (ApiKey::Fetch, 4, 12),
            (ApiKey::ListOffsets, 1, 6),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::OffsetForLeaderEpoch, 2, 4),
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::CreateTopics, 2, 7),
            (ApiKey::DeleteTopics, 1, 5),
            (ApiKey::InitProducerId, 0, 4),
            (ApiKey::DescribeCluster, 0, 2),
        ];
        OURS.iter()
            .filter_map(|&(key, min, max)| {
                let theirs = key.valid_versions();
                let (lo, hi) = (min.max(theirs.min), max.min(theirs.max));
                (lo <= hi).then_some((key, lo, hi))
            })
            .collect()
    })
}

/// Our version range for a Kafka api key, if we serve it.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    supported_versions()
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// The ApiVersions answer: error NONE and our ranges (no features advertised).
pub fn api_versions_response() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = errors::NONE;
    r.api_keys = supported_versions()
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    b.get(at..at + 2).map(|s| i16::from_be_bytes([s[0], s[1]]))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes a request frame (no length prefix). Never panics and never allocates more than a
/// small multiple of the frame's size, whatever the bytes.
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    let api_key = be_i16(&frame, 0);
    let api_version = be_i16(&frame, 2);
    let correlation_id = be_i32(&frame, 4);
    let fail = |kind| DecodeError {
        correlation_id,
        api_key,
        api_version,
        kind,
    };
    let (Some(raw_key), Some(version), Some(corr)) = (api_key, api_version, correlation_id) else {
        return Err(fail(DecodeErrorKind::Malformed(format!(
            "{}-byte frame is shorter than a request header",
            frame.len()
        ))));
    };

    if raw_key == TANDEM_API_KEY {
        if version != TANDEM_API_VERSION {
            return Err(fail(DecodeErrorKind::UnsupportedVersion));
        }
        let body = tandem::decode_tandem_body(&frame[8..])
            .map_err(|m| fail(DecodeErrorKind::Malformed(m)))?;
        return Ok(Request::Tandem {
            correlation_id: corr,
            api_version: version,
            body,
        });
    }

    let key = ApiKey::try_from(raw_key).map_err(|_| fail(DecodeErrorKind::UnknownApiKey))?;
    let (Some((lo, hi)), Some(schema)) = (supported_range(key), schema::request_schema(key)) else {
        return Err(fail(DecodeErrorKind::UnknownApiKey));
    };
    if version < lo || version > hi {
        return Err(fail(DecodeErrorKind::UnsupportedVersion));
    }

    // Walk first (the allocation hazard), then let kafka-protocol build the structs.
    let header_version = key.request_header_version(version);
    let header_len = schema::walk_request_header(&frame, header_version).map_err(|e| {
        fail(DecodeErrorKind::Malformed(format!(
            "request header: {}",
            e.0
        )))
    })?;
    let body_len = schema::walk_message(&frame[header_len..], &schema, version).map_err(|e| {
        fail(DecodeErrorKind::Malformed(format!(
            "{key:?} v{version}: {}",
            e.0
        )))
    })?;
    let trailing = frame.len() - header_len - body_len;
    if trailing > 0 {
        // Kafka brokers ignore bytes after the body too; worth a note, not a disconnect.
        tracing::debug!(?key, version, trailing, "request has trailing bytes");
    }

    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| fail(DecodeErrorKind::Malformed(format!("request header: {e}"))))?;
    let body = RequestKind::decode(key, &mut buf, version).map_err(|e| {
        fail(DecodeErrorKind::Malformed(format!(
            "{key:?} v{version}: {e}"
        )))
    })?;
    if buf.len() != trailing {
        // Our schema and kafka-protocol read different lengths: a bug on our side. Refuse
        // rather than trust a walk that did not cover what was decoded.
        tracing::error!(
            ?key,
            version,
            walked = header_len + body_len,
            decoded = frame.len() - buf.len(),
            "schema walk disagrees with kafka-protocol"
        );
        return Err(fail(DecodeErrorKind::Malformed(format!(
            "{key:?} v{version}: schema walk and decoder disagree"
        ))));
    }
    Ok(Request::Kafka { header, body })
}

/// What to send back when [`decode_request`] failed, if anything can be answered: for an
/// unsupported version, UNSUPPORTED_VERSION (35) — for ApiVersions, the full ApiVersions
/// response with error 35 and our ranges, header v0 (what librdkafka and the Java client
/// expect); for other keys a response of the requested version where that version has a
/// top-level error code. `None` means close the connection (as a Kafka broker does).
pub fn error_response(err: &DecodeError) -> Option<Bytes> {
    if err.kind != DecodeErrorKind::UnsupportedVersion {
        return None;
    }
    let (corr, raw_key, version) = (err.correlation_id?, err.api_key?, err.api_version?);
    if raw_key == TANDEM_API_KEY {
        let body = TandemResponse::Error {
            error_code: errors::UNSUPPORTED_VERSION,
            message: format!(
                "Tandem api version {version} is not supported; this node speaks {TANDEM_API_VERSION}"
            ),
        };
        return Some(encode_tandem_response(corr, &body));
    }
    let key = ApiKey::try_from(raw_key).ok()?;
    let body = match key {
        ApiKey::ApiVersions => {
            // Kafka's rule: a client whose ApiVersions version is too new gets a v0 body.
            let mut r = api_versions_response();
            r.error_code = errors::UNSUPPORTED_VERSION;
            return encode_response(key, 0, corr, &ResponseKind::ApiVersions(r)).ok();
        }
        ApiKey::Fetch if version >= 7 => {
            let mut r = FetchResponse::default();
            r.error_code = errors::UNSUPPORTED_VERSION;
            ResponseKind::Fetch(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdResponse::default();
            r.error_code = errors::UNSUPPORTED_VERSION;
            r.producer_id = (-1).into();
            r.producer_epoch = -1;
            ResponseKind::InitProducerId(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = kafka_protocol::messages::DescribeClusterResponse::default();
            r.error_code = errors::UNSUPPORTED_VERSION;
            ResponseKind::DescribeCluster(r)
        }
        ApiKey::Metadata if version >= 13 => {
            let mut r = kafka_protocol::messages::MetadataResponse::default();
            r.error_code = errors::UNSUPPORTED_VERSION;
            ResponseKind::Metadata(r)
        }
        _ => return None,
    };
    // Only versions kafka-protocol can encode get an answer; others are closed.
    encode_response(key, version, corr, &body).ok()
}

/// The api key a response body belongs to, for the kinds we serve.
fn response_kind_key(body: &ResponseKind) -> Option<ApiKey> {
    Some(match body {
        ResponseKind::ApiVersions(_) => ApiKey::ApiVersions,
        ResponseKind::Metadata(_) => ApiKey::Metadata,
        ResponseKind::Produce(_) => ApiKey::Produce,
        ResponseKind::Fetch(_) => ApiKey::Fetch,
        ResponseKind::ListOffsets(_) => ApiKey::ListOffsets,
        ResponseKind::CreateTopics(_) => ApiKey::CreateTopics,
        ResponseKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        ResponseKind::InitProducerId(_) => ApiKey::InitProducerId,
        ResponseKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        ResponseKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        _ => return None,
    })
}

/// The api key a request body belongs to, for the kinds we serve.
fn request_kind_key(body: &RequestKind) -> Option<ApiKey> {
    Some(match body {
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        RequestKind::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        _ => return None,
    })
}

/// Encodes a response frame body (no length prefix): the response header (right version,
/// v0 for ApiVersions) then the body.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    if let Some(body_key) = response_kind_key(body) {
        if body_key != api_key {
            return Err(EncodeError::Mismatch {
                api_key,
                body: body_key,
            });
        }
    }
    let kafka_err = |message: String| EncodeError::Kafka {
        api_key,
        version: api_version,
        message,
    };
    let mut out = BytesMut::with_capacity(256);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut out, api_key.response_header_version(api_version))
        .map_err(|e| kafka_err(e.to_string()))?;
    body.encode(&mut out, api_version)
        .map_err(|e| kafka_err(e.to_string()))?;
    Ok(out.freeze())
}

/// Client side: encodes a request frame body (no length prefix): header then body.
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> Result<Bytes, EncodeError> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| EncodeError::UnknownApiKey(header.request_api_key))?;
    if let Some(body_key) = request_kind_key(body) {
        if body_key != api_key {
            return Err(EncodeError::Mismatch {
                api_key,
                body: body_key,
            });
        }
    }
    let version = header.request_api_version;
    let kafka_err = |message: String| EncodeError::Kafka {
        api_key,
        version,
        message,
    };
    let mut out = BytesMut::with_capacity(256);
    header
        .encode(&mut out, api_key.request_header_version(version))
        .map_err(|e| kafka_err(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| kafka_err(e.to_string()))?;
    Ok(out.freeze())
}

/// Client side: decodes the response to a request of this key and version (no length
/// prefix). Walked against the schema first, like requests, so a hostile server cannot abort
/// the client either. An ApiVersions response that fails at `api_version` (or says
/// UNSUPPORTED_VERSION) is retried as v0, the form a server uses for a too-new request.
pub fn decode_response(
    api_key: ApiKey,
    api_version: i16,
    frame: Bytes,
) -> Result<(i32, ResponseKind), DecodeError> {
    let first = decode_response_at(api_key, api_version, frame.clone());
    if api_key != ApiKey::ApiVersions || api_version == 0 {
        return first;
    }
    let needs_v0 = match &first {
        Err(_) => true,
        Ok((_, ResponseKind::ApiVersions(r))) => {
            r.error_code == errors::UNSUPPORTED_VERSION && r.api_keys.is_empty()
        }
        Ok(_) => false,
    };
    if needs_v0 {
        if let Ok(v0) = decode_response_at(api_key, 0, frame) {
            return Ok(v0);
        }
    }
    first
}

fn decode_response_at(
    api_key: ApiKey,
    api_version: i16,
    frame: Bytes,
) -> Result<(i32, ResponseKind), DecodeError> {
    let fail = |kind| DecodeError {
        correlation_id: be_i32(&frame, 0),
        api_key: Some(api_key as i16),
        api_version: Some(api_version),
        kind,
    };
    let (Some((lo, hi)), Some(schema)) =
        (supported_range(api_key), schema::response_schema(api_key))
    else {
        return Err(fail(DecodeErrorKind::UnknownApiKey));
    };
    if api_version < lo || api_version > hi {
        return Err(fail(DecodeErrorKind::UnsupportedVersion));
    }
    let header_version = api_key.response_header_version(api_version);
    let header_len = schema::walk_response_header(&frame, header_version).map_err(|e| {
        fail(DecodeErrorKind::Malformed(format!(
            "response header: {}",
            e.0
        )))
    })?;
    let body_len =
        schema::walk_message(&frame[header_len..], &schema, api_version).map_err(|e| {
            fail(DecodeErrorKind::Malformed(format!(
                "{api_key:?} v{api_version} response: {}",
                e.0
            )))
        })?;
    let mut buf = frame.clone();
    let header = ResponseHeader::decode(&mut buf, header_version)
        .map_err(|e| fail(DecodeErrorKind::Malformed(format!("response header: {e}"))))?;
    let body = ResponseKind::decode(api_key, &mut buf, api_version).map_err(|e| {
        fail(DecodeErrorKind::Malformed(format!(
            "{api_key:?} v{api_version} response: {e}"
        )))
    })?;
    if frame.len() - buf.len() != header_len + body_len {
        tracing::error!(
            ?api_key,
            api_version,
            "response schema walk disagrees with kafka-protocol"
        );
        return Err(fail(DecodeErrorKind::Malformed(format!(
            "{api_key:?} v{api_version} response: schema walk and decoder disagree"
        ))));
    }
    Ok((header.correlation_id, body))
}

/// Writes the 4-byte length prefix and the frame, for callers not using [`frame_codec`]
/// (tests, simple blocking clients).
pub fn with_length_prefix(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + 4);
    out.put_u32(frame.len() as u32);
    out.put_slice(frame);
    out.freeze()
}

/// Tandem's extensions of Kafka's Fetch, carried as tagged fields of a partition's data in
/// the response, and of a partition in a follower's request (Fetch v12+, where tagged fields
/// exist). A follower replicates with Kafka's own Fetch (DESIGN.md); these carry what a Tandem
/// leader and its followers tell each other beyond Kafka's fields. Kafka clients ignore tags
/// they do not know.
pub mod fetch_tags {
    /// i64, big-endian: flush your log up to here and report it (`durability = flushed`).
    pub const FLUSH_UP_TO: i32 = 10_000;
    /// i64, big-endian: the leader's log end offset.
    pub const LOG_END_OFFSET: i32 = 10_001;
    /// i64, big-endian: the leader's compaction horizon (tombstones below it may be gone): a
    /// follower appending batches from below it raises its own horizon that far.
    pub const COMPACTION_HORIZON: i32 = 10_002;
    /// i64, big-endian, in a follower's *request* (a partition of Fetch v12+): the HW the
    /// follower knows. The leader answers at once, without a long poll, while its HW is above
    /// it, so a follower never misses a HW whose answer was lost (docs/protocol.md).
    pub const KNOWN_HIGH_WATERMARK: i32 = 10_003;
    /// The version a follower's Fetch uses: the first with tagged fields and diverging epochs.
    pub const REPLICA_FETCH_VERSION: i16 = 12;

    pub fn encode_i64(value: i64) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&value.to_be_bytes())
    }

    pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(bytes.try_into().ok()?))
    }
}
