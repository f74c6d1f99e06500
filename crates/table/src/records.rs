//! The table's view of record batches: each record with a key is a write of that key.

use bytes::Bytes;
use tandem_storage::batch::{self, Compression};
use tandem_storage::BatchError;

/// One put (`value: Some`) or delete (`value: None`, a tombstone) at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub offset: i64,
    pub leader_epoch: i32,
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// The writes in `batches` (one or more stamped v2 batches, as appended to the log), in offset
/// order. Records without a key are not table writes and are skipped; control batches too.
/// A compressed batch is an error: tables are written uncompressed (the server refuses
/// compressed produces to a table), so meeting one means the log is not a table's.
pub fn decode_writes(batches: &Bytes) -> Result<Vec<Write>, BatchError> {
    let mut writes = Vec::new();
    let mut pos = 0usize;
    for item in batch::split_batches(batches) {
        let (header, raw) = item?;
        let start = pos;
        pos += raw.len();
        if header.is_control() {
            continue;
        }
        if header.compression() != Compression::None {
            return Err(BatchError::MalformedRecord(
                "a table's batch must not be compressed",
            ));
        }
        let one = batches.slice(start..pos);
        for record in batch::decode_records(&one)? {
            let Some(key) = record.key else { continue };
            writes.push(Write {
                offset: header.base_offset + i64::from(record.offset_delta),
                leader_epoch: header.leader_epoch,
                key,
                value: record.value,
            });
        }
    }
    Ok(writes)
}

/// Checks that a batch a client produces to a table can be applied: uncompressed, and every
/// record has a key. Returns a one-line reason when it cannot.
pub fn check_table_batch(batches: &[u8]) -> Result<(), String> {
    let owned = Bytes::copy_from_slice(batches);
    let mut pos = 0usize;
    for item in batch::split_batches(&owned) {
        let (header, raw) = item.map_err(|e| e.to_string())?;
        let start = pos;
        pos += raw.len();
        if header.compression() != Compression::None {
            return Err("records for a table must not be compressed".into());
        }
        let records = batch::decode_records(&owned.slice(start..pos)).map_err(|e| e.to_string())?;
        if let Some(i) = records.iter().position(|r| r.key.is_none()) {
            return Err(format!("record {i} of a batch for a table has no key"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_storage::BatchBuilder;

    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn batch(base: i64, epoch: i32, records: &[KeyValue]) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for (k, v) in records {
            b.push(1_000, *k, *v);
        }
        let mut bytes = b.build();
        batch::set_base_offset(&mut bytes, base);
        batch::set_leader_epoch(&mut bytes, epoch);
        bytes.to_vec()
    }

    #[test]
    fn writes_carry_offsets_epochs_and_tombstones() {
        let mut all = batch(10, 3, &[(Some(b"a"), Some(b"1")), (None, Some(b"x"))]);
        all.extend(batch(12, 4, &[(Some(b"b"), None)]));
        let writes = decode_writes(&Bytes::from(all)).unwrap();
        assert_eq!(
            writes,
            vec![
                Write {
                    offset: 10,
                    leader_epoch: 3,
                    key: Bytes::from_static(b"a"),
                    value: Some(Bytes::from_static(b"1")),
                },
                Write {
                    offset: 12,
                    leader_epoch: 4,
                    key: Bytes::from_static(b"b"),
                    value: None,
                },
            ]
        );
    }

    #[test]
    fn a_table_batch_needs_keys() {
        assert!(check_table_batch(&batch(0, 0, &[(Some(b"k"), Some(b"v"))])).is_ok());
        let err = check_table_batch(&batch(0, 0, &[(Some(b"k"), None), (None, Some(b"v"))]));
        assert_eq!(
            err,
            Err("record 1 of a batch for a table has no key".into())
        );
        assert!(check_table_batch(b"garbage").is_err());
    }
}
