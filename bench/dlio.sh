#!/usr/bin/env bash
# MLPerf Storage's workload generator (DLIO), unmodified, on a ferry mount
# vs the same run on a local directory. DLIO generates its unet3d dataset
# through the mount (so the files go through ferry's write path to the
# store), then trains on it; the baseline does both in a local directory.
# Prints DLIO's accelerator utilization (AU) and I/O throughput for both and
# ends with one JSON line.
#
# Needs DLIO in a virtualenv (DLIO_VENV, default /tmp/dlio). Its PyPI
# package pins NVIDIA DALI, which installs only from NVIDIA's index, so:
#   python3 -m venv /tmp/dlio
#   /tmp/dlio/bin/pip install --no-deps dlio-benchmark
#   /tmp/dlio/bin/pip install Pillow PyYAML h5py mpi4py numpy omegaconf pandas \
#       psutil pydftracer==1.0.2 hydra-core tensorflow-cpu torch
# (mpi4py builds against libopenmpi-dev from apt.)
#
#   cargo build --release -p ferry && bench/dlio.sh [FILES] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
files="${1:-16}"
epochs="${2:-3}"
venv="${DLIO_VENV:-/tmp/dlio}"
ferry="$PWD/target/release/ferry"
[ -x "$venv/bin/dlio_benchmark" ] || { echo "dlio.sh: no DLIO in $venv (see the top of this script)" >&2; exit 1; }
[ -x "$ferry" ] || { echo "dlio.sh: build ferry first: cargo build --release -p ferry" >&2; exit 1; }

work="$(mktemp -d /tmp/ferry-dlio-XXXXXX)"
up_pid=""
cleanup() {
    [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$ferry" up --data "$work/up" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do
    grep -q "^ferry is up" "$work/up.log" 2>/dev/null && mountpoint -q "$work/up/mnt" && break
    sleep 0.2
done
mountpoint -q "$work/up/mnt" || { cat "$work/up.log" >&2; echo "dlio.sh: the mount did not come up" >&2; exit 1; }

# One DLIO run: generate the dataset in DIR, then train EPOCHS epochs on it.
run() {
    local dir="$1" out="$work/out-$2"
    mkdir -p "$out"
    (cd "$out" && "$venv/bin/dlio_benchmark" workload=unet3d_a100 \
        ++workload.dataset.data_folder="$dir" ++workload.dataset.num_files_train="$files" \
        ++workload.workflow.generate_data=True ++workload.workflow.train=True ++workload.workflow.checkpoint=False \
        ++workload.train.epochs="$epochs" ++workload.reader.read_threads=2 ++workload.reader.batch_size=2 \
        ++workload.train.computation_time=0.05 ++workload.output.folder="$out/run") >"$out/log" 2>&1 \
        || { tail -30 "$out/log" >&2; echo "dlio.sh: DLIO failed on $dir" >&2; exit 1; }
    local au io
    au="$(grep -o 'Training Accelerator Utilization \[AU\] (%): [0-9.]*' "$out/log" | tail -1 | awk '{print $NF}')"
    io="$(grep -o 'Training I/O Throughput (MB/second): [0-9.]*' "$out/log" | tail -1 | awk '{print $NF}')"
    echo "$au $io"
}

echo "dlio.sh: $files unet3d files, $epochs epochs, 2 reader threads, batch 2, 0.05 s compute per step" >&2
read -r local_au local_io < <(run "$work/local/unet3d" local)
read -r mount_au mount_io < <(run "$work/up/mnt/datasets/unet3d" mount)
stored="$(find "$work/up/store/datasets/unet3d" -name '*.npz' | wc -l)"
printf 'DLIO on local disk   AU %6.2f %%  I/O %8.1f MB/s\n' "$local_au" "$local_io"
printf 'DLIO on ferry mount  AU %6.2f %%  I/O %8.1f MB/s  (%s generated files in the store)\n' "$mount_au" "$mount_io" "$stored"
ratio="$(awk -v m="$mount_au" -v l="$local_au" 'BEGIN { printf "%.3f", m / l }')"
echo "AU ratio mount/local $ratio"
printf '{"scenario":"dlio","workload":"unet3d","files":%s,"epochs":%s,"local_au_pct":%s,"mount_au_pct":%s,"local_io_mbps":%s,"mount_io_mbps":%s,"au_mount_over_local":%s,"files_in_store":%s}\n' \
    "$files" "$epochs" "$local_au" "$mount_au" "$local_io" "$mount_io" "$ratio" "$stored"
