//! Key-value tables (DESIGN.md "Key-value tables"), as pure code: no I/O, no clock.
//!
//! A table is a topic whose records are `(key, value | tombstone)`. Every replica keeps a
//! [`Table`]: the records of its log below its HW applied to an ordered map (what reads see),
//! plus the records above the HW that are in the log but not yet committed (what the leader
//! decides a compare-and-set against). The server feeds it what the replication core does to
//! the log (appends, truncations, HW moves); [`read`] decides whether a replica may answer a
//! read at the consistency a client asked for; [`snapshot`] checkpoints a table so that a
//! restart replays only the log's tail; [`replica`] is the table beside one replica (fed from
//! the core's log actions, deciding compare-and-sets, answering reads and what waits on the HW).
//!
//! A record's offset is its version. A token names a write as (offset, leader epoch): a
//! replica whose log holds a different epoch at that offset knows the write was truncated.

pub mod read;
pub mod records;
pub mod replica;
pub mod snapshot;
pub mod state;

pub use read::{Consistency, ReadError, ReadView, Token};
pub use records::check_table_batch;
pub use records::{decode_writes, Write};
pub use replica::{
    Answer, CasDecision, ReadAnswer, TableQuery, TableReadError, TableReplica, TableWrite,
    TableWriteError, Written,
};
pub use snapshot::{Snapshot, SnapshotError};
pub use state::{CasCheck, Entry, ScanPage, Table, TruncatedCommitted};
