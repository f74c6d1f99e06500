//! Key-value histories as JSON lines, one [`KvOperation`] per line, so that a failing test can
//! leave its history under `target/` and a later run can check it again. The format is in the
//! crate documentation.
//!
//! The file has its own record types, so the format stays readable (values as strings) and
//! stable when the API types change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kv::{KvInput, KvOperation, KvOutput};

/// A line of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    client: u64,
    key: Bytes,
    call_time: u64,
    #[serde(default)]
    return_time: Option<u64>,
    input: InputLine,
    output: OutputLine,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum InputLine {
    Put {
        value: Bytes,
    },
    Delete,
    Cas {
        expected: Option<u64>,
        new: Option<Bytes>,
    },
    Get,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OutputLine {
    Written {
        version: u64,
    },
    CasMismatch,
    /// `null` when the key was absent.
    Read(Option<Found>),
    Unknown,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Found {
    value: Bytes,
    version: u64,
}

/// Bytes as a JSON string when they are UTF-8, else as an array of numbers.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Bytes {
    Text(String),
    Raw(Vec<u8>),
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Bytes::Text(text.to_owned()),
            Err(_) => Bytes::Raw(bytes.to_vec()),
        }
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        match bytes {
            Bytes::Text(text) => text.into_bytes(),
            Bytes::Raw(raw) => raw,
        }
    }
}

impl From<&KvOperation> for Line {
    fn from(operation: &KvOperation) -> Self {
        Line {
            client: operation.client,
            key: operation.key.as_slice().into(),
            call_time: operation.call_time,
            return_time: operation.return_time,
            input: match &operation.input {
                KvInput::Put { value } => InputLine::Put {
                    value: value.as_slice().into(),
                },
                KvInput::Delete => InputLine::Delete,
                KvInput::Cas { expected, new } => InputLine::Cas {
                    expected: *expected,
                    new: new.as_deref().map(Bytes::from),
                },
                KvInput::Get => InputLine::Get,
            },
            output: match &operation.output {
                KvOutput::Written { version } => OutputLine::Written { version: *version },
                KvOutput::CasMismatch => OutputLine::CasMismatch,
                KvOutput::Read(found) => {
                    OutputLine::Read(found.as_ref().map(|(value, version)| Found {
                        value: value.as_slice().into(),
                        version: *version,
                    }))
                }
                KvOutput::Unknown => OutputLine::Unknown,
            },
        }
    }
}

impl From<Line> for KvOperation {
    fn from(line: Line) -> Self {
        KvOperation {
            client: line.client,
            key: line.key.into(),
            call_time: line.call_time,
            return_time: line.return_time,
            input: match line.input {
                InputLine::Put { value } => KvInput::Put {
                    value: value.into(),
                },
                InputLine::Delete => KvInput::Delete,
                InputLine::Cas { expected, new } => KvInput::Cas {
                    expected,
                    new: new.map(Vec::from),
                },
                InputLine::Get => KvInput::Get,
            },
            output: match line.output {
                OutputLine::Written { version } => KvOutput::Written { version },
                OutputLine::CasMismatch => KvOutput::CasMismatch,
                OutputLine::Read(found) => {
                    KvOutput::Read(found.map(|found| (found.value.into(), found.version)))
                }
                OutputLine::Unknown => KvOutput::Unknown,
            },
        }
    }
}

/// One operation as one JSON line, without the newline.
pub fn to_json_line(operation: &KvOperation) -> String {
    serde_json::to_string(&Line::from(operation)).expect("a history line always serializes")
}

/// A whole history as JSON lines, each ending in a newline.
pub fn history_to_json_lines(history: &[KvOperation]) -> String {
    let mut text = String::new();
    for operation in history {
        text.push_str(&to_json_line(operation));
        text.push('\n');
    }
    text
}

/// Parses JSON lines back into a history; blank lines are skipped.
pub fn history_from_json_lines(text: &str) -> Result<Vec<KvOperation>, HistoryFileError> {
    let mut history = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|error| HistoryFileError {
            line: index + 1,
            message: error.to_string(),
        })?;
        let operation = KvOperation::from(parsed);
        let known_output = operation.output != KvOutput::Unknown;
        if known_output && operation.return_time.is_none() {
            return Err(HistoryFileError {
                line: index + 1,
                message: "a known output needs a return_time".to_owned(),
            });
        }
        if operation
            .return_time
            .is_some_and(|return_time| return_time < operation.call_time)
        {
            return Err(HistoryFileError {
                line: index + 1,
                message: "return_time is before call_time".to_owned(),
            });
        }
        history.push(operation);
    }
    Ok(history)
}

/// A line of a history file that does not describe a valid operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFileError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for HistoryFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for HistoryFileError {}
