//! The one error type of the core. Every variant carries structure (offsets, field names,
//! expressions) so the binding layer can map it to a typed Python exception without parsing text.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// The batch is not valid JSON (or not valid UTF-8); `offset` is a byte offset into the batch.
    #[error("malformed JSON at byte {offset}: {reason}")]
    Json { offset: usize, reason: String },
    /// Valid JSON that does not match the ingest's schema ("Incorrect event format").
    #[error("incorrect event format at byte {offset}: {reason}")]
    Format { offset: usize, reason: String },
    /// A `JPath` that does not compile; `position` is a character offset into `expression`.
    /// `field` names the configuration field it came from (empty when not known yet).
    #[error(
        "{}JPath syntax error at position {position} in {expression:?}: {reason}",
        field_prefix(field)
    )]
    PathSyntax {
        field: String,
        expression: String,
        position: usize,
        reason: String,
    },
    /// An invalid ingest or filter definition; `field` is a path such as `aggregations[1].id`.
    #[error("invalid {field}: {reason}")]
    Config { field: String, reason: String },
    /// An invalid Metrics API query; `field` is the request field at fault.
    #[error("invalid query field {field}: {reason}")]
    Query { field: String, reason: String },
    /// A filter, aggregation or ingest id that does not exist.
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },
    /// A snapshot that is corrupt, truncated, of an unknown version, or incompatible.
    #[error("snapshot rejected: {reason}")]
    Snapshot { reason: String },
    /// A configured resource limit was reached.
    #[error("limit exceeded: {reason}")]
    Limit { reason: String },
    /// A file could not be read or written.
    #[error("I/O error on {path}: {reason}")]
    Io { path: String, reason: String },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("invalid {field}: ")
    }
}

impl Error {
    /// Attaches the configuration field a path-syntax or config error belongs to.
    #[must_use]
    pub fn in_field(self, name: &str) -> Self {
        match self {
            Error::PathSyntax {
                expression,
                position,
                reason,
                ..
            } => Error::PathSyntax {
                field: name.to_owned(),
                expression,
                position,
                reason,
            },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Box<Error>> for Error {
    fn from(boxed: Box<Error>) -> Self {
        *boxed
    }
}
