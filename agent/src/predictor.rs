//! `ferry predictor gen|train|eval`: make access traces, learn from them,
//! and score every predictor against the oracle.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use ferry_predictor::eval::{self, Factory, Row, SimConfig};
use ferry_predictor::gen::{self, Size};
use ferry_predictor::models::{self, ModelError, ModelFile};
use ferry_predictor::trace::{self, Trace};
use ferry_predictor::{Predictor, PrefetchConfig};

#[derive(Debug, Subcommand)]
pub enum PredictorCommand {
    /// Generate traces that mimic dataset layouts and readers (nuScenes-like
    /// multi-sensor clips and keyframes, KITTI-like sequences, video clips,
    /// shuffled epochs, record files, sequential reads).
    Gen {
        /// Shapes to generate (default: all): multisensor, keyframes, kitti,
        /// clip, shuffle, records, sequential, and the announced variants
        /// shuffle-announced, clip-announced, multisensor-announced, kitti-announced.
        #[arg(long = "shape", value_delimiter = ',')]
        shapes: Vec<String>,
        /// Seeds; one trace per shape and seed, named SHAPE-SEED.trace.
        #[arg(long = "seed", value_delimiter = ',', default_values_t = [1u64])]
        seeds: Vec<u64>,
        /// `small` (fixtures) or `eval` (what docs/BENCHMARKS.md uses).
        #[arg(long, default_value = "eval")]
        size: String,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Learn a model from traces and save it into a model directory.
    Train {
        /// A trace file or a directory of *.trace files.
        #[arg(long)]
        traces: PathBuf,
        /// `tree` (linfa decision tree) or `lstm` (tch; needs the `torch` build).
        #[arg(long, default_value = "tree")]
        model: String,
        /// Model directory to write (model.json and, for lstm, its weights).
        #[arg(long)]
        out: PathBuf,
    },
    /// Score predictors on traces: precision, coverage, timeliness, hit
    /// ratio and bytes wasted, with the oracle's figures beside them.
    Eval {
        /// A trace file or a directory of *.trace files.
        #[arg(long)]
        traces: PathBuf,
        /// Model directories to score besides the baselines (none, readahead,
        /// stride, markov); default: every directory under ./models that has a
        /// model.json this build can load.
        #[arg(long = "model")]
        models: Vec<PathBuf>,
        /// Cache size of the replay.
        #[arg(long, default_value = "256MiB")]
        cache: bytesize::ByteSize,
        /// Most prefetched-but-unread bytes.
        #[arg(long, default_value = "64MiB")]
        budget: bytesize::ByteSize,
        /// Store latency per request.
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        latency: std::time::Duration,
        /// Store bandwidth, bytes per second (0: unlimited).
        #[arg(long, default_value = "100MB")]
        bandwidth: bytesize::ByteSize,
        /// Files ahead per stream.
        #[arg(long, default_value_t = PrefetchConfig::default().depth)]
        depth: usize,
        /// Print one JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: PredictorCommand) -> Result<()> {
    match command {
        PredictorCommand::Gen { shapes, seeds, size, out } => generate(shapes, &seeds, &size, &out),
        PredictorCommand::Train { traces, model, out } => train(&traces, &model, &out),
        PredictorCommand::Eval { traces, models, cache, budget, latency, bandwidth, depth, json } => {
            let cfg = SimConfig {
                cache_bytes: cache.as_u64(),
                budget_bytes: budget.as_u64(),
                latency_us: latency.as_micros() as u64,
                bandwidth: bandwidth.as_u64(),
                prefetch: PrefetchConfig { depth, ..PrefetchConfig::default() },
            };
            evaluate(&traces, models, &cfg, json)
        }
    }
}

fn generate(shapes: Vec<String>, seeds: &[u64], size: &str, out: &Path) -> Result<()> {
    let size = match size {
        "small" => Size::small(),
        "eval" => Size::eval(),
        other => bail!("unknown size {other:?}: small or eval"),
    };
    let shapes = if shapes.is_empty() {
        gen::SHAPES.iter().chain(gen::ANNOUNCED).map(|s| s.to_string()).collect()
    } else {
        shapes
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for shape in &shapes {
        for &seed in seeds {
            let t = gen::generate(shape, size, seed).with_context(|| {
                format!("unknown shape {shape:?}; known: {}, {}", gen::SHAPES.join(", "), gen::ANNOUNCED.join(", "))
            })?;
            let path = out.join(format!("{}.trace", t.name));
            t.save(&path).with_context(|| format!("writing {}", path.display()))?;
            println!("{}: {} files, {} events", path.display(), t.catalog.len(), t.events.len());
        }
    }
    Ok(())
}

fn load_traces(path: &Path) -> Result<Vec<Trace>> {
    Ok(trace::read_dir(path)?)
}

fn train(traces: &Path, kind: &str, out: &Path) -> Result<()> {
    let traces = load_traces(traces)?;
    let samples = models::samples(&traces);
    let names: Vec<&str> = traces.iter().map(|t| t.name.as_str()).collect();
    let trained_on = format!("{} stream steps from {}", samples.len(), names.join(", "));
    let started = std::time::Instant::now();
    match kind {
        "tree" => {
            let tree = models::Tree::train(&samples, 16)?;
            models::save_model_file(
                out,
                &ModelFile { kind: "tree".into(), trained_on, tree: Some(tree), hidden: None },
            )?;
        }
        #[cfg(feature = "torch")]
        "lstm" => {
            use ferry_predictor::lstm::{Lstm, HIDDEN};
            let lstm = Lstm::train(&samples, HIDDEN, 4, 7)?;
            lstm.save(out)?;
            models::save_model_file(
                out,
                &ModelFile { kind: "lstm".into(), trained_on, tree: None, hidden: Some(HIDDEN) },
            )?;
        }
        #[cfg(not(feature = "torch"))]
        "lstm" => {
            bail!("--model lstm needs ferry built with the `torch` feature (scripts/libtorch.sh fetches libtorch)")
        }
        other => bail!("unknown model {other:?}: tree or lstm"),
    }
    let mut m = models::load(out)?;
    let accuracy = eval::step_accuracy(m.as_mut(), &traces);
    println!(
        "{kind} model in {} from {} steps of {} traces in {:.1} s; next-step accuracy on them {:.3}",
        out.display(),
        samples.len(),
        traces.len(),
        started.elapsed().as_secs_f64(),
        accuracy
    );
    Ok(())
}

/// Model directories under ./models whose model.json this build can load.
fn default_models() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("models") else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.json").is_file() && models::load(p).is_ok())
        .collect();
    dirs.sort();
    dirs
}

/// Makes a fresh predictor for each trace.
type Maker = Box<dyn Fn() -> Result<Box<dyn Predictor>, ModelError>>;

fn evaluate(traces: &Path, mut model_dirs: Vec<PathBuf>, cfg: &SimConfig, json: bool) -> Result<()> {
    let traces = load_traces(traces)?;
    if model_dirs.is_empty() {
        model_dirs = default_models();
    }
    for dir in &model_dirs {
        models::load(dir).with_context(|| format!("model {}", dir.display()))?;
    }
    let baselines = ["none", "readahead", "stride", "markov"];
    let makers: Vec<(String, Maker)> = baselines
        .iter()
        .map(|&b| (b.to_string(), Box::new(move || models::by_name(b)) as Box<dyn Fn() -> _>))
        .chain(model_dirs.iter().map(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let d = d.clone();
            (name, Box::new(move || models::load(&d)) as Box<dyn Fn() -> _>)
        }))
        .collect();
    let factories: Vec<(String, Factory<'_>)> =
        makers.iter().map(|(n, f)| (n.clone(), f.as_ref() as Factory<'_>)).collect();
    let mut rows: Vec<Row> = Vec::new();
    for t in &traces {
        rows.extend(eval::evaluate(t, cfg, &factories)?);
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:>9} {:>8} {:>10} {:>9} {:>10} | {:>9} {:>8} {:>9} | {:>9} {:>9}",
        "trace",
        "predictor",
        "precision",
        "coverage",
        "timeliness",
        "hit_ratio",
        "wasted_MB",
        "oracle_pr",
        "oracle_cov",
        "oracle_hit",
        "blind_cov",
        "blind_hit"
    );
    for r in &rows {
        println!(
            "{:<24} {:<10} {:>9.3} {:>8.3} {:>10.3} {:>9.3} {:>10.1} | {:>9.3} {:>8.3} {:>9.3} | {:>9.3} {:>9.3}",
            r.trace,
            r.predictor,
            r.precision,
            r.coverage,
            r.timeliness,
            r.hit_ratio,
            r.wasted_bytes as f64 / 1e6,
            r.oracle_precision,
            r.oracle_coverage,
            r.oracle_hit_ratio,
            r.causal_coverage,
            r.causal_hit_ratio
        );
    }
    Ok(())
}
