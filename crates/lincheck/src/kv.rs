//! The model of a Tandem key-value table ([`KvModel`]) and the per-key check ([`check_kv`]).
//!
//! Per key the state is absent or (value, version), where a version is the offset of the
//! record that wrote it: versions of one key strictly increase along the linearization, deletes
//! included (a tombstone has an offset too). See DESIGN.md, "Key-value tables".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::checker::{check_with_budget, Budget, CheckOptions, CheckResult, Counterexample};
use crate::checker::{Exhausted, Model, Operation};

/// What a client asked of one key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Write `value`.
    Put {
        /// The value; tests make it unique per put so that a read identifies the write.
        value: Vec<u8>,
    },
    /// Write a tombstone.
    Delete,
    /// Write `new` (a tombstone when `None`) if the key's current version is `expected`
    /// (`None`: if the key is absent).
    Cas {
        /// The version the key must have; `None` means "absent".
        expected: Option<u64>,
        /// The value to write; `None` deletes.
        new: Option<Vec<u8>>,
    },
    /// Read the current value and version.
    Get,
}

/// What the client was told.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A put, a delete or a successful compare-and-set wrote a record at offset `version`.
    Written {
        /// The record's offset.
        version: u64,
    },
    /// A compare-and-set found a version other than the expected one and wrote nothing.
    CasMismatch,
    /// A get found this value and version (`None`: the key is absent).
    Read(Option<(Vec<u8>, u64)>),
    /// The outcome is not known (timeout, indeterminate error, client crashed): the operation
    /// may have taken effect, at any time after its call, or not at all.
    Unknown,
}

/// One operation on one key, as a test records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOperation {
    /// Who issued it (only for reports).
    pub client: u64,
    /// The key; keys are checked independently of each other.
    pub key: Vec<u8>,
    /// When the client issued it, on a clock shared by all clients (any monotonic unit).
    pub call_time: u64,
    /// When the client got its answer. Required for a known output; for
    /// [`KvOutput::Unknown`] it is when the client gave up (`None`: it never did, e.g. it
    /// crashed) and the checker ignores it: the effect may come later still.
    pub return_time: Option<u64>,
    /// What was asked.
    pub input: KvInput,
    /// What was answered.
    pub output: KvOutput,
}

/// What one key holds in the model.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Current {
    /// Nothing: never written, or deleted.
    #[default]
    Absent,
    /// `value`, written at `version`.
    Present {
        /// The value.
        value: Vec<u8>,
        /// The offset of the record that wrote it.
        version: u64,
    },
    /// A value written by an operation with an unknown outcome that no get observed: no get
    /// may return it, its version is newer than every earlier one and matches no
    /// compare-and-set. Which value it is cannot matter, so it is not kept.
    Unobserved,
}

/// The state of one key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KvState {
    /// What the key holds.
    pub current: Current,
    /// The highest known version written so far (by a put, delete or CAS): every later write
    /// must have a greater one. A write with an unknown outcome whose version nobody observed
    /// does not raise it, so after one the check is slightly weaker than exact (it never
    /// rejects a linearizable history).
    pub last_version: Option<u64>,
}

impl KvState {
    /// Whether a compare-and-set expecting `expected` matches.
    fn matches(&self, expected: Option<u64>) -> bool {
        match (&self.current, expected) {
            (Current::Absent, None) => true,
            (Current::Present { version, .. }, Some(expected)) => *version == expected,
            _ => false,
        }
    }

    /// Whether a get may return `read`.
    fn reads_as(&self, read: &Option<(Vec<u8>, u64)>) -> bool {
        match (&self.current, read) {
            (Current::Absent, None) => true,
            (Current::Present { value, version }, Some((read_value, read_version))) => {
                value == read_value && version == read_version
            }
            _ => false,
        }
    }

    /// The state after writing `value` (a tombstone for `None`) at `version`, if legal.
    fn write(&self, value: Option<&Vec<u8>>, version: u64) -> Option<KvState> {
        if self.last_version.is_some_and(|last| version <= last) {
            return None;
        }
        let current = match value {
            Some(value) => Current::Present {
                value: value.clone(),
                version,
            },
            None => Current::Absent,
        };
        Some(KvState {
            current,
            last_version: Some(version),
        })
    }
}

/// The sequential specification of one key of a Tandem table.
///
/// Writes with an unknown outcome need one fact from the rest of the history: the version a
/// get observed with their value, which becomes their version. Values are assumed unique per
/// write among unknown writes.
#[derive(Clone, Debug, Default)]
pub struct KvModel {
    /// Value → version, from gets that returned a version no acknowledged write was given:
    /// the version of the unknown-outcome write of that value.
    observed_versions: HashMap<Vec<u8>, u64>,
}

impl KvModel {
    /// The model for the history of one key.
    pub fn new(history: &[Operation<KvInput, KvOutput>]) -> Self {
        let acknowledged: HashSet<u64> = history
            .iter()
            .filter_map(|operation| match operation.output {
                KvOutput::Written { version } => Some(version),
                _ => None,
            })
            .collect();
        let observed_versions = history
            .iter()
            .filter_map(|operation| match &operation.output {
                KvOutput::Read(Some((value, version))) if !acknowledged.contains(version) => {
                    Some((value.clone(), *version))
                }
                _ => None,
            })
            .collect();
        KvModel { observed_versions }
    }

    /// The version a get observed with `value`, if any, for a write with an unknown outcome.
    fn observed_version(&self, value: Option<&Vec<u8>>) -> Option<u64> {
        value.and_then(|value| self.observed_versions.get(value).copied())
    }

    /// The state after a write with an unknown outcome took effect, if it can have.
    fn unknown_write(&self, state: &KvState, value: Option<&Vec<u8>>) -> Option<KvState> {
        if let Some(version) = self.observed_version(value) {
            return state.write(value, version);
        }
        let current = match value {
            Some(_) => Current::Unobserved,
            None => Current::Absent,
        };
        Some(KvState {
            current,
            last_version: state.last_version,
        })
    }

    /// What an operation with an unknown outcome can do to the key, when that does not depend
    /// on which operation it is; `None` when it does (it writes a value a get observed).
    fn anonymous_effect(&self, input: &KvInput) -> Option<AnonymousEffect> {
        let (condition, written) = match input {
            KvInput::Get => return Some(AnonymousEffect::Nothing),
            KvInput::Put { value } => (None, Some(value)),
            KvInput::Delete => (None, None),
            KvInput::Cas { expected, new } => (Some(*expected), new.as_ref()),
        };
        if self.observed_version(written).is_some() {
            return None;
        }
        Some(AnonymousEffect::Write {
            condition,
            tombstone: written.is_none(),
        })
    }
}

/// See [`KvModel::anonymous_effect`].
#[derive(PartialEq, Eq)]
enum AnonymousEffect {
    Nothing,
    Write {
        /// `None` for a put or delete, else the version a compare-and-set expects.
        condition: Option<Option<u64>>,
        /// A tombstone, else a value no get observed.
        tombstone: bool,
    },
}

impl Model for KvModel {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn initial_state(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, state: &KvState, input: &KvInput, output: &KvOutput) -> Option<KvState> {
        use KvInput::{Cas, Delete, Get, Put};
        use KvOutput::{CasMismatch, Read, Unknown, Written};
        match (input, output) {
            (Get, Read(read)) => state.reads_as(read).then(|| state.clone()),
            (Get, Unknown) => Some(state.clone()),
            (Put { value }, Written { version }) => state.write(Some(value), *version),
            (Delete, Written { version }) => state.write(None, *version),
            (Cas { expected, new }, Written { version }) if state.matches(*expected) => {
                state.write(new.as_ref(), *version)
            }
            (Cas { expected, .. }, CasMismatch) => {
                (!state.matches(*expected)).then(|| state.clone())
            }
            (Put { value }, Unknown) => self.unknown_write(state, Some(value)),
            (Delete, Unknown) => self.unknown_write(state, None),
            // Had it not matched it would have written nothing: the same as never happening.
            (Cas { expected, new }, Unknown) if state.matches(*expected) => {
                self.unknown_write(state, new.as_ref())
            }
            _ => None,
        }
    }

    /// Unknown gets are alike; so are unknown deletes, unknown puts of values no get
    /// observed, and unknown compare-and-sets of such values (or tombstones) expecting the
    /// same version.
    fn same_effect(
        &self,
        a: &Operation<KvInput, KvOutput>,
        b: &Operation<KvInput, KvOutput>,
    ) -> bool {
        a.output == KvOutput::Unknown
            && b.output == KvOutput::Unknown
            && self.anonymous_effect(&a.input).is_some()
            && self.anonymous_effect(&a.input) == self.anonymous_effect(&b.input)
    }
}

/// The verdict on a key-value history.
#[derive(Clone, Debug)]
pub enum KvCheckResult {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not (the first such key in byte order).
    NotLinearizable {
        /// The key.
        key: Vec<u8>,
        /// How far the search got on it.
        counterexample: Counterexample<KvModel>,
    },
    /// The budget ran out while checking this key.
    Unknown {
        /// The key.
        key: Vec<u8>,
        /// Work done before giving up, over all keys.
        exhausted: Exhausted,
    },
}

impl KvCheckResult {
    /// True only for [`KvCheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, KvCheckResult::Linearizable)
    }
}

impl fmt::Display for KvCheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCheckResult::Linearizable => write!(f, "linearizable"),
            KvCheckResult::NotLinearizable {
                key,
                counterexample,
            } => write!(f, "not linearizable: key {:?}\n{counterexample}", Text(key)),
            KvCheckResult::Unknown { key, exhausted } => write!(
                f,
                "unknown: the budget ran out after {} steps, on key {:?}",
                exhausted.steps,
                Text(key)
            ),
        }
    }
}

/// Checks a key-value history for linearizability, one key at a time (P-compositionality:
/// a history is linearizable iff each key's sub-history is), in key order.
///
/// # Panics
///
/// If an operation with a known output has no return time, or returns before its call.
pub fn check_kv(history: &[KvOperation], options: &CheckOptions) -> KvCheckResult {
    let mut keys: BTreeMap<&[u8], Vec<Operation<KvInput, KvOutput>>> = BTreeMap::new();
    for operation in history {
        if operation.input == KvInput::Get && operation.output == KvOutput::Unknown {
            continue; // A read that told nobody anything constrains nothing.
        }
        let return_time = match operation.output {
            KvOutput::Unknown => None,
            _ => Some(operation.return_time.unwrap_or_else(|| {
                panic!("an operation with a known output has no return time: {operation:?}")
            })),
        };
        keys.entry(&operation.key).or_default().push(Operation {
            client: operation.client,
            call_time: operation.call_time,
            return_time,
            input: operation.input.clone(),
            output: operation.output.clone(),
        });
    }
    let mut budget = Budget::new(options);
    for (key, operations) in keys {
        let model = KvModel::new(&operations);
        match check_with_budget(&model, &operations, &mut budget) {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable(counterexample) => {
                return KvCheckResult::NotLinearizable {
                    key: key.to_vec(),
                    counterexample,
                }
            }
            CheckResult::Unknown(exhausted) => {
                return KvCheckResult::Unknown {
                    key: key.to_vec(),
                    exhausted,
                }
            }
        }
    }
    KvCheckResult::Linearizable
}

/// Shows bytes as a string literal, escaping what is not printable ASCII.
struct Text<'a>(&'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Debug for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvInput::Put { value } => write!(f, "Put {:?}", Text(value)),
            KvInput::Delete => write!(f, "Delete"),
            KvInput::Cas { expected, new } => {
                match expected {
                    Some(version) => write!(f, "Cas(expected @{version}, ")?,
                    None => write!(f, "Cas(expected absent, ")?,
                }
                match new {
                    Some(value) => write!(f, "new {:?})", Text(value)),
                    None => write!(f, "new: delete)"),
                }
            }
            KvInput::Get => write!(f, "Get"),
        }
    }
}

impl fmt::Debug for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOutput::Written { version } => write!(f, "Written @{version}"),
            KvOutput::CasMismatch => write!(f, "CasMismatch"),
            KvOutput::Read(Some((value, version))) => {
                write!(f, "Read {:?} @{version}", Text(value))
            }
            KvOutput::Read(None) => write!(f, "Read absent"),
            KvOutput::Unknown => write!(f, "Unknown"),
        }
    }
}

impl fmt::Debug for KvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.current {
            Current::Absent => write!(f, "absent")?,
            Current::Present { value, version } => write!(f, "{:?} @{version}", Text(value))?,
            Current::Unobserved => write!(f, "a value nobody observed")?,
        }
        match self.last_version {
            Some(version) => write!(f, " (last known version @{version})"),
            None => write!(f, " (no known version yet)"),
        }
    }
}
