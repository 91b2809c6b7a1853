//! A sequence model (LSTM, libtorch through tch) over a stream's recent
//! steps. Built with the `torch` feature.
//!
//! Input per step: the step's class one-hot plus the steps since the last
//! jump (scaled); the last [`WINDOW`] steps of the stream form the sequence;
//! a linear layer on the last hidden state scores the next step's class.

use std::path::Path;

use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

use crate::error::ModelError;
use crate::{roll, Context, Predictor, Step};

/// Steps of history the model reads.
pub const WINDOW: usize = 16;
/// Default hidden size.
pub const HIDDEN: i64 = 48;
const FEATURES: usize = Step::CLASSES + 1;
const WEIGHTS: &str = "lstm.safetensors";

/// The LSTM predictor.
#[derive(Debug)]
pub struct Lstm {
    vs: nn::VarStore,
    lstm: nn::LSTM,
    out: nn::Linear,
}

fn encode(ctx: &Context, out: &mut [f32]) {
    let n = ctx.steps.len().min(WINDOW);
    let skip = ctx.steps.len() - n;
    let mut since = ctx.since_jump as usize;
    // Steps since jump at each position, newest last.
    let mut since_at = vec![0usize; n];
    for i in (0..n).rev() {
        since_at[i] = since;
        if ctx.steps[skip + i] == Step::Jump {
            since = 0;
        } else {
            since = since.saturating_sub(1);
        }
    }
    let pad = WINDOW - n;
    for i in 0..n {
        let row = &mut out[(pad + i) * FEATURES..(pad + i + 1) * FEATURES];
        row[ctx.steps[skip + i].class()] = 1.0;
        row[Step::CLASSES] = since_at[i].min(128) as f32 / 64.0;
    }
}

impl Lstm {
    fn build(hidden: i64) -> Lstm {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let lstm = nn::lstm(&root / "lstm", FEATURES as i64, hidden, Default::default());
        let out = nn::linear(&root / "out", hidden, Step::CLASSES as i64, Default::default());
        Lstm { vs, lstm, out }
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        let (seq, _) = self.lstm.seq(x);
        self.out.forward(&seq.select(1, WINDOW as i64 - 1))
    }

    /// Trains on (history, next step) samples; `epochs` passes in batches of 256.
    pub fn train(samples: &[(Context, Step)], hidden: i64, epochs: usize, seed: i64) -> Result<Lstm, ModelError> {
        if samples.is_empty() {
            return Err(ModelError::Train("no stream steps in the traces".into()));
        }
        tch::manual_seed(seed);
        let model = Lstm::build(hidden);
        let n = samples.len();
        let mut x = vec![0f32; n * WINDOW * FEATURES];
        let mut y = vec![0i64; n];
        for (i, (ctx, next)) in samples.iter().enumerate() {
            encode(ctx, &mut x[i * WINDOW * FEATURES..(i + 1) * WINDOW * FEATURES]);
            y[i] = next.class() as i64;
        }
        let x = Tensor::from_slice(&x).reshape([n as i64, WINDOW as i64, FEATURES as i64]);
        let y = Tensor::from_slice(&y);
        let mut opt = nn::Adam::default().build(&model.vs, 5e-3).map_err(|e| ModelError::Train(e.to_string()))?;
        for _ in 0..epochs {
            let order = Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu));
            for batch in order.split(256, 0) {
                let loss =
                    model.logits(&x.index_select(0, &batch)).cross_entropy_for_logits(&y.index_select(0, &batch));
                opt.backward_step(&loss);
            }
        }
        Ok(model)
    }

    fn next(&self, ctx: &Context) -> Option<Step> {
        let mut x = vec![0f32; WINDOW * FEATURES];
        encode(ctx, &mut x);
        let x = Tensor::from_slice(&x).reshape([1, WINDOW as i64, FEATURES as i64]);
        let class = tch::no_grad(|| self.logits(&x).argmax(-1, false).int64_value(&[0]));
        Some(Step::from_class(class as usize))
    }

    /// Saves the weights as `lstm.safetensors` in `dir` (the caller writes model.json).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
        let path = dir.join(WEIGHTS);
        self.vs.save(&path).map_err(|e| ModelError::Format(path.display().to_string(), e.to_string()))
    }

    /// Loads weights saved by [`Lstm::save`].
    pub fn load(dir: &Path, hidden: i64) -> Result<Lstm, ModelError> {
        let mut model = Lstm::build(hidden);
        let path = dir.join(WEIGHTS);
        model.vs.load(&path).map_err(|e| ModelError::Format(path.display().to_string(), e.to_string()))?;
        Ok(model)
    }
}

impl Predictor for Lstm {
    fn name(&self) -> &str {
        "lstm"
    }
    fn predict(&self, ctx: &Context, depth: usize) -> Vec<Step> {
        roll(ctx, depth, |c| self.next(c))
    }
}
