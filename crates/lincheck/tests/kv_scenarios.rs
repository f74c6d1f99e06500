//! Hand-written key-value histories, each small enough to check by eye. Times are `(call,
//! return)`; `_unknown` operations never returned.

use tandem_lincheck::{
    check_kv, history_from_json_lines, history_to_json_lines, CheckOptions, Counterexample,
    KvCheckResult, KvInput, KvModel, KvOperation, KvOutput,
};

fn operation(
    client: u64,
    (call, ret): (u64, u64),
    input: KvInput,
    output: KvOutput,
) -> KvOperation {
    KvOperation {
        client,
        key: b"k".to_vec(),
        call_time: call,
        return_time: Some(ret),
        input,
        output,
    }
}

fn put(client: u64, times: (u64, u64), value: &str, version: u64) -> KvOperation {
    let input = KvInput::Put {
        value: value.into(),
    };
    operation(client, times, input, KvOutput::Written { version })
}

fn delete(client: u64, times: (u64, u64), version: u64) -> KvOperation {
    operation(
        client,
        times,
        KvInput::Delete,
        KvOutput::Written { version },
    )
}

fn cas(
    client: u64,
    times: (u64, u64),
    expected: Option<u64>,
    new: Option<&str>,
    output: KvOutput,
) -> KvOperation {
    let input = KvInput::Cas {
        expected,
        new: new.map(Vec::from),
    };
    operation(client, times, input, output)
}

fn get(client: u64, times: (u64, u64), read: Option<(&str, u64)>) -> KvOperation {
    let read = read.map(|(value, version)| (value.into(), version));
    operation(client, times, KvInput::Get, KvOutput::Read(read))
}

/// An operation whose client never learnt the outcome.
fn unknown(mut operation: KvOperation) -> KvOperation {
    operation.output = KvOutput::Unknown;
    operation.return_time = None;
    operation
}

fn put_unknown(client: u64, call: u64, value: &str) -> KvOperation {
    unknown(put(client, (call, call), value, 0))
}

fn on(key: &str, mut operation: KvOperation) -> KvOperation {
    operation.key = key.into();
    operation
}

fn assert_linearizable(history: &[KvOperation]) {
    let result = check_kv(history, &CheckOptions::default());
    assert!(result.is_linearizable(), "{result}");
}

/// Asserts a violation and returns its key and counterexample, printing the report.
fn assert_violation(history: &[KvOperation]) -> (String, Counterexample<KvModel>) {
    match check_kv(history, &CheckOptions::default()) {
        KvCheckResult::NotLinearizable {
            key,
            counterexample,
        } => {
            println!("{counterexample}");
            (String::from_utf8(key).unwrap(), counterexample)
        }
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn accepts_a_sequential_history() {
    assert_linearizable(&[
        get(1, (0, 1), None),
        put(1, (2, 3), "a", 10),
        get(2, (4, 5), Some(("a", 10))),
        cas(
            2,
            (6, 7),
            Some(10),
            Some("b"),
            KvOutput::Written { version: 11 },
        ),
        cas(1, (8, 9), Some(10), Some("c"), KvOutput::CasMismatch),
        delete(1, (10, 11), 15),
        get(2, (12, 13), None),
        cas(
            1,
            (14, 15),
            None,
            Some("d"),
            KvOutput::Written { version: 20 },
        ),
        cas(2, (16, 17), None, None, KvOutput::CasMismatch),
        cas(
            2,
            (18, 19),
            Some(20),
            None,
            KvOutput::Written { version: 21 },
        ),
        get(1, (20, 21), None),
    ]);
}

#[test]
fn accepts_overlapping_operations_in_an_order_unlike_their_calls() {
    // b is called after a but ordered first (version 1 < 2); the gets overlap both puts and
    // each other, and see the two writes in the one possible order.
    assert_linearizable(&[
        put(1, (0, 10), "a", 2),
        put(2, (1, 8), "b", 1),
        get(3, (2, 4), Some(("b", 1))),
        get(4, (3, 12), Some(("a", 2))),
        get(3, (5, 6), Some(("b", 1))),
        cas(
            5,
            (7, 20),
            Some(2),
            Some("c"),
            KvOutput::Written { version: 3 },
        ),
        get(3, (13, 14), Some(("a", 2))),
    ]);
}

#[test]
fn rejects_a_stale_read_after_a_completed_write() {
    let (key, counterexample) = assert_violation(&[
        put(1, (0, 1), "a", 1),
        put(1, (2, 3), "b", 2),
        get(2, (4, 5), Some(("a", 1))),
    ]);
    assert_eq!(key, "k");
    assert_eq!(counterexample.prefix.len(), 2);
    assert_eq!(counterexample.stuck.len(), 1);
    assert_eq!(counterexample.stuck[0].operation.input, KvInput::Get);
    assert!(!counterexample.stuck[0].legal_here);
}

#[test]
fn rejects_a_lost_acknowledged_write() {
    // The leader acknowledged "a", then a new leader (that never had it) serves reads.
    assert_violation(&[
        put(1, (0, 1), "a", 5),
        get(2, (10, 11), None),
        put(3, (12, 13), "b", 5),
    ]);
}

#[test]
fn rejects_two_successful_cas_from_the_same_version() {
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        cas(
            2,
            (2, 6),
            Some(1),
            Some("b"),
            KvOutput::Written { version: 2 },
        ),
        cas(
            3,
            (3, 7),
            Some(1),
            Some("c"),
            KvOutput::Written { version: 3 },
        ),
    ]);
}

#[test]
fn rejects_a_read_of_a_value_never_written() {
    assert_violation(&[put(1, (0, 10), "a", 1), get(2, (1, 9), Some(("ghost", 1)))]);
}

#[test]
fn rejects_versions_going_backwards() {
    assert_violation(&[put(1, (0, 1), "a", 5), put(2, (2, 3), "b", 3)]);
    // A delete's tombstone takes a version too.
    assert_violation(&[delete(1, (0, 1), 5), put(2, (2, 3), "b", 5)]);
    // Concurrent puts, but the reads fix the order: b then a, so a needs the greater version.
    assert_violation(&[
        put(1, (0, 10), "a", 1),
        put(2, (0, 10), "b", 2),
        get(3, (1, 2), Some(("b", 2))),
        get(3, (3, 4), Some(("a", 1))),
    ]);
}

#[test]
fn rejects_a_cas_mismatch_when_the_version_matched() {
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        cas(2, (2, 3), Some(1), Some("b"), KvOutput::CasMismatch),
    ]);
}

#[test]
fn an_unknown_write_may_have_taken_effect() {
    assert_linearizable(&[
        put(1, (0, 1), "a", 1),
        put_unknown(2, 2, "b"),
        get(3, (5, 6), Some(("b", 2))),
        cas(
            3,
            (7, 8),
            Some(2),
            Some("c"),
            KvOutput::Written { version: 3 },
        ),
    ]);
}

#[test]
fn an_unknown_write_may_never_have_taken_effect() {
    assert_linearizable(&[
        put(1, (0, 1), "a", 1),
        put_unknown(2, 2, "b"),
        get(3, (5, 6), Some(("a", 1))),
        cas(
            3,
            (7, 8),
            Some(1),
            Some("c"),
            KvOutput::Written { version: 3 },
        ),
    ]);
}

#[test]
fn an_unknown_write_may_take_effect_long_after_its_call_unobserved() {
    // Unobserved, b has a fresh version: the first CAS matches only if b never happened, the
    // mismatch only if it did, and a write at any greater version may follow.
    assert_linearizable(&[
        put(1, (0, 1), "a", 1),
        put_unknown(2, 2, "b"),
        get(3, (50, 51), Some(("a", 1))),
        cas(3, (52, 53), Some(1), Some("c"), KvOutput::CasMismatch),
        put(4, (54, 55), "d", 9),
        get(4, (56, 57), Some(("d", 9))),
    ]);
    // An unknown delete and an unknown CAS, each seen, then not seen: once seen, it happened.
    assert_linearizable(&[
        put(1, (0, 1), "a", 1),
        unknown(delete(2, (2, 2), 0)),
        get(3, (5, 6), Some(("a", 1))),
        get(3, (7, 8), None),
    ]);
    assert_linearizable(&[
        put(1, (0, 1), "a", 1),
        unknown(cas(2, (2, 2), Some(1), Some("b"), KvOutput::Unknown)),
        get(3, (5, 6), Some(("b", 4))),
    ]);
}

#[test]
fn an_unknown_write_once_seen_cannot_be_unseen() {
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        put_unknown(2, 2, "b"),
        get(3, (5, 6), Some(("b", 2))),
        get(3, (7, 8), Some(("a", 1))),
    ]);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_its_call() {
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        get(3, (2, 3), Some(("b", 2))),
        put_unknown(2, 5, "b"),
    ]);
}

#[test]
fn an_unknown_cas_takes_effect_only_if_it_matched() {
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        unknown(cas(2, (2, 2), Some(7), Some("b"), KvOutput::Unknown)),
        get(3, (5, 6), Some(("b", 2))),
    ]);
}

#[test]
fn an_unobserved_version_matches_no_cas() {
    // b took effect (the mismatch proves it), so a CAS from a's version cannot succeed after.
    assert_violation(&[
        put(1, (0, 1), "a", 1),
        put_unknown(2, 2, "b"),
        cas(3, (5, 6), Some(1), None, KvOutput::CasMismatch),
        cas(3, (7, 8), Some(1), None, KvOutput::Written { version: 3 }),
    ]);
}

#[test]
fn many_pending_unknown_writes_do_not_blow_up_a_rejection() {
    // 40 writes that never returned, then 30 mismatches that each need one of them to have
    // happened, then a read of a value never written. Each mismatch could be explained by any
    // pending write; trying each of them (rather than one per kind) would never finish.
    let mut history = vec![put(1, (0, 1), "a", 1)];
    for i in 0..20 {
        history.push(put_unknown(2, 2 + i, &format!("lost-{i}")));
        history.push(unknown(delete(3, (2 + i, 2 + i), 0)));
    }
    for i in 0..30 {
        let time = 100 + 10 * i;
        let version = 10 + i;
        history.push(put(1, (time, time + 1), &format!("v{i}"), version));
        let mismatch = cas(
            1,
            (time + 2, time + 3),
            Some(version),
            None,
            KvOutput::CasMismatch,
        );
        history.push(mismatch);
    }
    history.push(get(4, (1_000, 1_001), Some(("ghost", 99))));
    let options = CheckOptions {
        max_steps: 1_000_000,
        deadline: None,
    };
    let result = check_kv(&history, &options);
    assert!(
        matches!(result, KvCheckResult::NotLinearizable { .. }),
        "{result}"
    );
}

#[test]
fn keys_are_checked_independently() {
    // As one register this is not linearizable (the get at 4 would be stale after b's write);
    // per key it is. The same history with a stale read on k2 is reported on k2.
    let mut history = vec![
        on("k1", put(1, (0, 1), "a", 3)),
        on("k2", put(2, (0, 1), "b", 2)),
        on("k2", get(3, (2, 3), Some(("b", 2)))),
        on("k1", get(3, (4, 5), Some(("a", 3)))),
    ];
    assert_linearizable(&history);
    history.push(on("k2", put(1, (6, 7), "c", 4)));
    history.push(on("k2", get(2, (8, 9), Some(("b", 2)))));
    let (key, counterexample) = assert_violation(&history);
    assert_eq!(key, "k2");
    assert_eq!(counterexample.operations, 4);
}

#[test]
fn the_report_names_the_key_the_prefix_and_the_stuck_operations() {
    let history = [
        put(1, (0, 1), "a", 1),
        put(2, (2, 3), "b", 2),
        get(3, (4, 5), Some(("a", 1))),
        put_unknown(4, 4, "c"),
    ];
    let report = check_kv(&history, &CheckOptions::default()).to_string();
    println!("{report}");
    assert!(report.contains("key \"k\""), "{report}");
    // The unknown put fits after b (it may have happened), so the prefix holds three.
    assert!(
        report.contains("longest linearizable prefix: 3 of 4"),
        "{report}"
    );
    assert!(
        report.contains("client 2 [2, 3] Put \"b\" -> Written @2"),
        "{report}"
    );
    assert!(
        report.contains("client 3 [4, 5] Get -> Read \"a\" @1  (illegal in this state)"),
        "{report}"
    );
    assert!(
        report.contains("client 4 [4, ∞) Put \"c\" -> Unknown"),
        "{report}"
    );
}

#[test]
fn a_tiny_budget_gives_unknown_not_a_verdict() {
    let history = [put(1, (0, 1), "a", 1), get(2, (2, 3), Some(("a", 1)))];
    let options = CheckOptions {
        max_steps: 1,
        deadline: None,
    };
    let result = check_kv(&history, &options);
    assert!(matches!(result, KvCheckResult::Unknown { .. }), "{result}");
}

#[test]
fn a_history_survives_its_file_format() {
    let history = vec![
        put(1, (0, 1), "a", 1),
        on("\u{0}binary\u{ff}", put(1, (0, 1), "x", 1)),
        KvOperation {
            key: vec![0xff, 0x00],
            ..put(2, (0, 1), "b", 1)
        },
        KvOperation {
            input: KvInput::Put {
                value: vec![0xc3, 0x28],
            },
            ..put(2, (2, 3), "", 2)
        },
        delete(1, (2, 3), 7),
        cas(2, (4, 5), None, None, KvOutput::CasMismatch),
        cas(
            2,
            (4, 5),
            Some(3),
            Some("c"),
            KvOutput::Written { version: 8 },
        ),
        get(3, (6, 7), None),
        get(3, (6, 7), Some(("c", 8))),
        put_unknown(4, 9, "d"),
        KvOperation {
            return_time: Some(12),
            ..put_unknown(4, 9, "e")
        },
    ];
    let text = history_to_json_lines(&history);
    println!("{text}");
    assert_eq!(text.lines().count(), history.len());
    assert_eq!(history_from_json_lines(&text).unwrap(), history);
    assert!(text.starts_with(
        r#"{"client":1,"key":"k","call_time":0,"return_time":1,"input":{"put":{"value":"a"}},"output":{"written":{"version":1}}}"#
    ));
}

#[test]
fn a_bad_history_line_is_reported_with_its_number() {
    let good = history_to_json_lines(&[get(1, (0, 1), None)]);
    let error = history_from_json_lines(&format!("{good}\n{{\"client\":1}}\n")).unwrap_err();
    assert_eq!(error.line, 3);
    let no_return = good.replace("\"return_time\":1", "\"return_time\":null");
    let error = history_from_json_lines(&no_return).unwrap_err();
    assert_eq!(error.line, 1);
    assert!(error.to_string().contains("return_time"), "{error}");
}
