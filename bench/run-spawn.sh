#!/usr/bin/env bash
# Sandbox start-up: `warden run` against bubblewrap and gVisor's runsc, side by side in one
# run (see bench/spawn). Installs the peers from Debian when missing, builds warden as its
# release artefact is built (scripts/build-release.sh: static, not position-independent),
# and a static position-independent build too for comparison.
#
#   bench/run-spawn.sh [ITERATIONS]      (default 2000; runsc runs every 10th iteration)
#
# Needs root (or unprivileged user namespaces) and a quiet machine. Paste the Markdown table
# it prints into bench/RESULTS.md with the date and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-2000}

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v runsc >/dev/null || missing+=(runsc)
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y -qq "${missing[@]}"
fi

target_dir=${CARGO_TARGET_DIR:-target}
# The release executable as shipped (static, not position-independent), and for comparison a
# static position-independent build, in a target directory of its own (other flags would
# make the two builds evict each other's artefacts).
warden=$(scripts/build-release.sh)
pie=$(CARGO_TARGET_DIR="$target_dir/pie" WARDEN_PIE=1 scripts/build-release.sh)
cargo build --release -q -p warden-bench-spawn

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
# (each peer's version on its own: a failing `--version` must not print twice or stop us)
bwrap_version=$(bwrap --version 2>/dev/null || true)
runsc_version=$(runsc --version 2>/dev/null | head -1 || true)
echo "peers: ${bwrap_version:-bwrap missing}; ${runsc_version:-runsc missing}"
"$target_dir/release/warden-bench-spawn" \
    --iterations "$iterations" --runsc-every 10 \
    --warden "$warden" \
    --also "PIE build=$pie" \
    --markdown
