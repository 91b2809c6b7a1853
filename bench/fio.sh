#!/usr/bin/env bash
# fio through a ferry mount vs the same file on local disk, warm data.
#
#   bench/fio.sh [FERRY_BINARY]
#
# Starts `ferry up` in a temporary directory, puts a 1 GiB file in its store,
# reads it twice through the mount (the second open is served from the local
# copy by FUSE passthrough), and runs fio sequential 1 MiB and random 4 KiB
# reads on: the mount (local copies on), a second mount with local copies
# off (every read goes to the cache node), and the file on local disk.
# All runs read warm data (--invalidate=0: fio would otherwise drop the
# local file from the page cache first). Prints a table and ends with one
# JSON line. Needs fio and FUSE.
set -euo pipefail
FERRY="${1:-$(dirname "$0")/../target/release/ferry}"
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }
DIR="$(mktemp -d /tmp/ferry-fio.XXXXXX)"
PORT=$((20000 + RANDOM % 20000))
cleanup() {
    [ -n "${MOUNT2:-}" ] && kill "$MOUNT2" 2>/dev/null || true
    [ -n "${UP:-}" ] && kill -INT "$UP" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR/data/store/datasets"
head -c 1G /dev/urandom > "$DIR/data/store/datasets/fio.bin"
FERRY_LOG=warn "$FERRY" up --data "$DIR/data" --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$((PORT + 1))" > "$DIR/up.log" 2>&1 &
UP=$!
for _ in $(seq 100); do grep -q "^  mount" "$DIR/up.log" 2>/dev/null && break; sleep 0.1; done
grep -q "^  mount" "$DIR/up.log" || { cat "$DIR/up.log"; echo "ferry up did not mount" >&2; exit 1; }
mkdir -p "$DIR/mnt2"
FERRY_LOG=warn "$FERRY" mount --config "$DIR/data/client.toml" --local-copies 0 --staging "$DIR/staging2" "$DIR/mnt2" &
MOUNT2=$!
for _ in $(seq 100); do mountpoint -q "$DIR/mnt2" && break; sleep 0.1; done

M1="$DIR/data/mnt/datasets/fio.bin"
M2="$DIR/mnt2/datasets/fio.bin"
L="$DIR/data/store/datasets/fio.bin"
cat "$M1" > /dev/null; sleep 3; cat "$M1" > /dev/null   # first read makes the local copy
cat "$M2" > /dev/null; cat "$L" > /dev/null               # warm the node's cache and the page cache

run() { # file rw bs -> MB/s
    fio --name=r --filename="$1" --readonly --rw="$2" --bs="$3" --ioengine=psync --invalidate=0 --size=1G \
        --time_based --runtime=5 --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"]/1e6)'
}
S1=$(run "$M1" read 1M); S2=$(run "$M2" read 1M); SL=$(run "$L" read 1M)
R1=$(run "$M1" randread 4k); R2=$(run "$M2" randread 4k); RL=$(run "$L" randread 4k)
python3 - "$S1" "$S2" "$SL" "$R1" "$R2" "$RL" <<'PY'
import json, sys
s1, s2, sl, r1, r2, rl = map(float, sys.argv[1:])
print(f"{'fio, warm 1 GiB file':<38}{'MB/s':>10}{'vs local':>10}")
for name, v, base in [("seq 1 MiB, mount (local copies)", s1, sl), ("seq 1 MiB, mount (no local copies)", s2, sl), ("seq 1 MiB, local disk", sl, sl),
                      ("rand 4 KiB, mount (local copies)", r1, rl), ("rand 4 KiB, mount (no local copies)", r2, rl), ("rand 4 KiB, local disk", rl, rl)]:
    print(f"{name:<38}{v:>10.1f}{v / base:>10.3f}")
print(json.dumps({"scenario": "fio", "seq_mount_mbps": s1, "seq_mount_nocopy_mbps": s2, "seq_local_mbps": sl,
                  "seq_ratio": s1 / sl, "seq_nocopy_ratio": s2 / sl, "rand_mount_mbps": r1, "rand_mount_nocopy_mbps": r2,
                  "rand_local_mbps": rl, "rand_ratio": r1 / rl, "rand_nocopy_ratio": r2 / rl}))
PY
