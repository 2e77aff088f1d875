#!/usr/bin/env bash
# Reconcile throughput of `warden controller` (see bench/controller): SandboxClaims bound per
# second, warm (adopting a Ready pool member) and cold (a new Sandbox and pod), through the
# real controllers and kube client against warden-kube's in-memory API server.
#
#   bench/run-controller.sh [CLAIMS] [ROUNDS]     (default 200 3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p warden-bench-controller
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
"${CARGO_TARGET_DIR:-target}/release/warden-bench-controller" \
    --claims "${1:-200}" --rounds "${2:-3}" --markdown
