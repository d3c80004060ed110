//! Parsed `JPath` *paths* (no operators): the unit the batch scanner extracts.
//!
//! A path is a root (`@` current event or flattened element, `$` root event) followed by
//! member-name and array-index segments. Paths are plain data: compiling them into scanner tries
//! and evaluator slots happens elsewhere.

use std::fmt;

/// Which object a path starts from (spec 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Root {
    /// `@`: the event, or the array element when the filter flattens an array.
    Current,
    /// `$`: always the root event.
    Document,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// An object member, by its (unescaped) name.
    Key(String),
    /// An array element, zero-based.
    Index(usize),
}

/// A `JPath` path such as `@.context.device['type']` or `$.items[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    pub root: Root,
    pub segments: Vec<Segment>,
}

impl Path {
    #[must_use]
    pub fn new(root: Root, segments: Vec<Segment>) -> Self {
        Self { root, segments }
    }

    /// The path without its last segment, or `None` for a bare root.
    #[must_use]
    pub fn parent(&self) -> Option<Path> {
        if self.segments.is_empty() {
            return None;
        }
        Some(Path::new(
            self.root,
            self.segments[..self.segments.len() - 1].to_vec(),
        ))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.root {
            Root::Current => "@",
            Root::Document => "$",
        })?;
        for seg in &self.segments {
            match seg {
                Segment::Key(k)
                    if !k.is_empty()
                        && k.chars().all(|c| c.is_alphanumeric() || c == '_')
                        && !k.starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    write!(f, ".{k}")?;
                }
                Segment::Key(k) => {
                    write!(f, "['{}']", k.replace('\\', "\\\\").replace('\'', "\\'"))?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}
