#!/usr/bin/env bash
# Metadata at dataset scale: walks and small-file reads through `ferry up`'s
# mount against the same tree read locally.
#
#   bench/metadata.sh [DIRS] [FILES_PER_DIR] [SMALL_FILES]
#
# Builds, directly in `ferry up`'s store (as another tool would put a
# dataset there), a tree of DIRS x FILES_PER_DIR files of 4 KiB (default
# 200 x 1000 = 200,000 files, ImageFolder-shaped) and SMALL_FILES files of
# 112 KiB (default 20,000, in folders of 1,000). Then, each against the
# store's own directory (local) and the mount:
#
#   - `find` and `ls -lR` of the tree: cold (page cache dropped; for the
#     mount, a node that never listed the tree) and warm (run again);
#     `find` again after the node restarted (its listings come from disk);
#   - shuffled whole-file reads of the small files with 8 threads, files/s,
#     cold and warm.
#
# Prints a table with the ratios mount/local (time ratios for walks, rate
# ratios for reads) and one JSON line. Needs root (it drops the page cache)
# and a release build: cargo build --release -p ferry
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in -h|--help) sed -n '2,21p' "$0"; exit 0 ;; esac
dirs="${1:-200}"
per_dir="${2:-1000}"
small="${3:-20000}"
threads=8
ferry="$PWD/target/release/ferry"
[ -x "$ferry" ] || { echo "metadata.sh: build ferry first: cargo build --release -p ferry" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "metadata.sh: run as root (it drops the page cache)" >&2; exit 1; }

me="metadata.sh"
keep="${META_KEEP:-}"
# shellcheck source=bench/up.sh
. bench/up.sh

# Seconds taken by a command (its output discarded).
timed() {
    local t0 t1
    t0="$(date +%s.%N)"
    "$@" >/dev/null
    t1="$(date +%s.%N)"
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}
walk_find() { find "$1" | wc -l; }
walk_ls() { ls -lR "$1"; }

# Files per second of shuffled whole-file reads of the files listed in $2, under root $1.
reads() {
    python3 - "$1" "$2" "$threads" <<'EOF'
import concurrent.futures, sys, time
root, listing, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = open(listing).read().split("\n")[:-1]
def read(name):
    with open(f"{root}/{name}", "rb") as f:
        n = 0
        while b := f.read(1 << 20):
            n += len(b)
        return n
t0 = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    total = sum(pool.map(read, names, chunksize=64))
took = time.perf_counter() - t0
expected = 112 * 1024 * len(names)
if total != expected:
    sys.exit(f"read {total} bytes, expected {expected}")
print(f"{len(names) / took:.1f}")
EOF
}

start_up
stop_up
store="$work/up/store/datasets/meta"
echo "metadata.sh: writing $((dirs * per_dir)) files of 4 KiB and $small of 112 KiB into the store" >&2
python3 - "$store" "$dirs" "$per_dir" "$small" "$work/order" <<'EOF'
import os, random, sys
store, dirs, per_dir, small, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(7)
tiny = os.urandom(4096)
for d in range(dirs):
    os.makedirs(f"{store}/tree/class{d:04d}", exist_ok=True)
    for f in range(per_dir):
        with open(f"{store}/tree/class{d:04d}/img{f:06d}.jpg", "wb") as out:
            out.write(tiny)
names = []
blob = os.urandom(112 * 1024 + 4096)
for i in range(small):
    d = f"small/part{i // 1000:03d}"
    os.makedirs(f"{store}/{d}", exist_ok=True)
    with open(f"{store}/{d}/s{i:06d}.bin", "wb") as out:
        k = rng.randrange(4096)
        out.write(blob[k:k + 112 * 1024])
    names.append(f"{d}/s{i:06d}.bin")
rng.shuffle(names)
open(order, "w").write("".join(n + "\n" for n in names))
EOF
mnt="$work/up/mnt/datasets/meta"

declare -A t
drop_caches
t[local_find_cold]="$(timed walk_find "$store/tree")"
t[local_find_warm]="$(timed walk_find "$store/tree")"
drop_caches
t[local_ls_cold]="$(timed walk_ls "$store/tree")"
t[local_ls_warm]="$(timed walk_ls "$store/tree")"
drop_caches
t[local_read_cold]="$(reads "$store" "$work/order")"
t[local_read_warm]="$(reads "$store" "$work/order")"

# A node that never listed the tree.
rm -rf "$work/up/cache"
drop_caches
start_up
t[mount_find_cold]="$(timed walk_find "$mnt/tree")"
t[mount_find_warm]="$(timed walk_find "$mnt/tree")"
t[mount_ls_warm]="$(timed walk_ls "$mnt/tree")"
stop_up
# Restarted: listings from the node's disk, page cache dropped.
drop_caches
start_up
t[mount_find_restarted]="$(timed walk_find "$mnt/tree")"
stop_up
rm -rf "$work/up/cache"
drop_caches
start_up
t[mount_ls_cold]="$(timed walk_ls "$mnt/tree")"
t[mount_read_cold]="$(reads "$mnt" "$work/order")"
t[mount_read_warm]="$(reads "$mnt" "$work/order")"
stop_up

count_local="$(find "$store/tree" -type f | wc -l)"
args=()
for k in "${!t[@]}"; do args+=("$k=${t[$k]}"); done
python3 - "$count_local" "$threads" "${args[@]}" <<'EOF'
import json, sys
files, threads = int(sys.argv[1]), int(sys.argv[2])
t = {k: float(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
print(f"tree: {files} files; small-file reads: {threads} threads, shuffled")
print(f"{'':24} {'local':>10} {'ferry':>10} {'ratio':>7}")
rows = {}
for what in ["find_cold", "find_warm", "ls_cold", "ls_warm"]:
    l, m = t[f"local_{what}"], t[f"mount_{what}"]
    rows[what] = m / l
    print(f"{what + ' (s)':24} {l:>10.3f} {m:>10.3f} {m / l:>7.2f}")
print(f"{'find_restarted (s)':24} {'':>10} {t['mount_find_restarted']:>10.3f}")
for what in ["read_cold", "read_warm"]:
    l, m = t[f"local_{what}"], t[f"mount_{what}"]
    rows[what] = m / l
    print(f"{what + ' (files/s)':24} {l:>10.1f} {m:>10.1f} {m / l:>7.2f}")
print("ratios: walks are time mount/local (goal warm <= 1.5), reads are rate mount/local (goal warm >= 0.8)")
print(json.dumps({"scenario": "metadata", "files": files, "threads": threads, "seconds_or_rate": t,
                  "ratios": {k: round(v, 3) for k, v in rows.items()}}))
EOF
