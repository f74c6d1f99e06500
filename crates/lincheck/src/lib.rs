//! A linearizability checker for histories of Tandem's replicated key-value tables.
//!
//! A history is what clients saw: each operation's call time, return time (or that its outcome
//! is unknown), input and output. It is *linearizable* if the operations can be put in one
//! total order that (1) keeps every operation that returned before another was called ahead of
//! it, and (2) is a legal run of the sequential [`Model`]. The end-to-end tests (real
//! processes, a leader killed and restarted) and the deterministic simulator record histories
//! and call [`check_kv`]; the generic [`check`] takes any [`Model`]. The crate does no I/O.
//!
//! # The algorithm
//!
//! Wing and Gong's search (J. M. Wing and C. Gong, "Testing and Verifying Concurrent Objects",
//! JPDC 1993) builds the order depth first: take any operation that no pending operation must
//! precede, apply it to the model, recurse, and backtrack when an operation that has returned
//! cannot be placed. Lowe (G. Lowe, "Testing for Linearizability", Concurrency and Computation:
//! Practice and Experience, 2017) added memoization: a configuration is the set of operations
//! linearized so far plus the model state, and a configuration already explored is not explored
//! again. Porcupine (Anish Athalye's checker in Go) keeps the history as a doubly linked list
//! of call and return events from which linearized operations are lifted, with the linearized
//! set as a bitset; this crate follows the same plan ([`checker`]).
//!
//! The search is exponential in the worst case, so a check is bounded by
//! [`CheckOptions::max_steps`] (deterministic) and [`CheckOptions::deadline`]; past them the
//! verdict is "unknown", never a hang.
//!
//! *P-compositionality*: a key-value history is linearizable iff each key's sub-history is, so
//! [`check_kv`] checks the keys independently; each search is then over a few thousand
//! operations with little concurrency rather than everything at once.
//!
//! *Unknown outcomes* (timeouts, indeterminate errors, crashed clients) return at "∞": such an
//! operation may be linearized anywhere after its call, or not at all. For a write with an
//! unknown outcome the version is the one a get observed together with its value (tests
//! write a unique value per put), else an unobserved one: newer than everything before it and
//! matching no compare-and-set. Each pending unknown operation doubles the configurations in
//! principle, so the search (1) tries operations with known outcomes first, (2) skips a
//! configuration when an explored one has the same known operations and state and a subset of
//! its unknown ones, (3) never places an unknown operation that changes nothing or whose effect
//! the next unknown one erases, and (4) treats unknown operations with the same effect
//! ([`Model::same_effect`], e.g. two deletes) as interchangeable, placing the earlier-called
//! first. Accepting stays fast; rejecting a long history with many operations pending forever
//! can still exhaust the budget (see `tests/generated.rs`).
//!
//! # History files
//!
//! [`history_to_json_lines`] and [`history_from_json_lines`] keep a [`KvOperation`] history as
//! JSON lines, one operation per line. Keys and values are JSON strings when they are UTF-8,
//! else arrays of byte values; times are integers in any monotonic unit; `return_time` is `null`
//! (or missing) when the client never got an answer:
//!
//! ```text
//! {"client":1,"key":"k1","call_time":100,"return_time":130,"input":{"put":{"value":"c1-7"}},"output":{"written":{"version":42}}}
//! {"client":2,"key":"k1","call_time":110,"return_time":140,"input":"get","output":{"read":{"value":"c1-7","version":42}}}
//! {"client":2,"key":"k1","call_time":150,"return_time":160,"input":"get","output":{"read":null}}
//! {"client":3,"key":"k1","call_time":120,"return_time":null,"input":{"cas":{"expected":42,"new":"c3-2"}},"output":"unknown"}
//! {"client":3,"key":"k1","call_time":200,"return_time":210,"input":{"cas":{"expected":null,"new":null}},"output":"cas_mismatch"}
//! {"client":1,"key":"k2","call_time":220,"return_time":230,"input":"delete","output":{"written":{"version":57}}}
//! ```
//!
//! # Example
//!
//! ```
//! use tandem_lincheck::{check_kv, CheckOptions, KvInput, KvOperation, KvOutput};
//!
//! let put = KvOperation {
//!     client: 1,
//!     key: b"k".to_vec(),
//!     call_time: 0,
//!     return_time: Some(10),
//!     input: KvInput::Put { value: b"a".to_vec() },
//!     output: KvOutput::Written { version: 7 },
//! };
//! // Called after the put returned, yet it does not see the put: a stale read.
//! let get = KvOperation {
//!     client: 2,
//!     key: b"k".to_vec(),
//!     call_time: 11,
//!     return_time: Some(12),
//!     input: KvInput::Get,
//!     output: KvOutput::Read(None),
//! };
//! let result = check_kv(&[put, get], &CheckOptions::default());
//! assert!(!result.is_linearizable());
//! println!("{result}"); // the key, the longest linearizable prefix, the stuck get
//! ```

pub mod checker;
pub mod history_file;
pub mod kv;

pub use checker::{
    check, CheckOptions, CheckResult, Counterexample, Exhausted, Model, Operation, StuckOperation,
};
pub use history_file::{
    history_from_json_lines, history_to_json_lines, to_json_line, HistoryFileError,
};
pub use kv::{check_kv, Current, KvCheckResult, KvInput, KvModel, KvOperation, KvOutput, KvState};
