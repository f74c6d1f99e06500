//! Schema-aware pre-validation of Kafka messages, run before kafka-protocol sees the bytes.
//!
//! Why: kafka-protocol 0.18 turns an array length read from the wire straight into
//! `Vec::with_capacity(n)`, so a few bytes claiming 2^31 elements abort the process on the
//! allocation. This module walks every field of the messages we accept, for the exact version,
//! with the same wire rules kafka-protocol uses, and refuses any array whose claimed element
//! count cannot fit in the bytes that remain (each element needs at least its minimum wire
//! size), and any string or bytes field longer than what remains. After a successful walk every
//! `with_capacity(n)` kafka-protocol does is bounded by the frame's own size.
//!
//! Known tagged fields matter too: kafka-protocol decodes them with their type from the main
//! buffer (ignoring the declared size), so a tagged array is walked as well, and must fill its
//! declared size exactly so the two parsers never drift apart.
//!
//! The schemas below are written from Kafka's message definitions (field, type, versions);
//! `tests/walker_agrees.rs` checks, for every message and version we accept, that the walk of
//! a fully populated message ends exactly where kafka-protocol's encoding ends.

use kafka_protocol::messages::ApiKey;

/// A field's wire type. Strings and bytes cover the nullable forms too (the walker accepts
/// a null marker everywhere; kafka-protocol then refuses null where it is not allowed).
#[derive(Clone, Copy)]
pub(crate) enum Ty {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Str,
    Bytes,
    Array(&'static Struct),
    ArrayI32,
    ArrayStr,
    Struct(&'static Struct),
}

/// A field present for versions `min..=max`.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    ty: Ty,
    min: i16,
    max: i16,
}

/// A tagged field kafka-protocol decodes by type for versions `min..=max`.
#[derive(Clone, Copy)]
pub(crate) struct Tag {
    tag: u32,
    ty: Ty,
    min: i16,
    max: i16,
}

pub(crate) struct Struct {
    fields: &'static [Field],
    tags: &'static [Tag],
}

/// A top-level message: its fields and the first flexible (compact, tagged) version.
pub(crate) struct Message {
    root: &'static Struct,
    first_flexible: i16,
}

const ANY: i16 = i16::MAX;

const fn f(ty: Ty) -> Field {
    Field {
        ty,
        min: 0,
        max: ANY,
    }
}
const fn from(ty: Ty, min: i16) -> Field {
    Field { ty, min, max: ANY }
}
const fn range(ty: Ty, min: i16, max: i16) -> Field {
    Field { ty, min, max }
}
const fn tag(tag: u32, ty: Ty, min: i16) -> Tag {
    Tag {
        tag,
        ty,
        min,
        max: ANY,
    }
}
const fn st(fields: &'static [Field]) -> Struct {
    Struct { fields, tags: &[] }
}

use Ty::*;

// ---- request and response headers ----------------------------------------------------------

/// Request header v1/v2: api key, version, correlation id, nullable client id (always a
/// non-compact string), then tagged fields in v2.
static REQUEST_HEADER: Struct = st(&[f(I16), f(I16), f(I32), f(Str)]);
/// Response header v0/v1: the correlation id, then tagged fields in v1.
static RESPONSE_HEADER: Struct = st(&[f(I32)]);

// ---- requests ------------------------------------------------------------------------------

static API_VERSIONS_REQ: Struct = st(&[from(Str, 3), from(Str, 3)]);

static METADATA_REQ_TOPIC: Struct = st(&[from(Uuid, 10), f(Str)]);
static METADATA_REQ: Struct = st(&[
    f(Array(&METADATA_REQ_TOPIC)),
    from(Bool, 4),
    range(Bool, 8, 10),
    from(Bool, 8),
]);

static PRODUCE_REQ_PARTITION: Struct = st(&[f(I32), f(Bytes)]);
static PRODUCE_REQ_TOPIC: Struct = st(&[
    range(Str, 0, 12),
    from(Uuid, 13),
    f(Array(&PRODUCE_REQ_PARTITION)),
]);
static PRODUCE_REQ: Struct = st(&[from(Str, 3), f(I16), f(I32), f(Array(&PRODUCE_REQ_TOPIC))]);

static FETCH_REQ_PARTITION: Struct = Struct {
    fields: &[
        f(I32),
        from(I32, 9),
        f(I64),
        from(I32, 12),
        from(I64, 5),
        f(I32),
    ],
    tags: &[tag(0, Uuid, 17), tag(1, I64, 18)],
};
static FETCH_REQ_TOPIC: Struct = st(&[
    range(Str, 0, 12),
    from(Uuid, 13),
    f(Array(&FETCH_REQ_PARTITION)),
]);
static FETCH_REQ_FORGOTTEN: Struct = st(&[range(Str, 7, 12), from(Uuid, 13), from(ArrayI32, 7)]);
static FETCH_REQ_REPLICA_STATE: Struct = st(&[from(I32, 15), from(I64, 15)]);
static FETCH_REQ: Struct = Struct {
    fields: &[
        range(I32, 0, 14),
        f(I32),
        f(I32),
        from(I32, 3),
        from(I8, 4),
        from(I32, 7),
        from(I32, 7),
        f(Array(&FETCH_REQ_TOPIC)),
        from(Array(&FETCH_REQ_FORGOTTEN), 7),
        from(Str, 11),
    ],
    tags: &[
        tag(0, Str, 12),
        tag(1, Struct(&FETCH_REQ_REPLICA_STATE), 15),
    ],
};

static LIST_OFFSETS_REQ_PARTITION: Struct = st(&[f(I32), from(I32, 4), f(I64), range(I32, 0, 0)]);
static LIST_OFFSETS_REQ_TOPIC: Struct = st(&[f(Str), f(Array(&LIST_OFFSETS_REQ_PARTITION))]);
static LIST_OFFSETS_REQ: Struct = st(&[
    f(I32),
    from(I8, 2),
    f(Array(&LIST_OFFSETS_REQ_TOPIC)),
    from(I32, 10),
]);

static CREATE_TOPICS_REQ_ASSIGNMENT: Struct = st(&[f(I32), f(ArrayI32)]);
static CREATE_TOPICS_REQ_CONFIG: Struct = st(&[f(Str), f(Str)]);
static CREATE_TOPICS_REQ_TOPIC: Struct = st(&[
    f(Str),
    f(I32),
    f(I16),
    f(Array(&CREATE_TOPICS_REQ_ASSIGNMENT)),
    f(Array(&CREATE_TOPICS_REQ_CONFIG)),
]);
static CREATE_TOPICS_REQ: Struct = st(&[f(Array(&CREATE_TOPICS_REQ_TOPIC)), f(I32), from(Bool, 1)]);

static DELETE_TOPICS_REQ_STATE: Struct = st(&[f(Str), f(Uuid)]);
static DELETE_TOPICS_REQ: Struct = st(&[
    from(Array(&DELETE_TOPICS_REQ_STATE), 6),
    range(ArrayStr, 0, 5),
    f(I32),
]);

static INIT_PRODUCER_ID_REQ: Struct = st(&[
    f(Str),
    f(I32),
    from(I64, 3),
    from(I16, 3),
    from(Bool, 6),
    from(Bool, 6),
]);

static DESCRIBE_CLUSTER_REQ: Struct = st(&[f(Bool), from(I8, 1), from(Bool, 2)]);

static OFFSET_FOR_LEADER_EPOCH_REQ_PARTITION: Struct = st(&[f(I32), from(I32, 2), f(I32)]);
static OFFSET_FOR_LEADER_EPOCH_REQ_TOPIC: Struct =
    st(&[f(Str), f(Array(&OFFSET_FOR_LEADER_EPOCH_REQ_PARTITION))]);
static OFFSET_FOR_LEADER_EPOCH_REQ: Struct =
    st(&[from(I32, 3), f(Array(&OFFSET_FOR_LEADER_EPOCH_REQ_TOPIC))]);

// ---- responses -----------------------------------------------------------------------------

static API_VERSIONS_RESP_KEY: Struct = st(&[f(I16), f(I16), f(I16)]);
static API_VERSIONS_RESP_FEATURE: Struct = st(&[from(Str, 3), from(I16, 3), from(I16, 3)]);
static API_VERSIONS_RESP: Struct = Struct {
    fields: &[f(I16), f(Array(&API_VERSIONS_RESP_KEY)), from(I32, 1)],
    tags: &[
        tag(0, Array(&API_VERSIONS_RESP_FEATURE), 3),
        tag(1, I64, 3),
        tag(2, Array(&API_VERSIONS_RESP_FEATURE), 3),
        tag(3, Bool, 3),
    ],
};

static METADATA_RESP_BROKER: Struct = st(&[f(I32), f(Str), f(I32), from(Str, 1)]);
static METADATA_RESP_PARTITION: Struct = st(&[
    f(I16),
    f(I32),
    f(I32),
    from(I32, 7),
    f(ArrayI32),
    f(ArrayI32),
    from(ArrayI32, 5),
]);
static METADATA_RESP_TOPIC: Struct = st(&[
    f(I16),
    f(Str),
    from(Uuid, 10),
    from(Bool, 1),
    f(Array(&METADATA_RESP_PARTITION)),
    from(I32, 8),
]);
static METADATA_RESP: Struct = st(&[
    from(I32, 3),
    f(Array(&METADATA_RESP_BROKER)),
    from(Str, 2),
    from(I32, 1),
    f(Array(&METADATA_RESP_TOPIC)),
    range(I32, 8, 10),
    from(I16, 13),
]);

static PRODUCE_RESP_LEADER: Struct = st(&[from(I32, 10), from(I32, 10)]);
static PRODUCE_RESP_NODE: Struct =
    st(&[from(I32, 10), from(Str, 10), from(I32, 10), from(Str, 10)]);
static PRODUCE_RESP_RECORD_ERROR: Struct = st(&[from(I32, 8), from(Str, 8)]);
static PRODUCE_RESP_PARTITION: Struct = Struct {
    fields: &[
        f(I32),
        f(I16),
        f(I64),
        f(I64),
        from(I64, 5),
        from(Array(&PRODUCE_RESP_RECORD_ERROR), 8),
        from(Str, 8),
    ],
    tags: &[tag(0, Struct(&PRODUCE_RESP_LEADER), 10)],
};
static PRODUCE_RESP_TOPIC: Struct = st(&[
    range(Str, 0, 12),
    from(Uuid, 13),
    f(Array(&PRODUCE_RESP_PARTITION)),
]);
static PRODUCE_RESP: Struct = Struct {
    fields: &[f(Array(&PRODUCE_RESP_TOPIC)), f(I32)],
    tags: &[tag(0, Array(&PRODUCE_RESP_NODE), 10)],
};

static FETCH_RESP_ABORTED: Struct = st(&[f(I64), f(I64)]);
static FETCH_RESP_EPOCH_END: Struct = st(&[from(I32, 12), from(I64, 12)]);
static FETCH_RESP_LEADER: Struct = st(&[from(I32, 12), from(I32, 12)]);
static FETCH_RESP_SNAPSHOT: Struct = st(&[f(I64), f(I32)]);
static FETCH_RESP_NODE: Struct = st(&[from(I32, 16), from(Str, 16), from(I32, 16), from(Str, 16)]);
static FETCH_RESP_PARTITION: Struct = Struct {
    fields: &[
        f(I32),
        f(I16),
        f(I64),
        f(I64),
        from(I64, 5),
        f(Array(&FETCH_RESP_ABORTED)),
        from(I32, 11),
        f(Bytes),
    ],
    tags: &[
        tag(0, Struct(&FETCH_RESP_EPOCH_END), 12),
        tag(1, Struct(&FETCH_RESP_LEADER), 12),
        tag(2, Struct(&FETCH_RESP_SNAPSHOT), 12),
    ],
};
static FETCH_RESP_TOPIC: Struct = st(&[
    range(Str, 0, 12),
    from(Uuid, 13),
    f(Array(&FETCH_RESP_PARTITION)),
]);
static FETCH_RESP: Struct = Struct {
    fields: &[
        f(I32),
        from(I16, 7),
        from(I32, 7),
        f(Array(&FETCH_RESP_TOPIC)),
    ],
    tags: &[tag(0, Array(&FETCH_RESP_NODE), 16)],
};

static LIST_OFFSETS_RESP_PARTITION: Struct =
    st(&[f(I32), f(I16), from(I64, 1), from(I64, 1), from(I32, 4)]);
static LIST_OFFSETS_RESP_TOPIC: Struct = st(&[f(Str), f(Array(&LIST_OFFSETS_RESP_PARTITION))]);
static LIST_OFFSETS_RESP: Struct = st(&[from(I32, 2), f(Array(&LIST_OFFSETS_RESP_TOPIC))]);

static CREATE_TOPICS_RESP_CONFIG: Struct = st(&[f(Str), f(Str), f(Bool), f(I8), f(Bool)]);
static CREATE_TOPICS_RESP_TOPIC: Struct = Struct {
    fields: &[
        f(Str),
        from(Uuid, 7),
        f(I16),
        from(Str, 1),
        from(I32, 5),
        from(I16, 5),
        from(Array(&CREATE_TOPICS_RESP_CONFIG), 5),
    ],
    tags: &[tag(0, I16, 5)],
};
static CREATE_TOPICS_RESP: Struct = st(&[from(I32, 2), f(Array(&CREATE_TOPICS_RESP_TOPIC))]);

static DELETE_TOPICS_RESP_TOPIC: Struct = st(&[f(Str), from(Uuid, 6), f(I16), from(Str, 5)]);
static DELETE_TOPICS_RESP: Struct = st(&[from(I32, 1), f(Array(&DELETE_TOPICS_RESP_TOPIC))]);

static INIT_PRODUCER_ID_RESP: Struct =
    st(&[f(I32), f(I16), f(I64), f(I16), from(I64, 6), from(I16, 6)]);

static DESCRIBE_CLUSTER_RESP_BROKER: Struct = st(&[f(I32), f(Str), f(I32), f(Str), from(Bool, 2)]);
static DESCRIBE_CLUSTER_RESP: Struct = st(&[
    f(I32),
    f(I16),
    f(Str),
    from(I8, 1),
    f(Str),
    f(I32),
    f(Array(&DESCRIBE_CLUSTER_RESP_BROKER)),
    f(I32),
]);

static OFFSET_FOR_LEADER_EPOCH_RESP_PARTITION: Struct = st(&[f(I16), f(I32), from(I32, 1), f(I64)]);
static OFFSET_FOR_LEADER_EPOCH_RESP_TOPIC: Struct =
    st(&[f(Str), f(Array(&OFFSET_FOR_LEADER_EPOCH_RESP_PARTITION))]);
static OFFSET_FOR_LEADER_EPOCH_RESP: Struct =
    st(&[from(I32, 2), f(Array(&OFFSET_FOR_LEADER_EPOCH_RESP_TOPIC))]);

const fn msg(root: &'static Struct, first_flexible: i16) -> Message {
    Message {
        root,
        first_flexible,
    }
}

/// The request schema for an API key we serve, `None` for any other key.
pub(crate) fn request_schema(key: ApiKey) -> Option<Message> {
    Some(match key {
        ApiKey::ApiVersions => msg(&API_VERSIONS_REQ, 3),
        ApiKey::Metadata => msg(&METADATA_REQ, 9),
        ApiKey::Produce => msg(&PRODUCE_REQ, 9),
        ApiKey::Fetch => msg(&FETCH_REQ, 12),
        ApiKey::ListOffsets => msg(&LIST_OFFSETS_REQ, 6),
        ApiKey::CreateTopics => msg(&CREATE_TOPICS_REQ, 5),
        ApiKey::DeleteTopics => msg(&DELETE_TOPICS_REQ, 4),
        ApiKey::InitProducerId => msg(&INIT_PRODUCER_ID_REQ, 2),
        ApiKey::DescribeCluster => msg(&DESCRIBE_CLUSTER_REQ, 0),
        ApiKey::OffsetForLeaderEpoch => msg(&OFFSET_FOR_LEADER_EPOCH_REQ, 4),
        _ => return None,
    })
}

/// The response schema for an API key we serve, `None` for any other key.
pub(crate) fn response_schema(key: ApiKey) -> Option<Message> {
    Some(match key {
        ApiKey::ApiVersions => msg(&API_VERSIONS_RESP, 3),
        ApiKey::Metadata => msg(&METADATA_RESP, 9),
        ApiKey::Produce => msg(&PRODUCE_RESP, 9),
        ApiKey::Fetch => msg(&FETCH_RESP, 12),
        ApiKey::ListOffsets => msg(&LIST_OFFSETS_RESP, 6),
        ApiKey::CreateTopics => msg(&CREATE_TOPICS_RESP, 5),
        ApiKey::DeleteTopics => msg(&DELETE_TOPICS_RESP, 4),
        ApiKey::InitProducerId => msg(&INIT_PRODUCER_ID_RESP, 2),
        ApiKey::DescribeCluster => msg(&DESCRIBE_CLUSTER_RESP, 0),
        ApiKey::OffsetForLeaderEpoch => msg(&OFFSET_FOR_LEADER_EPOCH_RESP, 4),
        _ => return None,
    })
}

/// Why a walk failed; becomes `DecodeErrorKind::Malformed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkError(pub String);

type Walk<T> = Result<T, WalkError>;

fn err<T>(msg: impl Into<String>) -> Walk<T> {
    Err(WalkError(msg.into()))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Walk<&'a [u8]> {
        if n > self.remaining() {
            return err(format!(
                "field of {n} bytes at byte {} overruns the frame ({} bytes left)",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i16(&mut self) -> Walk<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Walk<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Kafka's unsigned varint exactly as kafka-protocol reads it: at most 5 bytes, bits past
    /// 32 dropped. Matching it matters: both parsers must see the same length.
    fn uvarint(&mut self) -> Walk<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0] as u32;
            value |= (b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }
}

/// The smallest number of bytes one value of `ty` can take on the wire.
fn min_size(ty: Ty, version: i16, flexible: bool) -> usize {
    match ty {
        Bool | I8 => 1,
        I16 => 2,
        I32 => 4,
        I64 => 8,
        Uuid => 16,
        // Null / empty forms: compact uses one varint byte, classic a fixed-width length.
        Str if flexible => 1,
        Str => 2,
        Bytes | Array(_) | ArrayI32 | ArrayStr if flexible => 1,
        Bytes | Array(_) | ArrayI32 | ArrayStr => 4,
        Struct(s) => struct_min_size(s, version, flexible),
    }
}

fn struct_min_size(s: &Struct, version: i16, flexible: bool) -> usize {
    let fields: usize = s
        .fields
        .iter()
        .filter(|f| f.min <= version && version <= f.max)
        .map(|f| min_size(f.ty, version, flexible))
        .sum();
    fields + usize::from(flexible)
}

/// Reads an array header and returns the element count (0 for a null array), refusing any
/// count whose elements cannot fit in what remains of the frame.
fn array_len(c: &mut Cursor, elem_min: usize, flexible: bool) -> Walk<usize> {
    let n: usize = if flexible {
        match c.uvarint()? {
            0 => 0,
            n => (n - 1) as usize,
        }
    } else {
        match c.i32()? {
            -1 => 0,
            n if n < -1 => return err(format!("negative array length {n}")),
            n => n as usize,
        }
    };
    // Every element takes at least one byte, so this also bounds the walk itself.
    let need = n.saturating_mul(elem_min.max(1));
    if need > c.remaining() {
        return err(format!(
            "array of {n} elements needs at least {need} bytes, {} left",
            c.remaining()
        ));
    }
    Ok(n)
}

fn length_prefixed(c: &mut Cursor, flexible: bool, wide: bool) -> Walk<()> {
    let n: usize = if flexible {
        match c.uvarint()? {
            0 => return Ok(()),
            n => (n - 1) as usize,
        }
    } else if wide {
        match c.i32()? {
            -1 => return Ok(()),
            n if n < -1 => return err(format!("negative length {n}")),
            n => n as usize,
        }
    } else {
        match c.i16()? {
            -1 => return Ok(()),
            n if n < -1 => return err(format!("negative string length {n}")),
            n => n as usize,
        }
    };
    c.take(n).map(|_| ())
}

fn walk_ty(c: &mut Cursor, ty: Ty, version: i16, flexible: bool) -> Walk<()> {
    match ty {
        Bool | I8 => c.take(1).map(|_| ()),
        I16 => c.take(2).map(|_| ()),
        I32 => c.take(4).map(|_| ()),
        I64 => c.take(8).map(|_| ()),
        Uuid => c.take(16).map(|_| ()),
        Str => length_prefixed(c, flexible, false),
        Bytes => length_prefixed(c, flexible, true),
        ArrayI32 => {
            let n = array_len(c, 4, flexible)?;
            c.take(n * 4).map(|_| ())
        }
        ArrayStr => {
            let n = array_len(c, min_size(Str, version, flexible), flexible)?;
            (0..n).try_for_each(|_| length_prefixed(c, flexible, false))
        }
        Array(s) => {
            let n = array_len(c, struct_min_size(s, version, flexible), flexible)?;
            (0..n).try_for_each(|_| walk_struct(c, s, version, flexible))
        }
        Struct(s) => walk_struct(c, s, version, flexible),
    }
}

fn walk_struct(c: &mut Cursor, s: &Struct, version: i16, flexible: bool) -> Walk<()> {
    for field in s.fields {
        if field.min <= version && version <= field.max {
            walk_ty(c, field.ty, version, flexible)?;
        }
    }
    if flexible {
        walk_tagged(c, s.tags, version)?;
    }
    Ok(())
}

fn walk_tagged(c: &mut Cursor, tags: &[Tag], version: i16) -> Walk<()> {
    // Each tagged field takes at least 2 bytes (tag, size), so a huge count fails fast.
    let count = c.uvarint()?;
    for _ in 0..count {
        let tag = c.uvarint()?;
        let size = c.uvarint()? as usize;
        let body = c.take(size)?;
        let known = tags
            .iter()
            .find(|t| t.tag == tag && t.min <= version && version <= t.max);
        if let Some(t) = known {
            // kafka-protocol reads a known tag by its type, not by `size`: the content
            // must be valid and exactly `size` bytes, or the parsers would drift apart.
            let mut inner = Cursor { buf: body, pos: 0 };
            walk_ty(&mut inner, t.ty, version, true)?;
            if inner.pos != size {
                return err(format!(
                    "tagged field {tag} declares {size} bytes but holds {}",
                    inner.pos
                ));
            }
        }
    }
    Ok(())
}

/// Walks a request header of `header_version` (1 or 2); returns the bytes it takes.
pub(crate) fn walk_request_header(buf: &[u8], header_version: i16) -> Result<usize, WalkError> {
    let mut c = Cursor { buf, pos: 0 };
    walk_struct(&mut c, &REQUEST_HEADER, 0, false)?;
    if header_version >= 2 {
        walk_tagged(&mut c, &[], 0)?;
    }
    Ok(c.pos)
}

/// Walks a response header of `header_version` (0 or 1); returns the bytes it takes.
pub(crate) fn walk_response_header(buf: &[u8], header_version: i16) -> Result<usize, WalkError> {
    let mut c = Cursor { buf, pos: 0 };
    walk_struct(&mut c, &RESPONSE_HEADER, 0, false)?;
    if header_version >= 1 {
        walk_tagged(&mut c, &[], 0)?;
    }
    Ok(c.pos)
}

/// Walks a message body of `version`; returns the bytes it takes.
pub(crate) fn walk_message(buf: &[u8], m: &Message, version: i16) -> Result<usize, WalkError> {
    let mut c = Cursor { buf, pos: 0 };
    walk_struct(&mut c, m.root, version, version >= m.first_flexible)?;
    Ok(c.pos)
}
