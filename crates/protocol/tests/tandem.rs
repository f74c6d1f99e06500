//! Tandem's own API key: round trips, versioning, malformed bodies; error-code mapping.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tandem_protocol::errors::{self, produce_error_code, read_error_code};
use tandem_protocol::*;
use tandem_replication::{ProduceError, ReadError};
use tandem_storage::BatchError;

fn requests() -> Vec<TandemRequest> {
    vec![
        TandemRequest::Controller(vec![1, 2, 3, 0, 255]),
        TandemRequest::Controller(vec![]),
        TandemRequest::FlushReport {
            topic: "orders".into(),
            partition: 3,
            replica_id: 2,
            leader_epoch: 7,
            flushed_offset: 12_345,
        },
        TandemRequest::Produce {
            topic: "orders".into(),
            partition: 0,
            acks: -1,
            durability: Durability::Flushed,
            timeout_ms: 30_000,
            current_leader_epoch: Some(4),
            records: vec![9; 1000],
        },
        TandemRequest::Produce {
            topic: "t".into(),
            partition: 1,
            acks: 1,
            durability: Durability::Replicated,
            timeout_ms: 0,
            current_leader_epoch: None,
            records: vec![],
        },
        TandemRequest::ClusterStatus,
        TandemRequest::KvWrite {
            table: "users".into(),
            partition: 2,
            op: KvOp::Cas {
                key: b"alice".to_vec(),
                expected: Some(41),
                value: Some(ByteString(b"v2".to_vec())),
            },
            acks: -1,
            durability: Durability::Flushed,
            timeout_ms: 5_000,
            current_leader_epoch: Some(3),
        },
        TandemRequest::KvWrite {
            table: "users".into(),
            partition: 0,
            op: KvOp::Delete { key: vec![] },
            acks: 1,
            durability: Durability::Replicated,
            timeout_ms: 0,
            current_leader_epoch: None,
        },
        TandemRequest::KvRead {
            table: "users".into(),
            partition: 1,
            query: KvQuery::Scan {
                prefix: b"a".to_vec(),
                from: b"ab".to_vec(),
                to: Some(ByteString(b"b".to_vec())),
                limit: 100,
            },
            consistency: ReadConsistency::AtLeast(KvToken {
                offset: 17,
                leader_epoch: 2,
            }),
            wait_ms: 500,
        },
        TandemRequest::KvRead {
            table: "users".into(),
            partition: 1,
            query: KvQuery::Get { key: b"k".to_vec() },
            consistency: ReadConsistency::Follower {
                max_lag_offsets: Some(10),
                max_lag_ms: None,
            },
            wait_ms: 0,
        },
    ]
}

fn responses() -> Vec<TandemResponse> {
    vec![
        TandemResponse::Controller(vec![4, 5, 6]),
        TandemResponse::FlushReport { error_code: 0 },
        TandemResponse::Produce {
            error_code: errors::NOT_LEADER_OR_FOLLOWER,
            base_offset: -1,
            log_start_offset: -1,
            leader_hint: Some(2),
            leader_epoch: Some(8),
        },
        TandemResponse::ClusterStatus("{\"nodes\":[]}".into()),
        TandemResponse::Error {
            error_code: errors::INVALID_REQUEST,
            message: "nope".into(),
        },
        TandemResponse::KvWrite {
            error_code: errors::CAS_MISMATCH,
            token: None,
            current_version: Some(12),
            leader_hint: None,
            leader_epoch: None,
            message: "version 12, not 11".into(),
        },
        TandemResponse::KvRead {
            error_code: 0,
            entries: vec![KvEntry {
                key: b"k".to_vec(),
                value: vec![7; 300],
                version: 5,
                leader_epoch: 1,
            }],
            next: Some(ByteString(b"l".to_vec())),
            token: Some(KvToken {
                offset: 9,
                leader_epoch: 1,
            }),
            leader_hint: Some(1),
            leader_epoch: Some(1),
            message: String::new(),
        },
    ]
}

#[test]
fn tandem_requests_round_trip() {
    for (i, body) in requests().into_iter().enumerate() {
        let frame = encode_tandem_request(i as i32, &body);
        assert_eq!(&frame[..4], &[0x03, 0xe8, 0, 0], "key 1000, version 0");
        match decode_request(frame) {
            Ok(Request::Tandem {
                correlation_id,
                api_version,
                body: got,
            }) => {
                assert_eq!(correlation_id, i as i32);
                assert_eq!(api_version, TANDEM_API_VERSION);
                assert_eq!(got, body);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tandem_responses_round_trip() {
    for (i, body) in responses().into_iter().enumerate() {
        let frame = encode_tandem_response(i as i32 + 100, &body);
        let (corr, got) = decode_tandem_response(frame).expect("decodes");
        assert_eq!(corr, i as i32 + 100);
        assert_eq!(got, body);
    }
}

#[test]
fn records_travel_as_one_byte_string() {
    // Postcard: variant index, then length varint and the raw bytes (no per-byte overhead).
    let frame = encode_tandem_request(1, &TandemRequest::Controller(vec![0xaa; 200]));
    assert_eq!(frame.len(), 8 + 1 + 2 + 200);
}

#[test]
fn unsupported_tandem_version_is_answered_with_error_35() {
    let mut f = encode_tandem_request(77, &TandemRequest::ClusterStatus).to_vec();
    f[2..4].copy_from_slice(&1i16.to_be_bytes());
    let err = decode_request(Bytes::from(f)).expect_err("v1 unknown");
    assert_eq!(err.kind, DecodeErrorKind::UnsupportedVersion);
    let reply = error_response(&err).expect("answered");
    match decode_tandem_response(reply) {
        Ok((77, TandemResponse::Error { error_code, .. })) => {
            assert_eq!(error_code, errors::UNSUPPORTED_VERSION)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_tandem_bodies_close_the_connection() {
    let good = encode_tandem_request(5, &requests()[2]);
    let cases: Vec<Vec<u8>> = vec![
        good[..good.len() - 1].to_vec(),         // truncated
        [&good[..], &[0]].concat(),              // trailing byte
        vec![0x03, 0xe8, 0, 0, 0, 0, 0, 5],      // no body
        vec![0x03, 0xe8, 0, 0, 0, 0, 0, 5, 200], // unknown variant
        vec![
            0x03, 0xe8, 0, 0, 0, 0, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ], // 4 GB Vec
        vec![0x03, 0xe8, 0, 0, 0, 0],            // short header
    ];
    for f in cases {
        let err = decode_request(Bytes::from(f.clone())).expect_err("malformed");
        assert!(
            matches!(err.kind, DecodeErrorKind::Malformed(_)),
            "{f:?}: {err:?}"
        );
        assert_eq!(error_response(&err), None);
    }
    assert!(decode_tandem_response(Bytes::from_static(&[0, 0, 1])).is_err());
    assert!(decode_tandem_response(Bytes::from_static(&[0, 0, 0, 1, 250])).is_err());
}

#[test]
fn durability_parses_and_prints() {
    for d in [Durability::Replicated, Durability::Flushed] {
        assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
    }
    assert!("disk".parse::<Durability>().is_err());
}

#[test]
fn error_constants_match_kafka() {
    for &(name, code) in errors::ALL {
        if code == errors::NONE {
            continue;
        }
        let kafka = ResponseError::try_from_code(code)
            .unwrap_or_else(|| panic!("{name} = {code} is not a Kafka error code"));
        let kafka_name = format!("{kafka:?}");
        let ours: String = name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_string() + &c.as_str().to_lowercase())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(ours, kafka_name, "{name} = {code}");
    }
    assert_eq!(errors::NONE, 0);
}

#[test]
fn produce_errors_map_to_kafka_codes() {
    let cases = [
        (
            ProduceError::NotLeader {
                leader: Some(1),
                leader_epoch: 3,
            },
            6,
        ),
        (
            ProduceError::FencedLeaderEpoch {
                request_epoch: 1,
                current_epoch: 2,
            },
            74,
        ),
        (
            ProduceError::UnknownLeaderEpoch {
                request_epoch: 3,
                current_epoch: 2,
            },
            75,
        ),
        (
            ProduceError::NotEnoughReplicas {
                isr_size: 1,
                min_insync_replicas: 2,
            },
            19,
        ),
        (
            ProduceError::NotEnoughReplicasAfterAppend {
                base_offset: 5,
                isr_size: 1,
                min_insync_replicas: 2,
            },
            20,
        ),
        (ProduceError::TimedOutAfterAppend { base_offset: 5 }, 7),
        (
            ProduceError::NotLeaderAfterAppend {
                base_offset: 5,
                leader: None,
                leader_epoch: 4,
            },
            6,
        ),
        (
            ProduceError::InvalidRecord(BatchError::CrcMismatch {
                stored: 1,
                computed: 2,
            }),
            2,
        ),
        (ProduceError::InvalidRecord(BatchError::BadMagic(1)), 2),
        (
            ProduceError::InvalidRecord(BatchError::MalformedRecord("x")),
            87,
        ),
        (ProduceError::RecordTooLarge { size: 10, max: 5 }, 10),
        (ProduceError::InvalidRequest("acks"), 42),
        (
            ProduceError::OutOfOrderSequence {
                producer_id: 1,
                expected_sequence: 2,
                sequence: 4,
            },
            45,
        ),
        (
            ProduceError::InvalidProducerEpoch {
                producer_id: 1,
                producer_epoch: 0,
                current_producer_epoch: 1,
            },
            47,
        ),
        (ProduceError::Storage("disk".into()), 56),
    ];
    for (e, code) in cases {
        assert_eq!(produce_error_code(&e), code, "{e}");
    }
}

#[test]
fn read_errors_map_to_kafka_codes() {
    let cases = [
        (
            ReadError::NotLeader {
                leader: None,
                leader_epoch: 1,
            },
            6,
        ),
        (
            ReadError::FencedLeaderEpoch {
                request_epoch: 1,
                current_epoch: 2,
            },
            74,
        ),
        (
            ReadError::UnknownLeaderEpoch {
                request_epoch: 3,
                current_epoch: 2,
            },
            75,
        ),
        (
            ReadError::OffsetOutOfRange {
                offset: 9,
                log_start_offset: 0,
                log_end_offset: 5,
            },
            1,
        ),
        (
            ReadError::OffsetNotAvailable {
                high_watermark: 1,
                epoch_start_offset: 5,
            },
            78,
        ),
        (ReadError::NotFollower { replica_id: 4 }, 6),
        (ReadError::Storage("disk".into()), 56),
    ];
    for (e, code) in cases {
        assert_eq!(read_error_code(&e), code, "{e}");
    }
}
