#!/usr/bin/env bash
# f16 products on cooperative matrices (tensor cores), tested on a CPU.
#
#   scripts/cmma-check.sh [ROOT]
#
# The core's `vulkan` feature compiles the GPU kernels to SPIR-V (CubeCL's compiler) instead of
# WGSL, and where the Vulkan device reports f16 cooperative matrices the f16 products run on
# them (`kernels::gpu::matmul_cmma_kernel`). Debian 12's Mesa (22.3) has none, and its lavapipe
# crashes on SPIR-V; Mesa 26's lavapipe (Debian 13's backports) has 8 x 8 ones. So this makes a
# minimal Debian 13 root in ROOT once (debootstrap, then that Mesa; default
# $CARGO_TARGET_DIR/lavapipe-trixie, about 0.7 GB), builds crates/dmoerm's kernel tests and
# parity tests with `vulkan`, and runs them with that root's loader, libraries and lavapipe (no
# chroot: the executables run as they are, on the newer glibc), with the cooperative matrices
# forced on (DMOERM_GPU_CMMA=1: a software adapter runs without them otherwise, and the f16 test
# fails where the device has none): the kernel tests, then every parity fixture against
# PyTorch (the f16 ones on the cooperative matrices), with the barrier-free kernels and with the
# tiled ones. Needs root (debootstrap, chroot for apt) the first time, and Debian's package
# registry.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
root="${1:-$target/lavapipe-trixie}"

if [ ! -e "$root/.ready" ]; then
    command -v debootstrap >/dev/null || { echo "cmma-check: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
    rm -rf "$root"
    debootstrap --variant=minbase --include=libvulkan1 trixie "$root" http://deb.debian.org/debian >"$target/cmma-check-debootstrap.log"
    echo 'deb http://deb.debian.org/debian trixie-backports main' >"$root/etc/apt/sources.list.d/backports.list"
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie-backports mesa-vulkan-drivers >/dev/null'
    touch "$root/.ready"
fi
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
lavapipe="$root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
[ -e "$lavapipe" ] || { echo "cmma-check: no lavapipe in $root" >&2; exit 1; }
# lavapipe's manifest, pointing at the root's driver (the root's own names the host's path)
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lavapipe\"#" \
    "$root/usr/share/vulkan/icd.d/lvp_icd.json" >"$root/lvp.json"

# the two test executables, from cargo's JSON messages
built="$(mktemp)"
trap 'rm -f "$built"' EXIT
cargo test --locked -p dmoerm --features vulkan,burn/autodiff --lib --test parity --no-run \
    --message-format=json-render-diagnostics >"$built"
paths="$(python3 scripts/executables.py "$built" dmoerm parity)"
{ read -r lib; read -r parity; } <<<"$paths"

on_lavapipe() {
    XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" VK_DRIVER_FILES="$root/lvp.json" DMOERM_REPO_ROOT="$PWD" \
        DMOERM_GPU_CMMA=1 "$root/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$@"
}
echo "cmma-check: lavapipe of Mesa $(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' mesa-vulkan-drivers)"
on_lavapipe "$lib" kernels::gpu
on_lavapipe "$parity"
DMOERM_GPU_TILED=1 on_lavapipe "$parity"
