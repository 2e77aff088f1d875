#!/usr/bin/env bash
# Sandboxes as a service through `warden serve`'s HTTP API (see bench/sandbox): claim from a
# warm pool plus the first exec, exec round trip in a warm sandbox against plain fork+exec,
# 1,000 concurrent idle sandboxes (creation rate, memory per sandbox), cold create.
#
#   bench/run-sandbox.sh [CLAIMS] [EXECS] [IDLE] [COLD]     (default 200 1000 1000 50)
#
# Needs root (or unprivileged user namespaces and a delegated cgroup) and a quiet machine.
# Paste the Markdown table it prints into bench/RESULTS.md with the date and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
claims=${1:-200}
execs=${2:-1000}
idle=${3:-1000}
cold=${4:-50}
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p warden -p warden-bench-sandbox
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
"$target_dir/release/warden-bench-sandbox" --warden "$target_dir/release/warden" \
    --claims "$claims" --execs "$execs" --idle "$idle" --cold "$cold" --markdown
