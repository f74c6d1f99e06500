//! No duplicate from an idempotent producer: a (producer id, producer epoch, sequence) is
//! committed at most once (rule 9), however often the producer retried, across failovers.

use std::collections::BTreeMap;

use tandem_storage::BatchHeader;

use super::Violation;
use crate::net::Part;

/// Called for each batch as it joins the committed history.
pub fn on_committed(
    part: Part,
    bytes: &[u8],
    base_offset: i64,
    seen: &mut BTreeMap<(Part, i64, i16, i32), i64>,
) -> Result<(), Violation> {
    let Ok(header) = BatchHeader::parse(bytes) else {
        return Err(Violation::new(
            "no-duplicates",
            format!("p{part}: committed batch at {base_offset} has no valid header"),
        ));
    };
    if !header.has_producer_id() || header.base_sequence < 0 {
        return Ok(());
    }
    let key = (
        part,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
    );
    if let Some(first) = seen.insert(key, base_offset) {
        if first != base_offset {
            return Err(Violation::new(
                "no-duplicates",
                format!(
                    "p{part}: producer {} epoch {} sequence {} committed twice, at offsets {first} and {base_offset}",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
    }
    Ok(())
}
