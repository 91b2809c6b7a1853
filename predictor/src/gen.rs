//! Trace generators that mimic how real datasets are laid out and read.
//!
//! | shape | layout | reader |
//! |---|---|---|
//! | `multisensor` | nuScenes-like: 20 s scenes; 6 cameras at 12 Hz (~240 KB JPEG, 1600×900), a lidar at 20 Hz (34k points × 5 float32 ≈ 680 KB); one file per frame, one folder per sensor | clips of `window` camera frames from a random scene: each step reads the 6 camera frames and the nearest lidar sweep |
//! | `keyframes` | the same scenes | keyframes only (2 Hz: every 6th camera frame, every 10th sweep), `window` keyframes from a random scene |
//! | `kitti` | KITTI-like sequences: 10 Hz lidar scans (~1.6 MB) and 4 cameras per sequence folder | windows of consecutive scans with their 4 images |
//! | `clip` | video episodes, one folder each, ~200 KB frames | a random episode, a contiguous window of frames |
//! | `shuffle` | an ImageNet-like folder tree of ~110 KB images | every file once per epoch in a seeded random order; `shuffle-announced` adds the order up front |
//! | `records` | large record files (ResNet/CosmoFlow style, 32 MiB) | shuffled file order per epoch, each file read through in 256 KiB reads |
//! | `sequential` | a few large files | read start to end in 1 MiB reads |
//!
//! `clip-announced`, `multisensor-announced` and `kitti-announced` are those
//! traces with each reader's whole order announced before its first read, as
//! a job whose sampler draws its clips or scenes up front can announce them.
//!
//! Times are microseconds; readers run side by side (`w0`, `w1`, ...).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::catalog::Catalog;
use crate::trace::{Access, Announce, Event, Header, Trace, TRACE_VERSION};

/// Page size of generated traces.
pub const PAGE_SIZE: u64 = 1 << 20;

/// The shapes [`generate`] knows.
pub const SHAPES: &[&str] = &["multisensor", "keyframes", "kitti", "clip", "shuffle", "records", "sequential"];
/// Shapes whose readers announce their order up front (the sampler knows it).
pub const ANNOUNCED: &[&str] = &["shuffle-announced", "clip-announced", "multisensor-announced", "kitti-announced"];

/// How big a generated trace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Scenes, sequences, episodes or record files (the dataset's breadth).
    pub units: usize,
    /// Windows (clips) per reader, or epochs.
    pub rounds: usize,
    /// Parallel readers.
    pub readers: usize,
    /// Frames (steps) per window.
    pub window: usize,
}

impl Size {
    /// Small enough to commit as a fixture.
    pub fn small() -> Size {
        Size { units: 2, rounds: 4, readers: 2, window: 32 }
    }
    /// What the evaluation in docs/BENCHMARKS.md uses.
    pub fn eval() -> Size {
        Size { units: 8, rounds: 24, readers: 2, window: 32 }
    }
}

struct Builder {
    files: Vec<(String, u64)>,
    events: Vec<Event>,
}

impl Builder {
    fn read(&mut self, t: u64, reader: &str, path: &str, offset: u64, len: u64) {
        self.events.push(Event::Access(Access {
            time_us: t,
            reader: reader.to_string(),
            path: path.to_string(),
            offset,
            len,
        }));
    }

    fn finish(self, shape: &str, seed: u64) -> Trace {
        let catalog = Catalog::new(PAGE_SIZE, self.files);
        let mut events = self.events;
        events.sort_by_key(Event::time_us);
        Trace {
            name: format!("{shape}-{seed}"),
            header: Header {
                ferry_trace: TRACE_VERSION,
                page_size: PAGE_SIZE,
                shape: shape.to_string(),
                seed: Some(seed),
            },
            catalog,
            events,
        }
    }
}

const CAMERAS: [&str; 6] =
    ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"];
const SCENE_SECONDS: u64 = 20;
const CAMERA_HZ: u64 = 12;
const LIDAR_HZ: u64 = 20;

struct Scenes {
    /// Per scene: per camera its frames' paths; lidar sweeps' paths.
    cams: Vec<Vec<Vec<(String, u64)>>>,
    lidar: Vec<Vec<(String, u64)>>,
}

fn nuscenes(b: &mut Builder, rng: &mut StdRng, scenes: usize) -> Scenes {
    let mut out = Scenes { cams: Vec::new(), lidar: Vec::new() };
    for s in 0..scenes {
        let t0 = 1_532_402_927_000_000u64 + s as u64 * 60_000_000;
        let mut cams = Vec::new();
        for cam in CAMERAS {
            let frames: Vec<(String, u64)> = (0..SCENE_SECONDS * CAMERA_HZ)
                .map(|k| {
                    let p = format!("/nuscenes/{cam}/scene-{s:04}__{cam}__{}.jpg", t0 + k * 1_000_000 / CAMERA_HZ);
                    (p, rng.random_range(180_000..300_000))
                })
                .collect();
            b.files.extend(frames.iter().cloned());
            cams.push(frames);
        }
        let sweeps: Vec<(String, u64)> = (0..SCENE_SECONDS * LIDAR_HZ)
            .map(|k| {
                let p =
                    format!("/nuscenes/LIDAR_TOP/scene-{s:04}__LIDAR_TOP__{}.pcd.bin", t0 + k * 1_000_000 / LIDAR_HZ);
                (p, 34_000 * 5 * 4 + rng.random_range(0..8_000) * 4)
            })
            .collect();
        b.files.extend(sweeps.iter().cloned());
        out.cams.push(cams);
        out.lidar.push(sweeps);
    }
    out
}

/// Reader `r`'s start time: readers run side by side, offset a little.
fn reader_start(r: usize) -> u64 {
    r as u64 * 7_000
}

fn multisensor(size: Size, seed: u64, keyframes: bool) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let scenes = nuscenes(&mut b, &mut rng, size.units.max(1));
    let frames = (SCENE_SECONDS * CAMERA_HZ) as usize;
    // Camera frames advanced per step, and the steps a window can hold.
    let every = if keyframes { (CAMERA_HZ / 2) as usize } else { 1 };
    let window = size.window.min(frames / every);
    for r in 0..size.readers {
        let reader = format!("w{r}");
        let mut t = reader_start(r);
        for _ in 0..size.rounds {
            let s = rng.random_range(0..scenes.cams.len());
            let start = rng.random_range(0..=(frames / every - window)) * every;
            for k in 0..window {
                let frame = start + k * every;
                for cam in &scenes.cams[s] {
                    let (p, n) = &cam[frame];
                    b.read(t, &reader, p, 0, *n);
                    t += 1_500;
                }
                // The sweep nearest in time to the camera frame.
                let sweep = ((frame as u64 * LIDAR_HZ * 2 + CAMERA_HZ) / (CAMERA_HZ * 2)) as usize;
                let sweep = sweep.min(scenes.lidar[s].len() - 1);
                let (p, n) = &scenes.lidar[s][sweep];
                b.read(t, &reader, p, 0, *n);
                t += if keyframes { 120_000 } else { 60_000 };
            }
            t += 30_000;
        }
    }
    b.finish(if keyframes { "keyframes" } else { "multisensor" }, seed)
}

fn kitti(size: Size, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let scans = 400usize;
    let mut seqs = Vec::new();
    for s in 0..size.units.max(1) {
        let mut frames = Vec::new();
        for k in 0..scans {
            let mut step = Vec::new();
            let lidar = format!("/kitti/sequences/{s:02}/velodyne/{k:06}.bin");
            let n = rng.random_range(1_500_000..1_750_000);
            b.files.push((lidar.clone(), n));
            step.push((lidar, n));
            for cam in 0..4 {
                let p = format!("/kitti/sequences/{s:02}/image_{cam}/{k:06}.png");
                let n = if cam < 2 { rng.random_range(350_000..450_000) } else { rng.random_range(800_000..950_000) };
                b.files.push((p.clone(), n));
                step.push((p, n));
            }
            frames.push(step);
        }
        seqs.push(frames);
    }
    let window = size.window.min(scans);
    for r in 0..size.readers {
        let reader = format!("w{r}");
        let mut t = reader_start(r);
        for _ in 0..size.rounds {
            let s = rng.random_range(0..seqs.len());
            let start = rng.random_range(0..=scans - window);
            for step in &seqs[s][start..start + window] {
                for (p, n) in step {
                    b.read(t, &reader, p, 0, *n);
                    t += 2_000;
                }
                t += 90_000;
            }
        }
    }
    b.finish("kitti", seed)
}

fn clip(size: Size, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let frames = 300usize;
    let episodes = size.units.max(1) * 8;
    let mut eps = Vec::new();
    for e in 0..episodes {
        let list: Vec<(String, u64)> = (0..frames)
            .map(|k| (format!("/episodes/ep_{e:04}/frame_{k:06}.jpg"), rng.random_range(150_000..250_000)))
            .collect();
        b.files.extend(list.iter().cloned());
        eps.push(list);
    }
    let window = size.window.min(frames);
    for r in 0..size.readers {
        let reader = format!("w{r}");
        let mut t = reader_start(r);
        for _ in 0..size.rounds {
            let e = rng.random_range(0..eps.len());
            let start = rng.random_range(0..=frames - window);
            for (p, n) in &eps[e][start..start + window] {
                b.read(t, &reader, p, 0, *n);
                t += 10_000;
            }
            t += 20_000;
        }
    }
    b.finish("clip", seed)
}

/// `trace` with each reader's whole read order announced before its first
/// read, as a job whose sampler draws its clips or scenes up front can.
fn announced(mut trace: Trace) -> Trace {
    let mut orders: Vec<(String, u64, Vec<String>)> = Vec::new();
    for ev in &trace.events {
        let Event::Access(a) = ev else { continue };
        let i = match orders.iter().position(|(r, _, _)| *r == a.reader) {
            Some(i) => i,
            None => {
                orders.push((a.reader.clone(), a.time_us, Vec::new()));
                orders.len() - 1
            }
        };
        let paths = &mut orders[i].2;
        if paths.last() != Some(&a.path) {
            paths.push(a.path.clone());
        }
    }
    let mut events: Vec<Event> = orders
        .into_iter()
        .map(|(reader, time_us, announce)| Event::Announce(Announce { time_us, reader, announce }))
        .collect();
    events.append(&mut trace.events);
    // Stable: an announcement stays before the read at its own time.
    events.sort_by_key(Event::time_us);
    trace.events = events;
    trace.header.shape = format!("{}-announced", trace.header.shape);
    trace.name = format!("{}-{}", trace.header.shape, trace.header.seed.unwrap_or(0));
    trace
}

fn shuffle(size: Size, seed: u64, announce: bool) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let classes = size.units.max(1) * 4;
    for c in 0..classes {
        for i in 0..250 {
            b.files.push((
                format!("/imagenet/train/n{:08}/img_{i:05}.JPEG", 1_440_000 + c),
                rng.random_range(80_000..140_000),
            ));
        }
    }
    let files = b.files.clone();
    let epochs = size.rounds.clamp(1, 4);
    let mut t = 0;
    for epoch in 0..epochs {
        // The sampler's order for this epoch: seed and epoch, as PyTorch's
        // DistributedSampler draws it.
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
        if announce {
            b.events.push(Event::Announce(Announce {
                time_us: t,
                reader: "w0".into(),
                announce: order.iter().map(|&i| files[i].0.clone()).collect(),
            }));
        }
        for &i in &order {
            t += 4_000;
            b.read(t, "w0", &files[i].0, 0, files[i].1);
        }
    }
    b.finish(if announce { "shuffle-announced" } else { "shuffle" }, seed)
}

fn records(size: Size, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let n = size.units.max(1) * 4;
    let rec = 32u64 << 20;
    for i in 0..n {
        b.files.push((format!("/cosmoflow/train/rec_{i:04}.tfrecord"), rec));
    }
    let mut t = 0;
    for _ in 0..size.rounds.clamp(1, 3) {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for i in order {
            let p = format!("/cosmoflow/train/rec_{i:04}.tfrecord");
            for off in (0..rec).step_by(256 << 10) {
                b.read(t, "w0", &p, off, 256 << 10);
                t += 4_000;
            }
        }
    }
    b.finish("records", seed)
}

fn sequential(size: Size, seed: u64) -> Trace {
    let mut b = Builder { files: Vec::new(), events: Vec::new() };
    let len = 64u64 << 20;
    let mut t = 0;
    for i in 0..size.units.max(1) {
        let p = format!("/seq/part-{i:05}.bin");
        b.files.push((p.clone(), len));
        for off in (0..len).step_by(1 << 20) {
            b.read(t, "w0", &p, off, 1 << 20);
            t += 15_000;
        }
    }
    b.finish("sequential", seed)
}

/// Generates a trace of `shape` (one of [`SHAPES`] or [`ANNOUNCED`]).
pub fn generate(shape: &str, size: Size, seed: u64) -> Option<Trace> {
    Some(match shape {
        "multisensor" => multisensor(size, seed, false),
        "keyframes" => multisensor(size, seed, true),
        "kitti" => kitti(size, seed),
        "clip" => clip(size, seed),
        "clip-announced" => announced(clip(size, seed)),
        "multisensor-announced" => announced(multisensor(size, seed, false)),
        "kitti-announced" => announced(kitti(size, seed)),
        "shuffle" => shuffle(size, seed, false),
        "shuffle-announced" => shuffle(size, seed, true),
        "records" => records(size, seed),
        "sequential" => sequential(size, seed),
        _ => return None,
    })
}
