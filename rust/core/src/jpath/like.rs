//! `LIKE` / `ILIKE` patterns: compiled once, matched without allocating on ASCII text.

// The jpath modules are one language split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LikeChar {
    Lit(char),
    /// `_`
    Any,
}

/// The pattern between two `%` wildcards (or an end of the pattern).
#[derive(Debug, Clone)]
pub(super) struct LikeSegment {
    pub(super) chars: Vec<LikeChar>,
    /// The segment's text and a substring searcher when it has no `_`.
    pub(super) literal: Option<(String, Finder<'static>)>,
}

impl LikeSegment {
    pub(super) fn new(chars: Vec<LikeChar>) -> Self {
        let literal = chars
            .iter()
            .map(|c| match c {
                LikeChar::Lit(c) => Some(*c),
                LikeChar::Any => None,
            })
            .collect::<Option<String>>()
            .map(|s| {
                let finder = Finder::new(s.as_bytes()).into_owned();
                (s, finder)
            });
        LikeSegment { chars, literal }
    }

    /// If the segment matches at the start of `text`, the byte length it covers.
    /// `fold`: `text` is ASCII and compared case-insensitively (the pattern is already lowercase).
    pub(super) fn match_prefix(&self, text: &str, fold: bool) -> Option<usize> {
        if let Some((lit, _)) = &self.literal {
            let head = text.as_bytes().get(..lit.len())?;
            let ok = if fold {
                head.eq_ignore_ascii_case(lit.as_bytes())
            } else {
                head == lit.as_bytes()
            };
            return ok.then_some(lit.len());
        }
        let mut end = 0;
        let mut chars = text.chars();
        for pc in &self.chars {
            let c = chars.next()?;
            if let LikeChar::Lit(p) = pc {
                let c = if fold { c.to_ascii_lowercase() } else { c };
                if c != *p {
                    return None;
                }
            }
            end += c.len_utf8();
        }
        Some(end)
    }

    /// Leftmost match in `hay`: (start, end) byte offsets.
    pub(super) fn find(&self, hay: &str, fold: bool) -> Option<(usize, usize)> {
        if let (Some((lit, finder)), false) = (&self.literal, fold) {
            let start = finder.find(hay.as_bytes())?;
            return Some((start, start + lit.len()));
        }
        if self.chars.is_empty() {
            return Some((0, 0));
        }
        hay.char_indices()
            .find_map(|(i, _)| self.match_prefix(&hay[i..], fold).map(|len| (i, i + len)))
    }
}

/// A compiled `LIKE`/`ILIKE` pattern: segments separated by `%`.
#[derive(Debug, Clone)]
pub(super) struct LikePattern {
    /// Never empty; one segment means the pattern has no `%`.
    pub(super) segments: Vec<LikeSegment>,
    /// `ILIKE`: the segments hold lowercase text.
    pub(super) fold: bool,
}

impl LikePattern {
    pub(super) fn new(pattern: &str, fold: bool) -> Self {
        let lowered;
        let pattern = if fold {
            lowered = pattern.to_lowercase();
            lowered.as_str()
        } else {
            pattern
        };
        let mut segments = Vec::new();
        let mut current = Vec::new();
        for c in pattern.chars() {
            match c {
                '%' => {
                    let seg = std::mem::take(&mut current);
                    // Empty middle segments (`%%`) match anywhere; keep only the first one.
                    if segments.is_empty() || !seg.is_empty() {
                        segments.push(LikeSegment::new(seg));
                    }
                }
                '_' => current.push(LikeChar::Any),
                c => current.push(LikeChar::Lit(c)),
            }
        }
        segments.push(LikeSegment::new(current));
        LikePattern { segments, fold }
    }

    pub(super) fn matches(&self, text: &str) -> bool {
        if self.fold && !text.is_ascii() {
            return self.match_text(&text.to_lowercase(), false);
        }
        self.match_text(text, self.fold)
    }

    pub(super) fn match_text(&self, text: &str, fold: bool) -> bool {
        let (first, rest) = self
            .segments
            .split_first()
            .expect("a LIKE pattern has at least one segment");
        let Some(mut pos) = first.match_prefix(text, fold) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return pos == text.len();
        };
        // The last segment is anchored at the end and must not overlap what is already consumed.
        let tail = &text[pos..];
        let need = last.chars.len();
        let last_start = if need == 0 {
            tail.len()
        } else {
            match tail.char_indices().rev().nth(need - 1) {
                Some((i, _)) => i,
                None => return false,
            }
        };
        if last.match_prefix(&tail[last_start..], fold) != Some(tail.len() - last_start) {
            return false;
        }
        let end = pos + last_start;
        // Leftmost-first placement of the middle segments is optimal: each has a fixed length in
        // characters, so an earlier match never leaves less room for the rest.
        for seg in middle {
            match seg.find(&text[pos..end], fold) {
                Some((_, seg_end)) => pos += seg_end,
                None => return false,
            }
        }
        true
    }
}
