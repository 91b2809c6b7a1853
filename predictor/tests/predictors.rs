//! Each predictor on small synthetic traces with known answers, scored by the
//! same replay `ferry predictor eval` uses.

use ferry_predictor::eval::{self, Counts, SimConfig};
use ferry_predictor::gen::{self, Size};
use ferry_predictor::trace::{Access, Event, Header, Trace, TRACE_VERSION};
use ferry_predictor::{models, Catalog, Context, Fetch, Predictor, PrefetchConfig, Prefetcher, Step, ANY_READER};

/// A store that answers at once, and room for everything: only the
/// predictions matter.
fn instant() -> SimConfig {
    SimConfig {
        cache_bytes: 1 << 40,
        budget_bytes: 1 << 40,
        latency_us: 0,
        bandwidth: 0,
        prefetch: PrefetchConfig::default(),
    }
}

fn run(trace: &Trace, cfg: &SimConfig, name: &str) -> Counts {
    eval::run(trace, cfg, models::by_name(name).expect("baseline"))
}

fn trained_tree() -> models::Tree {
    let train: Vec<Trace> = ["multisensor", "keyframes", "kitti", "clip"]
        .iter()
        .flat_map(|s| (1..3).map(move |seed| gen::generate(s, Size::eval(), seed).expect("shape")))
        .collect();
    models::Tree::train(&models::samples(&train), 16).expect("trains")
}

#[test]
fn sequential_reads_are_readahead_perfect() {
    let t = gen::generate("sequential", Size { units: 3, ..Size::small() }, 1).expect("shape");
    let ra = run(&t, &instant(), "readahead");
    assert_eq!(ra.precision(), 1.0, "{ra:?}");
    assert_eq!(ra.misses, 1, "only the very first page is read before anything was predicted: {ra:?}");
    let none = run(&t, &instant(), "none");
    assert_eq!(none.misses, none.reads, "without prefetch every page misses");
    assert_eq!(none.prefetched_bytes, 0);
}

#[test]
fn strided_reads_follow_the_stride() {
    // One folder of 60 frames; the reader takes every third.
    let files: Vec<(String, u64)> = (0..60).map(|i| (format!("/cam/{i:04}.jpg"), 1000)).collect();
    let events = (0..60)
        .step_by(3)
        .map(|i| {
            Event::Access(Access {
                time_us: i as u64 * 1000,
                reader: "r".into(),
                path: format!("/cam/{i:04}.jpg"),
                offset: 0,
                len: 1000,
            })
        })
        .collect();
    let t = Trace {
        name: "strided".into(),
        header: Header { ferry_trace: TRACE_VERSION, page_size: 4096, shape: "strided".into(), seed: None },
        catalog: Catalog::new(4096, files),
        events,
    };
    let stride = run(&t, &instant(), "stride");
    assert_eq!(stride.misses, 2, "two reads show the stride, then every read is prefetched: {stride:?}");
    assert_eq!(stride.precision(), 1.0, "{stride:?}");
    let ra = run(&t, &instant(), "readahead");
    // Readahead's next four files hold the third one: right once in three.
    assert!(ra.precision() < 0.5, "next-file readahead fetches two wrong files per right one: {ra:?}");
}

#[test]
fn interleaved_cameras_and_lidar_are_learned_per_stream() {
    // Six cameras and a lidar read in turn by two readers: one global history
    // would see a jump between every read.
    let tree = trained_tree();
    let held_out = gen::generate("multisensor", Size::small(), 99).expect("shape");
    let cfg = SimConfig::default();
    let none = run(&held_out, &cfg, "none");
    let tree_counts = eval::run(&held_out, &cfg, Box::new(tree));
    let markov = run(&held_out, &cfg, "markov");
    let stride = run(&held_out, &cfg, "stride");
    assert!(tree_counts.precision() >= 0.9, "{tree_counts:?}");
    assert!(tree_counts.coverage(&none) >= 0.9, "{tree_counts:?} vs {none:?}");
    assert!(tree_counts.precision() > markov.precision(), "tree {tree_counts:?} markov {markov:?}");
    assert!(tree_counts.precision() > stride.precision(), "tree {tree_counts:?} stride {stride:?}");
    assert!(tree_counts.hits > markov.hits && tree_counts.hits > stride.hits);
}

#[test]
fn announced_shuffle_order_is_exact() {
    let t = gen::generate("shuffle-announced", Size { units: 1, rounds: 2, ..Size::small() }, 5).expect("shape");
    let oracle = eval::run_oracle(&t, &instant());
    for name in ["readahead", "markov"] {
        let c = run(&t, &instant(), name);
        assert_eq!(c.misses, oracle.misses, "{name}: {c:?} oracle {oracle:?}");
        assert_eq!(c.precision(), 1.0, "{name}: {c:?}");
    }
    // Without the announcement nothing predicts a shuffle.
    let blind = gen::generate("shuffle", Size { units: 1, rounds: 2, ..Size::small() }, 5).expect("shape");
    let c = run(&blind, &instant(), "markov");
    assert!(c.useful_pages < c.reads / 10, "{c:?}");
}

#[test]
fn announced_clips_and_scenes_come_within_five_percent_of_the_oracle() {
    // The default store: 20 ms per request, 100 MB/s.
    let cfg = SimConfig::default();
    let size = Size { units: 1, rounds: 6, ..Size::small() };
    for shape in ["clip", "multisensor", "kitti"] {
        let t = gen::generate(&format!("{shape}-announced"), size, 7).expect("shape");
        let oracle = eval::run_oracle(&t, &cfg);
        let none = run(&t, &cfg, "none");
        for name in ["readahead", "markov"] {
            let c = run(&t, &cfg, name);
            assert!(c.precision() >= 0.9 && c.coverage(&none) >= 0.9, "{shape} {name}: {c:?}");
            assert!(c.hit_ratio() >= oracle.hit_ratio() - 0.05, "{shape} {name}: {c:?} oracle {oracle:?}");
        }
    }
    // The same clips unannounced: the first frames of each clip are misses.
    let blind = gen::generate("clip", size, 7).expect("shape");
    let c = run(&blind, &cfg, "markov");
    assert!(c.hit_ratio() < eval::run_oracle(&blind, &cfg).hit_ratio() - 0.05, "{c:?}");
}

#[test]
fn an_order_announced_for_every_reader_is_followed_by_each_and_names_ranges() {
    // Two record files of 10 pages; samples are page-sized ranges.
    let cat = Catalog::new(100, [("/rec/a".to_string(), 1000), ("/rec/b".to_string(), 1000)]);
    let (a, b) = (cat.id("/rec/a").expect("a"), cat.id("/rec/b").expect("b"));
    let order = vec![
        Fetch { file: b, first: 3, end: 4 },
        Fetch { file: a, first: 7, end: 8 },
        Fetch { file: b, first: 0, end: 1 },
        Fetch { file: a, first: 2, end: 3 },
    ];
    let config = PrefetchConfig { announced_depth: 2, ..PrefetchConfig::default() };
    let mut pf = Prefetcher::new(models::by_name("readahead").expect("readahead"), config);
    pf.announce_ranges(ANY_READER, order.clone());
    // Before any read: the first entries.
    let mut out = Vec::new();
    pf.upcoming(&cat, ANY_READER, &mut out);
    assert_eq!(out, order[..2]);
    // A worker reads the first sample; another worker the second: each is
    // told what follows in the shared order.
    out.clear();
    pf.access(&cat, "pid:1", b, 300, 100, &mut out);
    assert_eq!(out, order[1..3]);
    out.clear();
    pf.access(&cat, "pid:2", a, 700, 100, &mut out);
    assert_eq!(out, order[2..4]);
    // A reader with its own order follows that one.
    pf.announce(ANY_READER, vec![a]);
    pf.announce("pid:3", vec![b, a]);
    out.clear();
    pf.access(&cat, "pid:3", b, 0, 100, &mut out);
    let ahead = Fetch { file: b, first: 1, end: 9 };
    assert_eq!(out, [ahead, Fetch { file: a, first: 0, end: 4 }], "readahead in b, then a's first file_pages pages");
}

#[test]
fn tree_saved_and_loaded_predicts_the_same() {
    let tree = trained_tree();
    let dir = tempfile::tempdir().expect("tempdir");
    let held_out = gen::generate("kitti", Size::small(), 77).expect("shape");
    let samples = models::samples(std::slice::from_ref(&held_out));
    let before: Vec<Vec<Step>> = samples.iter().map(|(c, _)| tree.predict(c, 4)).collect();
    models::save_model_file(
        dir.path(),
        &models::ModelFile { kind: "tree".into(), trained_on: "test".into(), tree: Some(tree), hidden: None },
    )
    .expect("saves");
    let loaded = models::load(dir.path()).expect("loads");
    let after: Vec<Vec<Step>> = samples.iter().map(|(c, _)| loaded.predict(c, 4)).collect();
    assert_eq!(before, after);
    assert!(before.iter().any(|p| !p.is_empty()));

    std::fs::write(dir.path().join("model.json"), "{\"kind\":\"forest\",\"trained_on\":\"\"}").expect("write");
    let err = models::load(dir.path()).map(|_| ()).expect_err("unknown kind");
    assert!(err.to_string().contains("forest"), "{err}");
}

#[test]
fn committed_fixtures_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/traces");
    let traces = ferry_predictor::trace::read_dir(&dir).expect("fixtures");
    assert!(traces.len() >= 5);
    for t in &traces {
        assert!(t.accesses().count() > 0, "{}", t.name);
        assert!(t.name.starts_with(&t.header.shape), "{}: file name says the shape", t.name);
    }
}

#[test]
fn markov_needs_a_history_the_tree_does_not() {
    // At a stream's start the tree has learned the first step; Markov has
    // seen nothing yet.
    let tree = trained_tree();
    let m = models::Markov::default();
    assert_eq!(m.predict(&Context::start(), 2), vec![]);
    assert!(!tree.predict(&Context::start(), 2).is_empty());
}

#[cfg(feature = "torch")]
#[test]
fn lstm_beats_markov_on_interleaved_sensors_and_round_trips() {
    use ferry_predictor::lstm::Lstm;
    let train: Vec<Trace> = (1..3).map(|s| gen::generate("multisensor", Size::eval(), s).expect("shape")).collect();
    let samples = models::samples(&train);
    let lstm = Lstm::train(&samples, 32, 3, 7).expect("trains");
    let held_out = vec![gen::generate("multisensor", Size::small(), 42).expect("shape")];
    let mut markov = models::Markov::default();
    let markov_acc = eval::step_accuracy(&mut markov, &held_out);
    let mut lstm = lstm;
    let lstm_acc = eval::step_accuracy(&mut lstm, &held_out);
    assert!(lstm_acc > markov_acc, "lstm {lstm_acc} markov {markov_acc}");

    let dir = tempfile::tempdir().expect("tempdir");
    lstm.save(dir.path()).expect("saves");
    models::save_model_file(
        dir.path(),
        &models::ModelFile { kind: "lstm".into(), trained_on: "test".into(), tree: None, hidden: Some(32) },
    )
    .expect("model.json");
    let loaded = models::load(dir.path()).expect("loads");
    for (ctx, _) in models::samples(&held_out).iter().take(200) {
        assert_eq!(lstm.predict(ctx, 4), loaded.predict(ctx, 4));
    }
}

#[test]
fn the_jump_blind_ceiling_lies_between_a_predictor_and_the_oracle() {
    // Sequential files without a jump: knowing each stream's future until its
    // next jump is knowing everything.
    let seq = gen::generate("sequential", Size::small(), 3).expect("shape");
    let cfg = SimConfig::default();
    let (blind, oracle) = (eval::run_causal(&seq, &cfg), eval::run_oracle(&seq, &cfg));
    assert!(blind.hit_ratio() > 0.9 * oracle.hit_ratio(), "{blind:?} vs {oracle:?}");
    // Clips of random episodes: each clip's start is a jump nobody but the
    // oracle sees coming; the trained tree gets close to the blind ceiling.
    let clip = gen::generate("clip", Size::small(), 7).expect("shape");
    let (blind, oracle) = (eval::run_causal(&clip, &cfg), eval::run_oracle(&clip, &cfg));
    let tree = eval::run(&clip, &cfg, Box::new(trained_tree()));
    assert!(blind.hit_ratio() < oracle.hit_ratio(), "{blind:?} vs {oracle:?}");
    assert!(tree.hit_ratio() <= blind.hit_ratio() + 0.01, "{tree:?} vs {blind:?}");
    assert!(tree.hit_ratio() > 0.9 * blind.hit_ratio(), "{tree:?} vs {blind:?}");
}

#[cfg(feature = "torch")]
#[test]
fn shipped_lstm_loads_and_beats_markov_on_held_out_sensors() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/lstm");
    let mut lstm = models::load(&shipped).expect("models/lstm loads");
    let held_out = vec![gen::generate("multisensor", Size::small(), 77).expect("shape")];
    let lstm_acc = eval::step_accuracy(&mut *lstm, &held_out);
    let markov_acc = eval::step_accuracy(&mut models::Markov::default(), &held_out);
    assert!(lstm_acc > markov_acc, "lstm {lstm_acc} markov {markov_acc}");
}
