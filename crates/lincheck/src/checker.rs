//! The generic checker: a sequential [`Model`], a history of [`Operation`]s, and the
//! Wing–Gong–Lowe search over it ([`check`]).
//!
//! The history becomes one doubly linked list of call and return events in time order.
//! The search walks it from the front, where the operations that may take effect next are:
//!
//! ```text
//!   head → call A → call B → return A → call C → return B → … → return P (∞)
//!          └─ candidates ─┘  └ A must be linearized before anything past here
//! ```
//!
//! Linearizing a candidate lifts its call and its return out of the list and restarts from
//! the front; reaching a return whose operation is not linearized yet means the last choice
//! was wrong, so the search puts the last lifted operation back and tries the next candidate.
//! An operation whose outcome is unknown returns at "∞", after every known return: reaching
//! one means every operation with a known outcome has been linearized, which is success.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// A sequential specification: which outputs are legal for an input in a state, and the state
/// the operation leaves behind.
pub trait Model {
    /// The object's state. Hashed and compared to memoize (linearized set, state) pairs, so it
    /// should hold exactly what determines future behaviour.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// What a client asked for.
    type Input: Clone + fmt::Debug;
    /// What the client was told (or that it was told nothing it can trust).
    type Output: Clone + fmt::Debug;

    /// The state before any operation.
    fn initial_state(&self) -> Self::State;

    /// Whether `output` is a legal answer to `input` in `state`; if so, the next state.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Whether two operations with unknown outcomes have the same effect in every state (only
    /// their inputs and outputs matter), so that the search tries only the earlier-called one
    /// first: once both are called they are interchangeable. Must be an equivalence. The
    /// default, "never", is always correct, but many pending unknown operations that could
    /// each explain the same observation then make the search exponential.
    fn same_effect(
        &self,
        a: &Operation<Self::Input, Self::Output>,
        b: &Operation<Self::Input, Self::Output>,
    ) -> bool {
        let _ = (a, b);
        false
    }
}

/// One client operation as observed from outside: when it was called, when (if ever) its
/// outcome came back, and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it; only for reports (the checker does not assume a client is sequential).
    pub client: u64,
    /// When the client issued it, on a clock shared by all clients (any monotonic unit).
    pub call_time: u64,
    /// When the client learnt the outcome. `None`: the outcome is unknown (timeout,
    /// indeterminate error, client crashed). Such an operation may take effect at any point
    /// after its call or never, and its return is treated as infinitely late.
    pub return_time: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered; for an unknown outcome, whatever the model uses to mean "unknown".
    pub output: O,
}

impl<I: fmt::Debug, O: fmt::Debug> fmt::Display for Operation<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} [{}, ", self.client, self.call_time)?;
        match self.return_time {
            Some(time) => write!(f, "{time}]")?,
            None => write!(f, "∞)")?,
        }
        write!(f, " {:?} -> {:?}", self.input, self.output)
    }
}

/// Bounds on the work of one check; when either is exceeded the answer is
/// [`CheckResult::Unknown`] rather than a search that never ends.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The most model steps to try, over all partitions of one check. Deterministic, so the
    /// simulator gets the same verdict on every replay.
    pub max_steps: u64,
    /// A wall-clock limit, for end-to-end tests. `None`: no limit.
    pub deadline: Option<Instant>,
}

impl Default for CheckOptions {
    /// Ten million steps (a few seconds in a debug build), no deadline.
    fn default() -> Self {
        CheckOptions {
            max_steps: 10_000_000,
            deadline: None,
        }
    }
}

/// The verdict on one history.
#[derive(Clone, Debug)]
pub enum CheckResult<M: Model> {
    /// Some total order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists; the counterexample says how far the search got.
    NotLinearizable(Counterexample<M>),
    /// The budget ran out first.
    Unknown(Exhausted),
}

impl<M: Model> CheckResult<M> {
    /// True only for [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// The budget ran out after `steps` model steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// Model steps tried before giving up.
    pub steps: u64,
}

/// Why a history is not linearizable, for a human: the longest linearizable prefix the search
/// found, and every operation that could be next after it but cannot be placed there.
#[derive(Clone, Debug)]
pub struct Counterexample<M: Model> {
    /// The longest prefix of a linearization found, in linearization order.
    pub prefix: Vec<Operation<M::Input, M::Output>>,
    /// The model's state after `prefix`.
    pub state: M::State,
    /// The operations that real time allows next, none of which leads to a linearization.
    pub stuck: Vec<StuckOperation<M::Input, M::Output>>,
    /// How many operations the history (partition) holds.
    pub operations: usize,
}

/// An operation that real time allows right after the prefix of a [`Counterexample`].
#[derive(Clone, Debug)]
pub struct StuckOperation<I, O> {
    /// The operation.
    pub operation: Operation<I, O>,
    /// True when the model accepts it in the prefix's final state (so it was a dead end
    /// further on); false when its output is illegal there.
    pub legal_here: bool,
}

/// How many prefix operations a report shows; earlier ones are summarized.
const REPORTED_PREFIX_OPERATIONS: usize = 20;

impl<M: Model> fmt::Display for Counterexample<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "longest linearizable prefix: {} of {} operations",
            self.prefix.len(),
            self.operations
        )?;
        let skipped = self.prefix.len().saturating_sub(REPORTED_PREFIX_OPERATIONS);
        if skipped > 0 {
            writeln!(f, "  … {skipped} earlier operations")?;
        }
        for operation in &self.prefix[skipped..] {
            writeln!(f, "  {operation}")?;
        }
        writeln!(f, "state after the prefix: {:?}", self.state)?;
        writeln!(f, "operations that could not be placed next:")?;
        for stuck in &self.stuck {
            let why = if stuck.legal_here {
                "legal here, but no linearization continues from it"
            } else {
                "illegal in this state"
            };
            writeln!(f, "  {}  ({why})", stuck.operation)?;
        }
        Ok(())
    }
}

/// Counts model steps against [`CheckOptions`]; shared by the partitions of one check.
#[derive(Debug)]
pub(crate) struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
}

/// How often (in steps) the deadline is compared with the clock.
const DEADLINE_CHECK_INTERVAL: u64 = 1024;

impl Budget {
    pub(crate) fn new(options: &CheckOptions) -> Self {
        Budget {
            steps: 0,
            max_steps: options.max_steps,
            deadline: options.deadline,
        }
    }

    /// Takes one step; false when the budget is spent.
    fn take_step(&mut self) -> bool {
        if self.steps >= self.max_steps {
            return false;
        }
        self.steps += 1;
        let check_clock = self.steps % DEADLINE_CHECK_INTERVAL == 0;
        !(check_clock
            && self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline))
    }

    pub(crate) fn exhausted(&self) -> Exhausted {
        Exhausted { steps: self.steps }
    }
}

/// Checks whether `history` is linearizable with respect to `model`.
///
/// # Panics
///
/// If an operation returns before it is called.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    options: &CheckOptions,
) -> CheckResult<M> {
    check_with_budget(model, history, &mut Budget::new(options))
}

pub(crate) fn check_with_budget<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &mut Budget,
) -> CheckResult<M> {
    match search(model, history, budget) {
        Search::Linearizable => CheckResult::Linearizable,
        Search::Exhausted => CheckResult::Unknown(budget.exhausted()),
        Search::Stuck { best_prefix } => {
            CheckResult::NotLinearizable(counterexample(model, history, &best_prefix))
        }
    }
}

enum Search {
    Linearizable,
    Exhausted,
    /// No linearization; the longest prefix found, as indexes into the history.
    Stuck {
        best_prefix: Vec<usize>,
    },
}

/// The events of a history as a doubly linked list over arrays, so that an operation's call
/// and return can be lifted out and put back (in LIFO order) in constant time.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation each event belongs to (unused for the two sentinels).
    operation: Vec<usize>,
    /// For a call event, its return event; `usize::MAX` for return events.
    return_event: Vec<usize>,
}

const HEAD: usize = 0;

impl EventList {
    fn new<I, O>(history: &[Operation<I, O>]) -> Self {
        // Sort key: time, then calls before returns (operations that touch at one instant
        // overlap: the clock cannot order them), then unknown returns at ∞ after all others.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * history.len());
        for (index, operation) in history.iter().enumerate() {
            if let Some(return_time) = operation.return_time {
                assert!(
                    operation.call_time <= return_time,
                    "operation {index} returns before it is called: {}",
                    operation.call_time
                );
            }
            events.push((operation.call_time, 0, index));
            match operation.return_time {
                Some(time) => events.push((time, 1, index)),
                None => events.push((u64::MAX, 2, index)),
            }
        }
        events.sort_unstable();

        // Event ids: 0 is the head sentinel, 1..=2n the sorted events, 2n+1 the tail sentinel.
        let count = events.len() + 2;
        let tail = count - 1;
        let mut list = EventList {
            next: (1..=count).collect(),
            prev: (0..count).map(|id| id.wrapping_sub(1)).collect(),
            operation: vec![usize::MAX; count],
            return_event: vec![usize::MAX; count],
        };
        list.next[tail] = tail;
        let mut call_event = vec![usize::MAX; history.len()];
        for (position, &(_, kind, index)) in events.iter().enumerate() {
            let id = position + 1;
            list.operation[id] = index;
            if kind == 0 {
                call_event[index] = id;
            } else {
                list.return_event[call_event[index]] = id;
            }
        }
        list
    }

    fn is_call(&self, event: usize) -> bool {
        self.return_event[event] != usize::MAX
    }

    fn is_tail(&self, event: usize) -> bool {
        event == self.next.len() - 1
    }

    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        self.prev[next] = event;
    }

    /// Removes a call event and its return event.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.return_event[call]);
    }

    /// Undoes the most recent [`EventList::lift`] still in effect, which must be of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(self.return_event[call]);
        self.relink(call);
    }
}

/// A set of small integers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(len: usize) -> Self {
        BitSet(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }

    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    fn is_subset(&self, other: &BitSet) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The operations linearized so far, those with a known outcome apart from the others, and a
/// running hash of the known ones so that a lookup does not rehash the whole set.
struct Linearized {
    /// Each operation's bit, in `known` or in `unknown`.
    slot: Vec<usize>,
    /// Whether each operation's outcome is unknown (it returns at ∞).
    is_unknown: Vec<bool>,
    /// For an unknown operation, the latest one called before it with the same effect
    /// ([`Model::same_effect`]): it is placed only once that one is, so the placed members of
    /// such a class are always its first ones and configurations stay comparable.
    previous_twin: Vec<Option<usize>>,
    known: BitSet,
    unknown: BitSet,
    /// XOR of a pseudo-random word per member of `known` (Zobrist hashing).
    known_hash: u64,
}

impl Linearized {
    fn new<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Self {
        let is_unknown: Vec<bool> = history.iter().map(|o| o.return_time.is_none()).collect();
        // In call order, as in the event list (ties by index).
        let mut unknown: Vec<usize> = (0..history.len()).filter(|&i| is_unknown[i]).collect();
        unknown.sort_by_key(|&index| (history[index].call_time, index));
        let mut previous_twin = vec![None; history.len()];
        for (position, &index) in unknown.iter().enumerate() {
            previous_twin[index] = unknown[..position]
                .iter()
                .rev()
                .find(|&&earlier| model.same_effect(&history[earlier], &history[index]))
                .copied();
        }
        let (mut known_count, mut unknown_count) = (0, 0);
        let slot = is_unknown
            .iter()
            .map(|&unknown| {
                let counter = if unknown {
                    &mut unknown_count
                } else {
                    &mut known_count
                };
                *counter += 1;
                *counter - 1
            })
            .collect();
        Linearized {
            slot,
            is_unknown,
            previous_twin,
            known: BitSet::new(known_count),
            unknown: BitSet::new(unknown_count),
            known_hash: 0,
        }
    }

    fn insert(&mut self, index: usize) {
        let slot = self.slot[index];
        if self.is_unknown[index] {
            self.unknown.insert(slot);
        } else {
            self.known.insert(slot);
            self.known_hash ^= zobrist(slot);
        }
    }

    /// Whether an unknown operation must wait for its previous twin to be placed.
    fn waits_for_twin(&self, index: usize) -> bool {
        (self.previous_twin[index]).is_some_and(|twin| !self.unknown.contains(self.slot[twin]))
    }

    fn remove(&mut self, index: usize) {
        let slot = self.slot[index];
        if self.is_unknown[index] {
            self.unknown.remove(slot);
        } else {
            self.known.remove(slot);
            self.known_hash ^= zobrist(slot);
        }
    }
}

/// A pseudo-random word per slot (SplitMix64's output function).
fn zobrist(slot: usize) -> u64 {
    let mut z = (slot as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Configurations explored to the end without finding a linearization.
///
/// A configuration is (linearized known operations, linearized unknown ones, state). Entering
/// one that an explored configuration *covers* is pointless: same known set, same state, and a
/// subset of its unknown operations, so everything still open to it was open there too (an
/// unknown operation may always be left out). Plain equality would let each subset of the
/// unknown operations that never took effect be searched separately: 2^k configurations.
/// Configurations are recorded when abandoned, not when entered, so that only finished ones
/// cover others (one on the current path may still succeed).
struct Explored<S> {
    table: HashMap<u64, Vec<ExploredEntry<S>>>,
}

struct ExploredEntry<S> {
    known: BitSet,
    state: S,
    unknown: Vec<BitSet>,
}

impl<S: Hash + Eq> Explored<S> {
    fn hash(linearized: &Linearized, state: &S) -> u64 {
        let mut hasher = DefaultHasher::new();
        linearized.known_hash.hash(&mut hasher);
        state.hash(&mut hasher);
        hasher.finish()
    }

    fn covers(&self, hash: u64, linearized: &Linearized, state: &S) -> bool {
        self.table.get(&hash).is_some_and(|entries| {
            entries.iter().any(|entry| {
                entry.known == linearized.known
                    && entry.state == *state
                    && (entry.unknown.iter()).any(|unknown| unknown.is_subset(&linearized.unknown))
            })
        })
    }

    fn insert(&mut self, hash: u64, linearized: &Linearized, state: S) {
        let entries = self.table.entry(hash).or_default();
        let same = entries
            .iter_mut()
            .find(|entry| entry.known == linearized.known && entry.state == state);
        match same {
            Some(entry) => entry.unknown.push(linearized.unknown.clone()),
            None => entries.push(ExploredEntry {
                known: linearized.known.clone(),
                state,
                unknown: vec![linearized.unknown.clone()],
            }),
        }
    }
}

/// The Wing–Gong–Lowe depth-first search, skipping configurations already explored (Lowe
/// 2017; Porcupine).
///
/// Among the candidates, operations with a known outcome are tried first and unknown ones
/// only after: leaving an unknown operation out is then explored first, and the
/// configurations that include it are mostly covered by those (see [`Explored`]).
fn search<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &mut Budget,
) -> Search {
    let mut events = EventList::new(history);
    let mut linearized = Linearized::new(model, history);
    let mut state = model.initial_state();
    // The linearization so far: each lifted call event and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut explored: Explored<M::State> = Explored {
        table: HashMap::new(),
    };
    let mut best_prefix: Vec<usize> = Vec::new();

    let mut event = events.next[HEAD];
    let mut unknown_pass = false;
    loop {
        if events.is_tail(event) {
            return Search::Linearizable;
        }
        let index = events.operation[event];
        if !events.is_call(event) {
            if linearized.is_unknown[index] {
                // Unknown returns sort after every known one: all known operations are placed.
                return Search::Linearizable;
            }
            if !unknown_pass {
                unknown_pass = true;
                event = events.next[HEAD];
                continue;
            }
            // This operation has returned but cannot be linearized: undo the latest choice.
            if stack.len() > best_prefix.len() {
                best_prefix = (stack.iter())
                    .map(|&(call, _)| events.operation[call])
                    .collect();
            }
            let Some((call, previous_state)) = stack.pop() else {
                return Search::Stuck { best_prefix };
            };
            let hash = Explored::hash(&linearized, &state);
            explored.insert(
                hash,
                &linearized,
                std::mem::replace(&mut state, previous_state),
            );
            let undone = events.operation[call];
            linearized.remove(undone);
            events.unlift(call);
            unknown_pass = linearized.is_unknown[undone];
            event = events.next[call];
            continue;
        }
        if linearized.is_unknown[index] != unknown_pass
            || (unknown_pass && linearized.waits_for_twin(index))
        {
            event = events.next[event];
            continue;
        }

        if !budget.take_step() {
            return Search::Exhausted;
        }
        let operation = &history[index];
        if let Some(next_state) = model.step(&state, &operation.input, &operation.output) {
            if unknown_pass
                && (next_state == state
                    || erases_previous(model, &linearized, &stack, operation, &next_state, &events))
            {
                event = events.next[event];
                continue;
            }
            linearized.insert(index);
            let hash = Explored::hash(&linearized, &next_state);
            if !explored.covers(hash, &linearized, &next_state) {
                stack.push((event, std::mem::replace(&mut state, next_state)));
                events.lift(event);
                event = events.next[HEAD];
                unknown_pass = false;
                continue;
            }
            linearized.remove(index);
        }
        event = events.next[event];
    }
}

/// Whether placing unknown `operation` next, reaching `next_state`, is pointless because the
/// latest choice was also an unknown operation and leaving that one out reaches the same
/// state: the sibling configuration without it has one unknown operation fewer still open,
/// so it can do everything this one can, and the search tries it from the parent anyway.
/// Without this, each run of unknown operations that overwrite each other (puts that never
/// took effect, say) would be searched in every order and every subset.
fn erases_previous<M: Model>(
    model: &M,
    linearized: &Linearized,
    stack: &[(usize, M::State)],
    operation: &Operation<M::Input, M::Output>,
    next_state: &M::State,
    events: &EventList,
) -> bool {
    let Some((previous_call, before_previous)) = stack.last() else {
        return false;
    };
    linearized.is_unknown[events.operation[*previous_call]]
        && model
            .step(before_previous, &operation.input, &operation.output)
            .as_ref()
            == Some(next_state)
}

/// Replays the best prefix and lists the operations real time allows after it.
fn counterexample<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    best_prefix: &[usize],
) -> Counterexample<M> {
    let mut state = model.initial_state();
    let mut placed = vec![false; history.len()];
    for &index in best_prefix {
        let operation = &history[index];
        state = model
            .step(&state, &operation.input, &operation.output)
            .expect("the search only records legal prefixes");
        placed[index] = true;
    }
    let remaining = || (0..history.len()).filter(|&index| !placed[index]);
    // Anything called by the earliest pending known return may go next.
    let first_return = remaining()
        .filter_map(|index| history[index].return_time)
        .min()
        .unwrap_or(u64::MAX);
    let mut stuck: Vec<StuckOperation<M::Input, M::Output>> = remaining()
        .filter(|&index| history[index].call_time <= first_return)
        .map(|index| {
            let operation = &history[index];
            StuckOperation {
                legal_here: model
                    .step(&state, &operation.input, &operation.output)
                    .is_some(),
                operation: operation.clone(),
            }
        })
        .collect();
    stuck.sort_by_key(|stuck| stuck.operation.call_time);
    Counterexample {
        prefix: best_prefix.iter().map(|&i| history[i].clone()).collect(),
        state,
        stuck,
        operations: history.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of small integers: `Some(v)` writes v, `None` reads.
    struct Register;

    impl Model for Register {
        type State = u8;
        type Input = Option<u8>;
        type Output = u8;

        fn initial_state(&self) -> u8 {
            0
        }

        fn step(&self, state: &u8, input: &Option<u8>, output: &u8) -> Option<u8> {
            match input {
                Some(value) => Some(*value),
                None => (output == state).then_some(*state),
            }
        }
    }

    fn op(
        call_time: u64,
        return_time: u64,
        input: Option<u8>,
        output: u8,
    ) -> Operation<Option<u8>, u8> {
        Operation {
            client: 0,
            call_time,
            return_time: Some(return_time),
            input,
            output,
        }
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        let history = [op(0, 3, Some(1), 0), op(1, 2, None, 0)];
        let mut events = EventList::new(&history);
        let before = (events.next.clone(), events.prev.clone());
        let first_call = events.next[HEAD];
        events.lift(first_call);
        let second_call = events.next[HEAD];
        events.lift(second_call);
        assert!(events.is_tail(events.next[HEAD]));
        events.unlift(second_call);
        events.unlift(first_call);
        assert_eq!((events.next.clone(), events.prev.clone()), before);
    }

    #[test]
    fn a_read_inside_a_write_may_see_either_value() {
        for seen in [0, 1] {
            let history = [op(0, 10, Some(1), 0), op(2, 5, None, seen)];
            assert!(check(&Register, &history, &CheckOptions::default()).is_linearizable());
        }
    }

    #[test]
    fn a_read_after_a_write_must_see_it() {
        let history = [op(0, 1, Some(1), 0), op(2, 3, None, 0)];
        let CheckResult::NotLinearizable(counterexample) =
            check(&Register, &history, &CheckOptions::default())
        else {
            panic!("expected a violation");
        };
        assert_eq!(counterexample.prefix, vec![history[0].clone()]);
        assert_eq!(counterexample.state, 1);
        assert_eq!(counterexample.stuck.len(), 1);
        assert!(!counterexample.stuck[0].legal_here);
    }

    #[test]
    fn operations_touching_at_one_instant_overlap() {
        let history = [op(0, 5, Some(1), 0), op(5, 6, None, 0)];
        assert!(check(&Register, &history, &CheckOptions::default()).is_linearizable());
    }

    #[test]
    fn a_spent_budget_gives_unknown() {
        let history = [op(0, 1, Some(1), 0), op(2, 3, None, 1)];
        let options = CheckOptions {
            max_steps: 1,
            deadline: None,
        };
        assert!(matches!(
            check(&Register, &history, &options),
            CheckResult::Unknown(Exhausted { steps: 1 })
        ));
    }
}
