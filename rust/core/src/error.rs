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
    /// Places the error under a configuration or request field: the field of a config, query or
    /// path-syntax error becomes `prefix.field` (`prefix` alone when the field is not known yet);
    /// other errors are returned as they are. The one helper every layer uses to say where in a
    /// definition or request an error belongs (`filters[1]`, `aggregations[0].subFilter`, `[2]`).
    #[must_use]
    pub fn under(self, prefix: &str) -> Self {
        let join = |field: String| {
            if field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{field}")
            }
        };
        match self {
            Error::Config { field, reason } => Error::Config {
                field: join(field),
                reason,
            },
            Error::Query { field, reason } => Error::Query {
                field: join(field),
                reason,
            },
            Error::PathSyntax {
                field,
                expression,
                position,
                reason,
            } => Error::PathSyntax {
                field: join(field),
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
