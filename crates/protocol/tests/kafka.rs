//! Kafka side of the codec: round trips for every API and version we serve, version edges,
//! ApiVersions quirks, unknown keys, malformed and truncated frames.

mod common;

use bytes::Bytes;
use common::{all_versions, header, request, request_frame, response};
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::Decodable;
use tandem_protocol::*;

#[global_allocator]
static ALLOC: common::tracker::Tracking = common::tracker::Tracking;

#[test]
fn supported_versions_are_the_documented_ones() {
    let v = supported_versions();
    let expect = [
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
    assert_eq!(v, &expect[..]);
    for &(key, lo, hi) in v {
        let theirs = key.valid_versions();
        assert!(
            theirs.min <= lo && hi <= theirs.max,
            "{key:?} outside kafka-protocol"
        );
    }
}

#[test]
fn every_request_round_trips_at_every_supported_version() {
    for (key, v) in all_versions() {
        let frame = request_frame(key, v);
        match decode_request(frame.clone()) {
            Ok(Request::Kafka { header: h, body }) => {
                assert_eq!(h, header(key, v, 7), "{key:?} v{v} header");
                assert_eq!(body, request(key, v), "{key:?} v{v} body");
            }
            other => panic!("{key:?} v{v}: {other:?}"),
        }
        // The walk must need every byte: each strict prefix is refused.
        for cut in 0..frame.len() {
            assert!(
                decode_request(frame.slice(..cut)).is_err(),
                "{key:?} v{v}: prefix of {cut}/{} bytes accepted",
                frame.len()
            );
        }
    }
}

#[test]
fn every_response_round_trips_at_every_supported_version() {
    for (key, v) in all_versions() {
        let body = response(key, v);
        let frame =
            encode_response(key, v, 4242, &body).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
        let (corr, decoded) =
            decode_response(key, v, frame.clone()).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
        assert_eq!(corr, 4242);
        assert_eq!(decoded, body, "{key:?} v{v}");
        for cut in 0..frame.len() {
            assert!(
                decode_response(key, v, frame.slice(..cut)).is_err()
                    // A cut ApiVersions response may still parse as v0 (the fallback).
                    || key == ApiKey::ApiVersions,
                "{key:?} v{v}: response prefix of {cut}/{} bytes accepted",
                frame.len()
            );
        }
    }
}

#[test]
fn versions_just_outside_our_ranges_are_unsupported() {
    for &(key, lo, hi) in supported_versions() {
        for v in [lo - 1, hi + 1, i16::MAX, -1] {
            // A header that parses in any version, then a few body bytes.
            let mut f = Vec::new();
            f.extend_from_slice(&(key as i16).to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
            f.extend_from_slice(&99i32.to_be_bytes());
            f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            let err = decode_request(Bytes::from(f)).expect_err("out-of-range version");
            assert_eq!(
                err.kind,
                DecodeErrorKind::UnsupportedVersion,
                "{key:?} v{v}"
            );
            assert_eq!(err.correlation_id, Some(99));
            assert_eq!(err.api_key, Some(key as i16));
            assert_eq!(err.api_version, Some(v));
        }
    }
}

#[test]
fn api_versions_v3_request_is_answered_with_a_v0_response_header() {
    // librdkafka's first request: ApiVersions v3 (flexible, request header v2).
    let frame = request_frame(ApiKey::ApiVersions, 3);
    let req = decode_request(frame).expect("decodes");
    assert_eq!(req.api_version(), 3);
    let resp = encode_response(
        ApiKey::ApiVersions,
        3,
        req.correlation_id(),
        &ResponseKind::ApiVersions(api_versions_response()),
    )
    .expect("encodes");
    assert_eq!(&resp[..4], &7i32.to_be_bytes());
    // Header v0 is the correlation id alone: the v3 body starts right after it (with header
    // v1 there would be a tagged-field byte first and this parse would fail or differ).
    let mut body = resp.slice(4..);
    let parsed = ApiVersionsResponse::decode(&mut body, 3).expect("v3 body right after corr id");
    assert!(body.is_empty());
    assert_eq!(parsed, api_versions_response());
    assert_eq!(parsed.error_code, errors::NONE);
    assert_eq!(parsed.api_keys.len(), supported_versions().len());
}

#[test]
fn too_new_api_versions_gets_error_35_with_our_ranges_in_a_v0_body() {
    for v in [5i16, 9, i16::MAX] {
        let mut f = Vec::new();
        f.extend_from_slice(&18i16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
        f.extend_from_slice(&31i32.to_be_bytes());
        f.extend_from_slice(&[0, 3, b'c', b'l', b'i', 0]); // whatever a future client sends
        let err = decode_request(Bytes::from(f)).expect_err("unsupported");
        assert_eq!(err.kind, DecodeErrorKind::UnsupportedVersion);
        let reply = error_response(&err).expect("ApiVersions is always answered");
        assert_eq!(&reply[..4], &31i32.to_be_bytes());
        let mut body = reply.slice(4..);
        let parsed = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
        assert!(body.is_empty());
        assert_eq!(parsed.error_code, errors::UNSUPPORTED_VERSION);
        assert_eq!(parsed.api_keys.len(), supported_versions().len());
        let metadata = parsed
            .api_keys
            .iter()
            .find(|k| k.api_key == 3)
            .expect("Metadata listed");
        assert_eq!((metadata.min_version, metadata.max_version), (0, 12));
        // And our own client, having asked v3, falls back to reading it as v0.
        match decode_response(ApiKey::ApiVersions, 3, reply) {
            Ok((31, ResponseKind::ApiVersions(r))) => {
                assert_eq!(r.error_code, errors::UNSUPPORTED_VERSION);
                assert_eq!(r.api_keys.len(), supported_versions().len());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn unsupported_versions_of_other_keys_get_35_where_the_response_can_say_it() {
    let frame = |key: ApiKey, v: i16| {
        let mut f = Vec::new();
        f.extend_from_slice(&(key as i16).to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
        f.extend_from_slice(&5i32.to_be_bytes());
        Bytes::from(f)
    };
    // Fetch v13 (topic ids) has a top-level error code: answered, header v1.
    let err = decode_request(frame(ApiKey::Fetch, 13)).expect_err("unsupported");
    let reply = error_response(&err).expect("answered");
    let mut body = reply.slice(5..); // corr id + empty tagged fields
    let r = kafka_protocol::messages::FetchResponse::decode(&mut body, 13).expect("v13 body");
    assert_eq!(r.error_code, errors::UNSUPPORTED_VERSION);
    // Metadata v13 too.
    let err = decode_request(frame(ApiKey::Metadata, 13)).expect_err("unsupported");
    let reply = error_response(&err).expect("answered");
    let mut body = reply.slice(5..);
    let r = kafka_protocol::messages::MetadataResponse::decode(&mut body, 13).expect("v13");
    assert_eq!(r.error_code, errors::UNSUPPORTED_VERSION);
    // InitProducerId v5 too.
    let err = decode_request(frame(ApiKey::InitProducerId, 5)).expect_err("unsupported");
    assert!(error_response(&err).is_some());
    // Produce v12/v2 has no top-level error code, Fetch v3 is not encodable: close.
    for (key, v) in [
        (ApiKey::Produce, 12),
        (ApiKey::Produce, 2),
        (ApiKey::Fetch, 3),
    ] {
        let err = decode_request(frame(key, v)).expect_err("unsupported");
        assert_eq!(err.kind, DecodeErrorKind::UnsupportedVersion);
        assert_eq!(error_response(&err), None, "{key:?} v{v}");
    }
}

#[test]
fn unknown_and_unserved_api_keys_close_the_connection() {
    // 999: nobody's key; 10 (FindCoordinator): Kafka's, but not served by Tandem.
    for key in [999i16, 10, 11, -1, 93, i16::MAX] {
        let mut f = Vec::new();
        f.extend_from_slice(&key.to_be_bytes());
        f.extend_from_slice(&0i16.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&[0xff, 0xff]);
        let err = decode_request(Bytes::from(f)).expect_err("unknown key");
        assert_eq!(err.kind, DecodeErrorKind::UnknownApiKey, "key {key}");
        assert_eq!(err.correlation_id, Some(1));
        assert_eq!(error_response(&err), None);
    }
}

#[test]
fn malformed_frames_of_every_length_up_to_16_bytes_are_refused_without_panic() {
    let mut patterns: Vec<Vec<u8>> = vec![vec![0u8; 16], vec![0xff; 16], vec![0x80; 16]];
    // Valid headers of each served key/version followed by garbage.
    for (key, v) in all_versions() {
        let mut f = request_frame(key, v).to_vec();
        f.truncate(16);
        patterns.push(f);
        let mut g = Vec::new();
        g.extend_from_slice(&(key as i16).to_be_bytes());
        g.extend_from_slice(&v.to_be_bytes());
        g.extend_from_slice(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        patterns.push(g);
    }
    for p in &patterns {
        for len in 0..=16.min(p.len()) {
            let frame = Bytes::copy_from_slice(&p[..len]);
            let result = decode_request(frame.clone());
            if len < 8 {
                assert!(
                    matches!(&result, Err(e) if matches!(e.kind, DecodeErrorKind::Malformed(_) | DecodeErrorKind::UnknownApiKey | DecodeErrorKind::UnsupportedVersion) && e.correlation_id.is_none()),
                    "{frame:02x?}: {result:?}"
                );
                if let Err(e) = &result {
                    assert_eq!(error_response(e), None);
                }
            }
            // Whatever the outcome, an error must be answerable or closable without panic.
            if let Err(e) = result {
                let _ = error_response(&e);
            }
        }
    }
    // The headline case: 8 bytes of a Metadata v0 header, nothing else.
    let err = decode_request(Bytes::from_static(&[0, 3, 0, 0, 0, 0, 0, 1])).expect_err("short");
    assert!(matches!(err.kind, DecodeErrorKind::Malformed(_)));
    assert_eq!(error_response(&err), None);
}

#[test]
fn encode_refuses_a_body_of_another_api() {
    let err = encode_response(
        ApiKey::Fetch,
        12,
        1,
        &ResponseKind::ApiVersions(api_versions_response()),
    )
    .expect_err("mismatch");
    assert!(matches!(err, EncodeError::Mismatch { .. }));
    let err = encode_request(
        &header(ApiKey::Metadata, 12, 1),
        &request(ApiKey::Fetch, 12),
    )
    .expect_err("mismatch");
    assert!(matches!(err, EncodeError::Mismatch { .. }));
    // A version kafka-protocol cannot encode is an error, not a panic.
    assert!(encode_response(ApiKey::Produce, 1, 1, &response(ApiKey::Produce, 3)).is_err());
}

#[test]
fn trailing_bytes_after_a_request_are_tolerated_like_kafka() {
    let mut f = request_frame(ApiKey::Metadata, 12).to_vec();
    f.extend_from_slice(&[1, 2, 3]);
    let req = decode_request(Bytes::from(f)).expect("decodes");
    assert_eq!(req.api_key(), 3);
}

#[test]
fn frame_codec_refuses_frames_over_the_limit() {
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};
    let mut codec = frame_codec(1024);
    // A frame at the limit passes, with its prefix stripped.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1024u32.to_be_bytes());
    buf.extend_from_slice(&[7u8; 1024]);
    let got = codec.decode(&mut buf).expect("ok").expect("a frame");
    assert_eq!(got.len(), 1024);
    // One byte over is refused before any of it is buffered.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1025u32.to_be_bytes());
    let err = codec.decode(&mut buf).expect_err("too big");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    // A claimed 4 GB frame is refused from its 4-byte prefix alone.
    let mut codec = frame_codec(DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
    assert!(codec.decode(&mut buf).is_err());
    // And we refuse to send one.
    let mut codec = frame_codec(16);
    let mut out = BytesMut::new();
    assert!(codec
        .encode(Bytes::from_static(&[0; 17]), &mut out)
        .is_err());
    let mut out = BytesMut::new();
    codec
        .encode(Bytes::from_static(&[1, 2, 3]), &mut out)
        .expect("small frame");
    assert_eq!(&out[..], &[0, 0, 0, 3, 1, 2, 3]);
    assert_eq!(&with_length_prefix(&[1, 2, 3])[..], &out[..]);
}

#[test]
fn decoding_a_valid_frame_allocates_in_proportion_to_it() {
    for (key, v) in all_versions() {
        let frame = request_frame(key, v);
        let (res, biggest) = common::tracker::largest_allocation(|| decode_request(frame.clone()));
        assert!(res.is_ok());
        assert!(
            biggest < 64 * 1024,
            "{key:?} v{v}: allocation of {biggest} bytes"
        );
    }
}
