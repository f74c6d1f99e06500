//! Hostile input: allocation bombs (huge array / string / bytes lengths in tiny frames) and
//! fuzzing. kafka-protocol alone would `Vec::with_capacity` a claimed array length and abort
//! the process; every case here must come back as a `DecodeError`, and the tracking allocator
//! proves no large buffer was even requested.

mod common;

use bytes::Bytes;
use common::tracker::largest_allocation;
use common::{all_versions, request_frame};
use proptest::prelude::*;
use tandem_protocol::*;

#[global_allocator]
static ALLOC: common::tracker::Tracking = common::tracker::Tracking;

/// Largest single allocation decoding a frame of `len` bytes may request.
fn budget(len: usize) -> usize {
    64 * len + 4096
}

/// Request header v1 (non-flexible): key, version, correlation id, null client id.
fn h1(key: i16, version: i16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes());
    f.extend_from_slice(&[0xff, 0xff]);
    f
}

/// Request header v2 (flexible): v1 plus an empty tagged-field section.
fn h2(key: i16, version: i16) -> Vec<u8> {
    let mut f = h1(key, version);
    f.push(0);
    f
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const HUGE_I32: [u8; 4] = [0x7f, 0xff, 0xff, 0xff];
const HUGE_UVARINT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f];

fn bombs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // The example from the issue: Metadata v0, topic array length 0x033c0c00.
        (
            "metadata v0 array",
            cat(&[&h1(3, 0), &[0x03, 0x3c, 0x0c, 0x00]]),
        ),
        ("metadata v4 array", cat(&[&h1(3, 4), &HUGE_I32])),
        (
            "metadata v9 compact array",
            cat(&[&h2(3, 9), &HUGE_UVARINT]),
        ),
        (
            "metadata v12 compact array",
            cat(&[&h2(3, 12), &[0x80, 0x80, 0x80, 0x80, 0x08]]),
        ),
        // Produce v3: null transactional id, acks, timeout, topic_data length.
        (
            "produce v3 topics",
            cat(&[&h1(0, 3), &[0xff, 0xff, 0, 1, 0, 0, 0, 10], &HUGE_I32]),
        ),
        // Produce v9: one topic "t", partition_data compact length huge.
        (
            "produce v9 partitions",
            cat(&[
                &h2(0, 9),
                &[0, 0, 1, 0, 0, 0, 10, 2, 2, b't'],
                &HUGE_UVARINT,
            ]),
        ),
        // Produce v3: one topic "t", one partition, records length huge.
        (
            "produce v3 records bytes",
            cat(&[
                &h1(0, 3),
                &[
                    0xff, 0xff, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0,
                ],
                &HUGE_I32,
            ]),
        ),
        // Fetch v4: replica, wait, min, max, isolation, topics length.
        ("fetch v4 topics", cat(&[&h1(1, 4), &[0; 13], &HUGE_I32])),
        // Fetch v12: ..., session id/epoch, topics compact length.
        (
            "fetch v12 topics",
            cat(&[&h2(1, 12), &[0; 21], &HUGE_UVARINT]),
        ),
        // Fetch v12: no topics, forgotten topics compact length huge.
        (
            "fetch v12 forgotten",
            cat(&[&h2(1, 12), &[0; 21], &[1], &HUGE_UVARINT]),
        ),
        // Fetch v12: empty arrays, rack id, then a tagged-field count and a huge tag size.
        (
            "fetch v12 tag size",
            cat(&[&h2(1, 12), &[0; 21], &[1, 1, 1, 1, 7], &HUGE_UVARINT]),
        ),
        // Fetch v12 known tag 0 (cluster id) whose string claims 4 GB.
        (
            "fetch v12 tagged string",
            cat(&[&h2(1, 12), &[0; 21], &[1, 1, 1, 1, 0, 5], &HUGE_UVARINT]),
        ),
        (
            "list offsets v1 topics",
            cat(&[&h1(2, 1), &[0, 0, 0, 0], &HUGE_I32]),
        ),
        (
            "list offsets v6 topics",
            cat(&[&h2(2, 6), &[0, 0, 0, 0, 0], &HUGE_UVARINT]),
        ),
        ("create topics v2 topics", cat(&[&h1(19, 2), &HUGE_I32])),
        // CreateTopics v5: one topic "t", partitions, rf, assignments compact huge.
        (
            "create topics v5 assignments",
            cat(&[&h2(19, 5), &[2, 2, b't', 0, 0, 0, 1, 0, 1], &HUGE_UVARINT]),
        ),
        // CreateTopics v2: one topic, one assignment, broker_ids huge (array of int32).
        (
            "create topics v2 broker ids",
            cat(&[
                &h1(19, 2),
                &[
                    0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
                ],
                &HUGE_I32,
            ]),
        ),
        ("delete topics v1 names", cat(&[&h1(20, 1), &HUGE_I32])),
        ("delete topics v4 names", cat(&[&h2(20, 4), &HUGE_UVARINT])),
        ("offset for leader epoch v2", cat(&[&h1(23, 2), &HUGE_I32])),
        (
            "offset for leader epoch v4",
            cat(&[&h2(23, 4), &[0, 0, 0, 1], &HUGE_UVARINT]),
        ),
        // Huge string lengths: client id, then a topic name.
        (
            "client id string",
            cat(&[&[0, 3, 0, 1, 0, 0, 0, 1], &[0x7f, 0xff], b"abc"]),
        ),
        (
            "metadata v1 topic name",
            cat(&[&h1(3, 1), &[0, 0, 0, 1], &[0x7f, 0xff], b"ab"]),
        ),
        (
            "metadata v9 topic name",
            cat(&[&h2(3, 9), &[2], &HUGE_UVARINT]),
        ),
        (
            "api versions v3 software name",
            cat(&[&h2(18, 3), &HUGE_UVARINT]),
        ),
        (
            "init producer id v2 txn id",
            cat(&[&h2(22, 2), &HUGE_UVARINT]),
        ),
        // Header v2 tagged fields: a huge count, and a huge size.
        ("header tag count", cat(&[&h1(18, 3), &HUGE_UVARINT])),
        (
            "header tag size",
            cat(&[&h1(18, 3), &[1, 0], &HUGE_UVARINT]),
        ),
        (
            "describe cluster tags",
            cat(&[&h2(60, 0), &[1], &[5, 0x7f]]),
        ),
        // Negative lengths.
        (
            "negative array",
            cat(&[&h1(3, 1), &[0xff, 0xff, 0xff, 0xfe]]),
        ),
        (
            "negative string",
            cat(&[&h1(3, 1), &[0, 0, 0, 1, 0x80, 0x00]]),
        ),
    ]
}

#[test]
fn allocation_bombs_are_refused_without_allocating() {
    for (name, frame) in bombs() {
        let len = frame.len();
        let (res, biggest) = largest_allocation(|| decode_request(Bytes::from(frame)));
        let err = res.expect_err(name);
        assert!(
            matches!(err.kind, DecodeErrorKind::Malformed(_)),
            "{name}: {err:?}"
        );
        assert!(biggest <= budget(len), "{name}: asked for {biggest} bytes");
        assert_eq!(error_response(&err), None, "{name}: malformed closes");
    }
}

#[test]
fn response_bombs_are_refused_without_allocating() {
    let cases: Vec<(&str, ApiKey, i16, Vec<u8>)> = vec![
        // ApiVersions v3: error, api_keys empty, throttle, then known tag 0 (an array).
        (
            "api versions features",
            ApiKey::ApiVersions,
            3,
            cat(&[&[0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 5], &HUGE_UVARINT]),
        ),
        (
            "metadata v1 brokers",
            ApiKey::Metadata,
            1,
            cat(&[&[0, 0, 0, 1], &HUGE_I32]),
        ),
        (
            "fetch v12 topics",
            ApiKey::Fetch,
            12,
            cat(&[&[0, 0, 0, 1, 0], &[0; 10], &HUGE_UVARINT]),
        ),
        (
            "produce v3 topics",
            ApiKey::Produce,
            3,
            cat(&[&[0, 0, 0, 1], &HUGE_I32]),
        ),
        (
            "describe cluster brokers",
            ApiKey::DescribeCluster,
            0,
            cat(&[
                &[0, 0, 0, 1, 0],
                &[0; 6],
                &[1, 1, 0, 0, 0, 1],
                &HUGE_UVARINT,
            ]),
        ),
    ];
    for (name, key, v, frame) in cases {
        let len = frame.len();
        let (res, biggest) = largest_allocation(|| decode_response(key, v, Bytes::from(frame)));
        assert!(res.is_err(), "{name}: {res:?}");
        assert!(biggest <= budget(len), "{name}: asked for {biggest} bytes");
    }
}

#[test]
fn the_tracker_sees_kafka_protocols_own_allocation() {
    // Control: the same kind of frame handed straight to kafka-protocol, with a claimed length
    // small enough to survive (1M topics) — it asks for tens of MB from a 14-byte frame. Our
    // decoder refuses the same frame asking for almost nothing.
    use kafka_protocol::protocol::Decodable;
    let body = [0x00, 0x0f, 0x42, 0x40]; // 1_000_000
    let (_, raw) = largest_allocation(|| {
        kafka_protocol::messages::MetadataRequest::decode(&mut Bytes::copy_from_slice(&body), 0)
    });
    assert!(raw >= 1_000_000 * 8, "control saw only {raw} bytes");
    let frame = Bytes::from(cat(&[&h1(3, 0), &body]));
    let (res, ours) = largest_allocation(|| decode_request(frame));
    assert!(res.is_err());
    assert!(ours <= budget(14), "{ours}");
}

/// Any one of the valid frames, mutated.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    let frames: Vec<Vec<u8>> = all_versions()
        .into_iter()
        .map(|(k, v)| request_frame(k, v).to_vec())
        .collect();
    (
        proptest::sample::select(frames),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(mut f, edits)| {
            for (at, byte, op) in edits {
                if f.is_empty() {
                    f.push(byte);
                    continue;
                }
                let i = at.index(f.len());
                match op {
                    0 => f[i] = byte,
                    1 => f.insert(i, byte),
                    2 => {
                        f.truncate(i);
                    }
                    // Plant a huge length at a random spot.
                    _ => {
                        let end = (i + 4).min(f.len());
                        for b in &mut f[i..end] {
                            *b = 0x7f | byte;
                        }
                    }
                }
            }
            f
        })
}

/// Postcard (through serde's `size_hint::cautious`) may preallocate a claimed sequence length
/// up to 1 MiB before reading its elements: bounded, whatever the frame says, but above the
/// proportional budget for tiny frames.
fn postcard_budget(frame_len: usize) -> usize {
    budget(frame_len).max(1 << 20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic_or_allocate_big(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let len = bytes.len();
        let (res, biggest) = largest_allocation(|| decode_request(Bytes::from(bytes)));
        if let Err(e) = &res {
            let _ = error_response(e);
        }
        prop_assert!(biggest <= budget(len), "asked for {} bytes", biggest);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        (key, v) in proptest::sample::select(all_versions()),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let header = request_frame(key, v);
        // Keep the header (through client id "test-client": 8 + 2 + 11 bytes) and, for
        // flexible headers, its tag byte; replace the body with random bytes.
        let keep = 21 + usize::from(key.request_header_version(v) >= 2);
        let mut f = header[..keep].to_vec();
        f.extend_from_slice(&tail);
        let len = f.len();
        let (res, biggest) = largest_allocation(|| decode_request(Bytes::from(f)));
        if let Err(e) = &res {
            let _ = error_response(e);
        }
        prop_assert!(biggest <= budget(len), "asked for {} bytes", biggest);
    }

    #[test]
    fn mutated_valid_frames_never_panic_or_allocate_big(f in mutated_frame()) {
        let len = f.len();
        let (res, biggest) = largest_allocation(|| decode_request(Bytes::from(f)));
        if let Err(e) = &res {
            let _ = error_response(e);
        }
        prop_assert!(biggest <= budget(len), "asked for {} bytes", biggest);
    }

    #[test]
    fn random_responses_never_panic(
        (key, v) in proptest::sample::select(all_versions()),
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let len = bytes.len();
        let (_, biggest) = largest_allocation(|| decode_response(key, v, Bytes::from(bytes)));
        prop_assert!(biggest <= budget(len), "asked for {} bytes", biggest);
    }

    #[test]
    fn random_tandem_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut f = vec![0x03, 0xe8, 0, 0, 0, 0, 0, 9];
        f.extend_from_slice(&bytes);
        let len = f.len();
        let (res, biggest) = largest_allocation(|| decode_request(Bytes::from(f)));
        if let Err(e) = &res {
            prop_assert!(error_response(e).is_none());
        }
        prop_assert!(biggest <= postcard_budget(len), "asked for {} bytes", biggest);
        let (_, biggest) = largest_allocation(|| decode_tandem_response(Bytes::from(bytes.clone())));
        prop_assert!(biggest <= postcard_budget(bytes.len()), "asked for {} bytes", biggest);
    }
}
