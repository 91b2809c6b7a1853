//! ferry's predictor: access sequences in, prefetch decisions out.
//!
//! Reads are split into streams, one per reader and directory (a sensor's
//! folder, an episode), because interleaved multi-sensor reads defeat one
//! global history. Within a stream each move to another file is a [`Step`]:
//! how many files on in name order (`+1` for the next frame, `+6` for the
//! next keyframe of a 12 Hz camera) or [`Step::Jump`] when the reader went
//! somewhere no delta describes (a new clip, another scene). A [`Predictor`]
//! sees a stream's recent steps and says which steps come next; the
//! [`Prefetcher`] turns those into pages to fetch, adds readahead inside the
//! file being read, and follows an announced read order when a reader gave
//! one. [`ledger::Ledger`] accounts for what was fetched ahead (budget,
//! staleness, precision, coverage) for the node's and the mount's
//! prefetch alike. Nothing here reads a clock or does I/O: callers pass
//! times in.

pub mod catalog;
pub mod error;
pub mod eval;
pub mod gen;
pub mod ledger;
pub mod models;
pub mod online;
pub mod trace;

#[cfg(feature = "torch")]
pub mod lstm;

use std::collections::{HashMap, VecDeque};

pub use catalog::{Catalog, FileId};

/// Largest file delta a stream step records; farther moves are jumps.
pub const MAX_DELTA: i64 = 16;
/// Steps of history a stream keeps.
pub const HISTORY: usize = 32;

/// One move of a stream from one file to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// To the file `d` places on in the directory (`d != 0`, `|d| <= MAX_DELTA`).
    Delta(i64),
    /// Anywhere else, or the start of the stream.
    Jump,
}

impl Step {
    /// Number of step classes: every delta in `-MAX_DELTA..=MAX_DELTA` plus jump.
    pub const CLASSES: usize = (2 * MAX_DELTA + 2) as usize;

    /// Class index, for models that classify (jump is 0).
    pub fn class(self) -> usize {
        match self {
            Step::Jump => 0,
            Step::Delta(d) => (d + MAX_DELTA + 1) as usize,
        }
    }

    pub fn from_class(c: usize) -> Step {
        let d = c as i64 - MAX_DELTA - 1;
        if c == 0 || d == 0 || d.abs() > MAX_DELTA {
            Step::Jump
        } else {
            Step::Delta(d)
        }
    }

    fn between(from: i64, to: i64, first_page: u32) -> Step {
        let d = to - from;
        if d == 0 || d.abs() > MAX_DELTA || first_page != 0 {
            Step::Jump
        } else {
            Step::Delta(d)
        }
    }
}

/// A stream's recent history, what every predictor decides from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// Recent steps, oldest first, newest last (at most [`HISTORY`]).
    pub steps: VecDeque<Step>,
    /// Steps since the last jump (or since the stream started).
    pub since_jump: u32,
}

impl Context {
    /// A fresh stream: its first read counts as a jump.
    pub fn start() -> Context {
        let mut c = Context::default();
        c.push(Step::Jump);
        c
    }

    pub fn push(&mut self, s: Step) {
        if self.steps.len() == HISTORY {
            self.steps.pop_front();
        }
        self.steps.push_back(s);
        self.since_jump = if s == Step::Jump { 0 } else { self.since_jump.saturating_add(1) };
    }

    /// The `n`-th newest step (0 = newest), if the stream has one.
    pub fn back(&self, n: usize) -> Option<Step> {
        self.steps.len().checked_sub(n + 1).map(|i| self.steps[i])
    }
}

/// Learns how streams move and says where they go next.
pub trait Predictor: Send {
    /// Short name shown in reports (`stride`, `tree`, ...).
    fn name(&self) -> &str;

    /// Whether the prefetcher should also read ahead inside the file being
    /// read. Every predictor but `none` does.
    fn reads_ahead(&self) -> bool {
        true
    }

    /// A stream made step `next` after history `ctx`. Predictors that learn
    /// online update here.
    fn observe(&mut self, _ctx: &Context, _next: Step) {}

    /// The next steps expected after `ctx`, most immediate first, at most
    /// `depth`; fewer (or none) when unsure. A jump ends the list.
    fn predict(&self, ctx: &Context, depth: usize) -> Vec<Step>;
}

/// Repeats a one-step rule `depth` times, feeding each guess back in, and
/// stops at the first jump or when the rule has no answer.
pub fn roll(ctx: &Context, depth: usize, mut next: impl FnMut(&Context) -> Option<Step>) -> Vec<Step> {
    let mut ctx = ctx.clone();
    let mut out = Vec::with_capacity(depth);
    while out.len() < depth {
        match next(&ctx) {
            Some(Step::Delta(d)) => {
                out.push(Step::Delta(d));
                ctx.push(Step::Delta(d));
            }
            _ => break,
        }
    }
    out
}

/// Pages `[first, end)` of a file to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub file: FileId,
    pub first: u32,
    pub end: u32,
}

/// How far the prefetcher looks ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchConfig {
    /// Files ahead per stream.
    pub depth: usize,
    /// Pages ahead inside the file being read sequentially.
    pub in_file_pages: u32,
    /// Most pages fetched of a predicted file (its beginning).
    pub file_pages: u32,
    /// Files ahead in an announced order.
    pub announced_depth: usize,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig { depth: 4, in_file_pages: 8, file_pages: 4, announced_depth: 16 }
    }
}

#[derive(Debug)]
struct Stream {
    last: FileId,
    /// End of the pages read so far in `last`.
    end_page: u32,
    ctx: Context,
}

/// Readers announced under this name share the order: a training job's
/// sampler announces once, its worker processes do the reading.
pub const ANY_READER: &str = "*";

/// `end` of an announced whole file: its first `file_pages` pages.
const WHOLE_FILE: u32 = u32::MAX;

/// How far past the cursor a read is looked for in an announced order.
const ANNOUNCE_WINDOW: usize = 4096;

#[derive(Debug, Default)]
struct Announced {
    order: Vec<Fetch>,
    cursor: usize,
}

/// Streams, announced orders and one predictor: demand reads in, pages to
/// fetch out. The caller skips pages it already holds and keeps its own
/// byte budget.
pub struct Prefetcher {
    predictor: Box<dyn Predictor>,
    config: PrefetchConfig,
    streams: HashMap<(String, u32), Stream>,
    announced: HashMap<String, Announced>,
    /// Readers that read by another reader's announced order.
    follows: HashMap<String, String>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher")
            .field("predictor", &self.predictor.name())
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Prefetcher {
    pub fn new(predictor: Box<dyn Predictor>, config: PrefetchConfig) -> Prefetcher {
        Prefetcher { predictor, config, streams: HashMap::new(), announced: HashMap::new(), follows: HashMap::new() }
    }

    pub fn predictor_name(&self) -> &str {
        self.predictor.name()
    }

    /// Readers being tracked (streams), for metrics.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// A reader will read `order` next, in this order (a sampler's list).
    pub fn announce(&mut self, reader: &str, order: Vec<FileId>) {
        let order = order.into_iter().map(|file| Fetch { file, first: 0, end: WHOLE_FILE }).collect();
        self.announce_ranges(reader, order);
    }

    /// A reader will read these page ranges next, in this order (samples
    /// inside large record files). [`ANY_READER`] announces for every reader
    /// without an order of its own.
    pub fn announce_ranges(&mut self, reader: &str, order: Vec<Fetch>) {
        self.announced.insert(reader.to_string(), Announced { order, cursor: 0 });
    }

    /// `reader` reads by the order `announcer` announced (a DataLoader
    /// worker by its rank's order); `None`: by its own, or [`ANY_READER`]'s.
    pub fn follow(&mut self, reader: &str, announcer: Option<&str>) {
        match announcer {
            Some(a) => {
                self.follows.insert(reader.to_string(), a.to_string());
            }
            None => {
                self.follows.remove(reader);
            }
        }
    }

    /// The next entries of `reader`'s announced order (what to fetch right
    /// after an announcement, before the first read).
    pub fn upcoming(&self, catalog: &Catalog, reader: &str, out: &mut Vec<Fetch>) {
        if let Some(a) = self.announced.get(reader) {
            Self::upcoming_of(a, &self.config, catalog, out);
        }
    }

    fn upcoming_of(a: &Announced, config: &PrefetchConfig, catalog: &Catalog, out: &mut Vec<Fetch>) {
        for next in a.order[a.cursor..].iter().take(config.announced_depth) {
            let pages = catalog.file(next.file).pages;
            let end = match next.end {
                WHOLE_FILE => pages.min(config.file_pages),
                e => e.min(pages),
            };
            out.push(Fetch { file: next.file, first: next.first.min(end), end });
        }
    }

    /// A demand read of bytes `[offset, offset + len)` of `file` by `reader`;
    /// appends to `out` the pages worth fetching now, most urgent first.
    pub fn access(
        &mut self,
        catalog: &Catalog,
        reader: &str,
        file: FileId,
        offset: u64,
        len: u64,
        out: &mut Vec<Fetch>,
    ) {
        let f = catalog.file(file);
        let (first, end) = catalog.pages_of(file, offset, len);
        let key = (reader.to_string(), f.dir);
        let reads_ahead = self.predictor.reads_ahead();
        let mut new_file = true;
        let mut sequential = first == 0;
        match self.streams.get_mut(&key) {
            Some(s) if s.last == file => {
                new_file = false;
                sequential = first <= s.end_page;
                s.end_page = s.end_page.max(end);
            }
            Some(s) => {
                let step = Step::between(catalog.file(s.last).index as i64, f.index as i64, first);
                self.predictor.observe(&s.ctx, step);
                s.ctx.push(step);
                s.last = file;
                s.end_page = end;
            }
            None => {
                self.streams.insert(key.clone(), Stream { last: file, end_page: end, ctx: Context::start() });
            }
        }
        if reads_ahead && sequential && end < f.pages {
            out.push(Fetch { file, first: end, end: (end + self.config.in_file_pages).min(f.pages) });
        }
        let announcer = match self.follows.get(reader) {
            Some(a) if self.announced.contains_key(a) => a.clone(),
            _ if self.announced.contains_key(reader) => reader.to_string(),
            _ => ANY_READER.to_string(),
        };
        if let Some(a) = self.announced.get_mut(&announcer).filter(|_| reads_ahead) {
            let upto = (a.cursor + ANNOUNCE_WINDOW).min(a.order.len());
            let hit = |x: &Fetch| x.file == file && (x.end == WHOLE_FILE || (x.first < end && first < x.end));
            let matched = a.order[a.cursor..upto].iter().position(hit);
            if let Some(pos) = matched {
                a.cursor += pos + 1;
            }
            if new_file || matched.is_some() {
                Self::upcoming_of(a, &self.config, catalog, out);
                return;
            }
        }
        if !new_file {
            return;
        }
        let Some(s) = self.streams.get(&key) else { return };
        let mut at = file;
        for step in self.predictor.predict(&s.ctx, self.config.depth) {
            let Step::Delta(d) = step else { break };
            let Some(next) = catalog.step(at, d) else { break };
            out.push(Fetch { file: next, first: 0, end: catalog.file(next).pages.min(self.config.file_pages) });
            at = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_trip() {
        for d in -MAX_DELTA..=MAX_DELTA {
            let s = if d == 0 { Step::Jump } else { Step::Delta(d) };
            assert_eq!(Step::from_class(s.class()), s);
        }
        assert!(Step::CLASSES > Step::Delta(MAX_DELTA).class());
        assert_eq!(Step::between(3, 40, 0), Step::Jump);
        assert_eq!(Step::between(3, 4, 2), Step::Jump, "entering a file mid-way is not a frame step");
        assert_eq!(Step::between(4, 3, 0), Step::Delta(-1));
    }

    #[test]
    fn context_counts_since_jump() {
        let mut c = Context::start();
        assert_eq!(c.since_jump, 0);
        c.push(Step::Delta(1));
        c.push(Step::Delta(2));
        assert_eq!(
            (c.since_jump, c.back(0), c.back(1), c.back(2)),
            (2, Some(Step::Delta(2)), Some(Step::Delta(1)), Some(Step::Jump))
        );
        for _ in 0..100 {
            c.push(Step::Delta(1));
        }
        assert_eq!(c.steps.len(), HISTORY);
    }
}
