//! eventtally-core: turns raw JSON event batches into time-bucketed aggregates.
//!
//! Pure Rust, no Python. One module per concept: `batch` scans batches and extracts only the
//! paths some filter reads; `jpath` compiles conditions; `time` parses timestamps and truncates
//! them to buckets; `sketch` holds the mergeable distinct-count and quantile sketches and
//! `cells` the columns that store them, small cells inline; `config`
//! validates definitions; `state` keeps the columnar aggregates; `engine` ties them together;
//! `shared` is the engine as threads share it (locks, the prepare-again rule, definition
//! edits, merges); `query` answers Metrics API requests (`fanout` spreads a multi request's queries over the cores); `response` streams their answer text
//! and `wire` builds them as JSON values; `snapshot`
//! persists and merges state (both it and `sketch` encode with `codec`); `file` reads archive files in bounded memory and `parallel`
//! reads many of them on every core; `retention` compacts old buckets into coarser tiers; `message_ids` reads each
//! event's `messageId` with the batch grammar, for deduplication; `scan` holds the vectorised
//! byte searches the batch scanner runs on (the crate's only `unsafe` code); `checksum` is the
//! write-ahead log's CRC-32.

pub mod batch;
pub mod cells;
pub mod checksum;
pub mod codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod fanout;
pub mod file;
pub mod jpath;
pub mod message_ids;
pub mod parallel;
pub mod path;
pub mod query;
pub mod response;
pub mod retention;
pub mod scan;
pub mod shared;
pub mod sketch;
pub mod snapshot;
pub mod state;
#[cfg(test)]
mod test_rng;
pub mod time;
pub mod value;
pub mod wire;

pub use error::{Error, Result};
