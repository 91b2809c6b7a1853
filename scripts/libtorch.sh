#!/usr/bin/env bash
# Fetches libtorch for builds with the `torch` feature (tch 0.26 binds
# libtorch 2.13.0 exactly) into ./.libtorch, which .cargo/config.toml names
# as LIBTORCH. PyPI has no CPU-only torch wheel, so this downloads the
# torch 2.13.0 wheel and extracts only what Rust links against: the C++
# headers and libtorch_cpu, libtorch, libc10 and libgomp. libtorch_cpu also
# needs the CUDA runtime and CUPTI libraries, which come from two small
# nvidia wheels. Safe to run again: a complete .libtorch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0"
CUDA_RUNTIME_VERSION="13.0.96"
CUPTI_VERSION="13.0.85"
dest="$PWD/.libtorch"

if [ -f "$dest/build-version" ] && [ "$(cat "$dest/build-version")" = "$TORCH_VERSION" ] \
    && [ -f "$dest/lib/libtorch_cpu.so" ] && [ -f "$dest/lib/libcudart.so.13" ]; then
    echo "libtorch.sh: libtorch $TORCH_VERSION already in $dest"
    exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v unzip >/dev/null 2>&1; then
    echo "libtorch.sh: installing unzip with apt-get"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq unzip
fi
if [ -x .venv/bin/pip ]; then
    pip=(.venv/bin/pip)
elif python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
else
    python3 -m venv .venv
    pip=(.venv/bin/pip)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "libtorch.sh: downloading torch $TORCH_VERSION (about 530 MB) and the CUDA runtime wheels"
"${pip[@]}" download -q --disable-pip-version-check --no-deps -d "$work" --only-binary=:all: \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"

rm -rf "$dest.partial"
mkdir -p "$dest.partial/lib" "$work/x"
torch_wheel="$(ls "$work"/torch-"$TORCH_VERSION"*.whl)"
unzip -q -o "$torch_wheel" 'torch/include/*' 'torch/lib/libtorch_cpu.so' 'torch/lib/libtorch.so' \
    'torch/lib/libc10.so' 'torch/lib/libgomp*' -d "$work/x"
mv "$work/x/torch/include" "$dest.partial/include"
mv "$work/x/torch/lib/"* "$dest.partial/lib/"
for wheel in "$work"/nvidia_cuda_runtime*.whl "$work"/nvidia_cuda_cupti*.whl; do
    unzip -q -o "$wheel" 'nvidia/*/lib/*.so*' -d "$work/x"
done
find "$work/x/nvidia" -name '*.so*' -exec mv {} "$dest.partial/lib/" \;
echo "$TORCH_VERSION" > "$dest.partial/build-version"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "libtorch.sh: libtorch $TORCH_VERSION in $dest ($(du -sh "$dest" | cut -f1))"
