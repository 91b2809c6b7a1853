#!/usr/bin/env bash
# MLPerf Storage's workload generator (DLIO), unmodified, training on a
# ferry mount vs the same run on local disk, per epoch.
#
#   bench/dlio.sh [--workload unet3d|resnet50|cosmoflow] [--through-mount] [FILES] [EPOCHS]
#
# By default (the way training jobs meet their data) DLIO generates the
# dataset directly in the object store (`ferry up`'s file:// store
# directory, written by DLIO itself, not by ferry), then:
#   1. local: the page cache is dropped and DLIO trains on the store
#      directory itself;
#   2. ferry: the node's cache is emptied, the page cache dropped, `ferry
#      up` started fresh, and DLIO trains on the same files through the mount.
# --through-mount instead generates the dataset through the mount (the
# files reach the store through ferry's write path; later reads find the
# local copies those writes left).
#
# Prints AU and throughput (samples/s) per epoch for both runs and their ratio, and
# ends with one JSON line. Default mount settings; no tuning flags.
#
# Needs root (to drop the page cache) and DLIO in a virtualenv (DLIO_VENV,
# default /tmp/dlio). Its PyPI package pins NVIDIA DALI, which installs only
# from NVIDIA's index, so:
#   apt-get install libopenmpi-dev openmpi-bin
#   python3 -m venv /tmp/dlio
#   /tmp/dlio/bin/pip install --no-deps dlio-benchmark
#   /tmp/dlio/bin/pip install Pillow PyYAML h5py mpi4py numpy omegaconf pandas \
#       psutil pydftracer==1.0.2 hydra-core tensorflow-cpu torch
#
#   cargo build --release -p ferry && sudo bench/dlio.sh
set -euo pipefail
cd "$(dirname "$0")/.."

workload="unet3d"
through_mount=0
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workload) workload="$2"; shift 2 ;;
        --through-mount) through_mount=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "dlio.sh: unknown option $1" >&2; exit 2 ;;
        *) positional+=("$1"); shift ;;
    esac
done
case "$workload" in
    unet3d) default_files=32 ;;
    resnet50) default_files=64 ;;
    cosmoflow) default_files=256 ;;
    *) echo "dlio.sh: unknown workload $workload (unet3d, resnet50, cosmoflow)" >&2; exit 2 ;;
esac
files="${positional[0]:-$default_files}"
epochs="${positional[1]:-3}"
venv="${DLIO_VENV:-/tmp/dlio}"
ferry="$PWD/target/release/ferry"
[ -x "$venv/bin/dlio_benchmark" ] || { echo "dlio.sh: no DLIO in $venv (see the top of this script)" >&2; exit 1; }
[ -x "$ferry" ] || { echo "dlio.sh: build ferry first: cargo build --release -p ferry" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "dlio.sh: run as root (it drops the page cache between runs)" >&2; exit 1; }

me="dlio.sh"
keep="${DLIO_KEEP:-}"
# shellcheck source=bench/up.sh
. bench/up.sh

# One DLIO run over DIR; MODE is generate or train. Output in $work/out-NAME.
dlio() {
    local dir="$1" name="$2" mode="$3" out="$work/out-$2"
    local gen=False train=False
    [ "$mode" = generate ] && gen=True
    [ "$mode" = train ] && train=True
    mkdir -p "$out"
    (cd "$out" && "$venv/bin/dlio_benchmark" workload="${workload}_a100" \
        ++workload.dataset.data_folder="$dir" ++workload.dataset.num_files_train="$files" \
        ++workload.dataset.num_files_eval=0 \
        ++workload.workflow.generate_data="$gen" ++workload.workflow.train="$train" \
        ++workload.workflow.checkpoint=False ++workload.workflow.evaluation=False \
        ++workload.train.epochs="$epochs" ++workload.reader.read_threads=2 ++workload.reader.batch_size=2 \
        ++workload.train.computation_time=0.05 ++workload.output.folder="$out/run") >"$out/log" 2>&1 \
        || { tail -30 "$out/log" >&2; echo "dlio.sh: DLIO ($mode) failed on $dir" >&2; exit 1; }
}

# Per-epoch AU (%) and throughput (samples/s) of run NAME, as "au1,au2,... s1,s2,...".
per_epoch() {
    python3 - "$work/out-$1/run" <<'EOF'
import glob, json, sys
path = sorted(glob.glob(sys.argv[1] + "/**/summary.json", recursive=True))
if not path:
    sys.exit("no summary.json from DLIO")
m = json.load(open(path[-1]))["metric"]
au = m["train_au_percentage"]
rate = m["train_throughput_samples_per_second"]
print(",".join(f"{x:.3f}" for x in au), ",".join(f"{x:.3f}" for x in rate))
EOF
}

data_rel="datasets/$workload"
store_dir="$work/up/store/$data_rel"
mount_dir="$work/up/mnt/$data_rel"
echo "dlio.sh: $workload, $files files, $epochs epochs, 2 reader threads, batch 2, 0.05 s compute per step" >&2
if [ "$through_mount" = 1 ]; then
    start_up
    dlio "$work/local/$workload" gen-local generate
    dlio "$mount_dir" gen-mount generate
    drop_caches
    dlio "$work/local/$workload" local train
    dlio "$mount_dir" mount train
    local_src="$work/local/$workload"
else
    # The dataset goes into the store by DLIO itself; ferry has not run yet.
    mkdir -p "$store_dir"
    dlio "$store_dir" gen generate
    drop_caches
    dlio "$store_dir" local train
    start_up
    drop_caches
    dlio "$mount_dir" mount train
    local_src="$store_dir"
fi
stop_up

read -r local_au local_io < <(per_epoch local)
read -r mount_au mount_io < <(per_epoch mount)
in_store="$(find "$store_dir" -type f | wc -l)"
python3 - "$workload" "$files" "$epochs" "$through_mount" "$local_au" "$local_io" "$mount_au" "$mount_io" "$in_store" "$local_src" <<'EOF'
import json, sys
wl, files, epochs, through, lau, lio, mau, mio, in_store, src = sys.argv[1:]
f = lambda s: [float(x) for x in s.split(",")]
lau, lio, mau, mio = f(lau), f(lio), f(mau), f(mio)
print(f"{'epoch':>5} {'local AU %':>10} {'ferry AU %':>10} {'ratio':>6} {'local samples/s':>15} {'ferry samples/s':>15}")
for i, (a, b, c, d) in enumerate(zip(lau, mau, lio, mio), 1):
    print(f"{i:>5} {a:>10.2f} {b:>10.2f} {b / a:>6.3f} {c:>15.2f} {d:>15.2f}")
ratios = [b / a for a, b in zip(lau, mau)]
print(f"AU ratio mount/local: worst epoch {min(ratios):.3f}, first epoch {ratios[0]:.3f}")
print(json.dumps({
    "scenario": "dlio", "workload": wl, "files": int(files), "epochs": int(epochs),
    "dataset": "through the mount" if through == "1" else "generated in the store",
    "local_au_pct": lau, "mount_au_pct": mau, "local_samples_per_s": lio, "mount_samples_per_s": mio,
    "au_ratio_per_epoch": [round(r, 4) for r in ratios], "au_ratio_worst": round(min(ratios), 4),
    "files_in_store": int(in_store),
}))
EOF
