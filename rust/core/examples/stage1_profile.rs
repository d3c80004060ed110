//! Profiling aid: the structural index alone over a file (`stage1_profile FILE`), or with
//! `WALK=1` the index and the walk's grammar check of the whole body, for callgrind.
use eventtally_core::scan::{index_blocks, IndexState};

const WINDOW: usize = 64 * 1024;

fn main() {
    let path = std::env::args().nth(1).expect("usage: stage1_profile FILE");
    let data = std::fs::read(&path).expect("readable file");
    let src = eventtally_core::scan::to_str(&data).expect("UTF-8");
    let buf = src.as_bytes();
    if std::env::var_os("WALK").is_some() {
        let end = eventtally_core::batch::index_and_validate(buf, index_blocks);
        println!("valid up to {end:?} of {}", buf.len());
        return;
    }
    let mut out = vec![0u32; WINDOW + 64];
    let mut st = IndexState::default();
    let mut total = 0usize;
    let mut last = 0u32;
    let mut at = 0;
    while at < buf.len() {
        let to = (at + WINDOW).min(buf.len());
        let mut n = 0;
        index_blocks(buf, at, to, &mut st, &mut out, &mut n);
        total += n;
        last = last.wrapping_add(out[n.saturating_sub(1)]);
        at = to;
    }
    println!("{total} positions, {last}");
}
