//! The predictors: baselines (none, sequential readahead, stride, Markov)
//! and the learned decision tree (linfa); the LSTM (tch) is in `lstm` behind
//! the `torch` feature. Saving, loading and the training samples they share.

use std::collections::HashMap;
use std::path::Path;

use linfa::prelude::*;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::trace::{Event, Trace};
use crate::{roll, Context, Predictor, Step};

pub use crate::error::ModelError;

/// Prefetches nothing; the yardstick for coverage.
#[derive(Debug, Default)]
pub struct NonePredictor;

impl Predictor for NonePredictor {
    fn name(&self) -> &str {
        "none"
    }
    fn reads_ahead(&self) -> bool {
        false
    }
    fn predict(&self, _: &Context, _: usize) -> Vec<Step> {
        Vec::new()
    }
}

/// Sequential readahead: the rest of the file, then the next files by name.
#[derive(Debug, Default)]
pub struct Readahead;

impl Predictor for Readahead {
    fn name(&self) -> &str {
        "readahead"
    }
    fn predict(&self, _: &Context, depth: usize) -> Vec<Step> {
        vec![Step::Delta(1); depth]
    }
}

/// Stride: the delta most frequent among the stream's recent steps since its
/// last jump (majority vote), repeated.
#[derive(Debug)]
pub struct Stride {
    window: usize,
}

impl Default for Stride {
    fn default() -> Self {
        Stride { window: 8 }
    }
}

impl Predictor for Stride {
    fn name(&self) -> &str {
        "stride"
    }
    fn predict(&self, ctx: &Context, depth: usize) -> Vec<Step> {
        let mut votes: HashMap<i64, usize> = HashMap::new();
        for s in ctx.steps.iter().rev().take(self.window) {
            match s {
                Step::Delta(d) => *votes.entry(*d).or_default() += 1,
                Step::Jump => break,
            }
        }
        match votes.into_iter().max_by_key(|&(d, n)| (n, -d.abs())) {
            Some((d, _)) => vec![Step::Delta(d); depth],
            None => Vec::new(),
        }
    }
}

/// Last-successor / first-order Markov chain over steps, learned online
/// across all streams: after step `s`, the step seen most often after `s`.
#[derive(Debug, Default)]
pub struct Markov {
    table: HashMap<Step, HashMap<Step, u32>>,
}

impl Markov {
    fn next(&self, ctx: &Context) -> Option<Step> {
        let row = self.table.get(&ctx.back(0)?)?;
        row.iter().max_by_key(|&(s, n)| (*n, std::cmp::Reverse(s.class()))).map(|(s, _)| *s)
    }
}

impl Predictor for Markov {
    fn name(&self) -> &str {
        "markov"
    }
    fn observe(&mut self, ctx: &Context, next: Step) {
        if let Some(prev) = ctx.back(0) {
            *self.table.entry(prev).or_default().entry(next).or_default() += 1;
        }
    }
    fn predict(&self, ctx: &Context, depth: usize) -> Vec<Step> {
        roll(ctx, depth, |c| self.next(c))
    }
}

/// The steps of every stream of a trace, each starting with the jump that
/// opened it and ending with a jump (the stream's reader went elsewhere for
/// good). Streams are split by reader and directory, as the prefetcher does.
pub fn stream_steps(trace: &Trace) -> Vec<Vec<Step>> {
    let cat = &trace.catalog;
    let mut streams: HashMap<(String, u32), (usize, u32)> = HashMap::new();
    let mut out: Vec<Vec<Step>> = Vec::new();
    for ev in &trace.events {
        let Event::Access(a) = ev else { continue };
        let Some(id) = cat.id(&a.path) else { continue };
        let f = cat.file(id);
        let (first, _) = cat.pages_of(id, a.offset, a.len);
        match streams.get_mut(&(a.reader.clone(), f.dir)) {
            Some((i, last)) if *last == id => {
                let _ = i;
            }
            Some((i, last)) => {
                out[*i].push(Step::between(cat.file(*last).index as i64, f.index as i64, first));
                *last = id;
            }
            None => {
                out.push(vec![Step::Jump]);
                streams.insert((a.reader.clone(), f.dir), (out.len() - 1, id));
            }
        }
    }
    for s in &mut out {
        s.push(Step::Jump);
    }
    out
}

/// Every (history, next step) pair of the traces' streams.
pub fn samples(traces: &[Trace]) -> Vec<(Context, Step)> {
    let mut out = Vec::new();
    for t in traces {
        for steps in stream_steps(t) {
            let mut ctx = Context::default();
            for (i, &s) in steps.iter().enumerate() {
                if i > 0 {
                    out.push((ctx.clone(), s));
                }
                ctx.push(s);
            }
        }
    }
    out
}

/// Features the tree decides on: the four newest steps and the steps since
/// the last jump (where in a clip the stream is).
pub const TREE_FEATURES: usize = 5;

/// Most training samples the tree is fitted on.
const MAX_TREE_SAMPLES: usize = 80_000;

fn encode(s: Option<Step>) -> f64 {
    match s {
        Some(Step::Delta(d)) => d as f64,
        Some(Step::Jump) => 100.0,
        None => -100.0,
    }
}

pub fn tree_features(ctx: &Context, row: &mut [f64]) {
    for (i, r) in row.iter_mut().take(4).enumerate() {
        *r = encode(ctx.back(i));
    }
    row[4] = ctx.since_jump.min(255) as f64;
}

/// A decision tree (linfa) over [`tree_features`]: small (a few KiB) and
/// microseconds per prediction, so it runs on a node's read path and on a
/// robot.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tree {
    tree: DecisionTree<f64, usize>,
}

impl Tree {
    pub fn train(samples: &[(Context, Step)], max_depth: usize) -> Result<Tree, ModelError> {
        if samples.is_empty() {
            return Err(ModelError::Train("no stream steps in the traces".into()));
        }
        // An even subsample keeps the per-row offsets below apart (> 1e-5).
        let keep = samples.len().div_ceil(MAX_TREE_SAMPLES);
        let samples: Vec<&(Context, Step)> = samples.iter().step_by(keep).collect();
        let mut x = Array2::<f64>::zeros((samples.len(), TREE_FEATURES));
        let mut y = Array1::<usize>::zeros(samples.len());
        // linfa-trees 0.8 skips a split point when the next value in the
        // whole column (not just the node's rows) is equal, so with many
        // equal integer features it misses boundaries and stops early. A
        // distinct offset per row below the integer spacing keeps every
        // boundary visible without changing the order of values.
        // The offsets follow a seeded random order, so they carry nothing
        // the tree could mistake for a pattern (row order follows traces).
        let spacing = 0.9 / samples.len().max(1) as f64;
        let mut offsets: Vec<usize> = (0..samples.len()).collect();
        offsets.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x5eed));
        for (i, (ctx, next)) in samples.iter().enumerate() {
            let row = x.row_mut(i).into_slice().expect("rows of a fresh array are contiguous");
            tree_features(ctx, row);
            for v in row.iter_mut() {
                *v += offsets[i] as f64 * spacing;
            }
            y[i] = next.class();
        }
        let tree = DecisionTree::params()
            .max_depth(Some(max_depth))
            .min_weight_split(4.0)
            .min_weight_leaf(2.0)
            .min_impurity_decrease(1e-5)
            .fit(&Dataset::new(x, y))
            .map_err(|e| ModelError::Train(e.to_string()))?;
        Ok(Tree { tree })
    }

    fn next(&self, ctx: &Context) -> Option<Step> {
        let mut x = Array2::<f64>::zeros((1, TREE_FEATURES));
        tree_features(ctx, x.row_mut(0).as_slice_mut().expect("contiguous"));
        let y: Array1<usize> = self.tree.predict(&x);
        Some(Step::from_class(y[0]))
    }
}

impl Predictor for Tree {
    fn name(&self) -> &str {
        "tree"
    }
    fn predict(&self, ctx: &Context, depth: usize) -> Vec<Step> {
        roll(ctx, depth, |c| self.next(c))
    }
}

/// What `model.json` in a model directory says.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelFile {
    /// `tree` or `lstm`.
    pub kind: String,
    /// What it was trained on (trace names and step count).
    pub trained_on: String,
    /// The tree itself, for `tree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Tree>,
    /// Hidden size of the LSTM, for `lstm` (weights in `lstm.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<i64>,
}

/// Writes `model.json` (and whatever else the model needs) into `dir`.
pub fn save_model_file(dir: &Path, file: &ModelFile) -> Result<(), ModelError> {
    let shown = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(shown.clone(), e))?;
    let text = serde_json::to_string(file).map_err(|e| ModelError::Format(shown.clone(), e.to_string()))?;
    std::fs::write(dir.join("model.json"), text).map_err(|e| ModelError::Io(shown, e))
}

/// Loads the model saved in `dir` (`tree`, or `lstm` with the `torch` feature).
pub fn load(dir: &Path) -> Result<Box<dyn Predictor>, ModelError> {
    let path = dir.join("model.json");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Io(shown.clone(), e))?;
    let file: ModelFile = serde_json::from_str(&text).map_err(|e| ModelError::Format(shown.clone(), e.to_string()))?;
    match file.kind.as_str() {
        "tree" => Ok(Box::new(file.tree.ok_or_else(|| ModelError::Format(shown, "kind tree without a tree".into()))?)),
        #[cfg(feature = "torch")]
        "lstm" => Ok(Box::new(crate::lstm::Lstm::load(dir, file.hidden.unwrap_or(crate::lstm::HIDDEN))?)),
        #[cfg(not(feature = "torch"))]
        "lstm" => {
            Err(ModelError::Unsupported(format!("{shown}: an LSTM model needs ferry built with the `torch` feature")))
        }
        other => Err(ModelError::Format(shown, format!("unknown kind {other:?} (tree or lstm)"))),
    }
}

/// A predictor by name: `none`, `readahead`, `stride`, `markov`, or a model
/// directory.
pub fn by_name(name: &str) -> Result<Box<dyn Predictor>, ModelError> {
    Ok(match name {
        "none" => Box::new(NonePredictor),
        "readahead" => Box::new(Readahead),
        "stride" => Box::new(Stride::default()),
        "markov" => Box::new(Markov::default()),
        "tree" => Box::new(shipped_tree()?),
        dir => load(Path::new(dir))?,
    })
}

/// The tree model shipped in `models/tree` (see `models/README.md`), built
/// into the binary so the mount and the node have a trained model by default.
pub fn shipped_tree() -> Result<Tree, ModelError> {
    const SHIPPED: &str = include_str!("../../models/tree/model.json");
    let shown = "models/tree/model.json (built in)".to_string();
    let file: ModelFile =
        serde_json::from_str(SHIPPED).map_err(|e| ModelError::Format(shown.clone(), e.to_string()))?;
    file.tree.ok_or_else(|| ModelError::Format(shown, "kind tree without a tree".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(steps: &[i64]) -> Context {
        let mut c = Context::start();
        for &d in steps {
            c.push(if d == 0 { Step::Jump } else { Step::Delta(d) });
        }
        c
    }

    #[test]
    fn stride_votes_and_stops_at_jumps() {
        let s = Stride::default();
        assert_eq!(s.predict(&ctx(&[3, 3, 1, 3]), 2), vec![Step::Delta(3); 2]);
        assert_eq!(s.predict(&ctx(&[3, 3, 0]), 2), vec![], "nothing learned since the jump");
        assert_eq!(NonePredictor.predict(&ctx(&[1, 1]), 3), vec![]);
        assert_eq!(Readahead.predict(&ctx(&[]), 2), vec![Step::Delta(1); 2]);
    }

    #[test]
    fn markov_learns_successors() {
        let mut m = Markov::default();
        let mut c = Context::start();
        for d in [2, 1, 2, 1, 2, 1] {
            m.observe(&c, Step::Delta(d));
            c.push(Step::Delta(d));
        }
        assert_eq!(m.predict(&c, 3), vec![Step::Delta(2), Step::Delta(1), Step::Delta(2)]);
    }

    #[test]
    fn tree_learns_clip_length() {
        // Clips of 5 frames: four +1 steps, then a jump.
        let mut samples = Vec::new();
        for _ in 0..20 {
            let mut c = Context::start();
            for i in 0..5 {
                let next = if i < 4 { Step::Delta(1) } else { Step::Jump };
                samples.push((c.clone(), next));
                c.push(next);
            }
        }
        let t = Tree::train(&samples, 8).expect("trains");
        assert_eq!(t.predict(&ctx(&[]), 8), vec![Step::Delta(1); 4], "stops where clips end");
        assert_eq!(t.predict(&ctx(&[1, 1]), 8), vec![Step::Delta(1); 2]);
    }
}
