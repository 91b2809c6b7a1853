# Shared by the benchmark scripts: a `ferry up` stack in a scratch
# directory. Source it after setting `me` (the script's name), `ferry` (the
# binary) and `keep` (non-empty: leave the scratch directory behind).
# Sets `work`; defines start_up, stop_up and drop_caches.

work="$(mktemp -d "/tmp/ferry-$me-XXXXXX")"
up_pid=""
stop_up() {
    if [ -n "$up_pid" ]; then
        kill -INT "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
        up_pid=""
    fi
}
cleanup() {
    stop_up
    if [ -n "$keep" ]; then echo "$me: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

start_up() {
    # shellcheck disable=SC2086 # FERRY_UP_ARGS: extra flags, split on spaces
    "$ferry" up --data "$work/up" ${FERRY_UP_ARGS:-} >>"$work/up.log" 2>&1 &
    up_pid=$!
    for _ in $(seq 150); do
        mountpoint -q "$work/up/mnt" && grep -q "^ferry is up" "$work/up.log" 2>/dev/null && return 0
        sleep 0.2
    done
    cat "$work/up.log" >&2
    echo "$me: the mount did not come up" >&2
    exit 1
}
