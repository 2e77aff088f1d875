#!/usr/bin/env bash
# Egress proxy: warden's proxy against squid with the same allowlist, side by side in one
# run (see bench/egress). Installs squid from Debian when missing.
#
#   bench/run-egress.sh [REQUESTS] [GIB] [TUNNELS] [ROUNDS] [EXTRA...]
#
# Defaults 5000, 1, 1000, 5. EXTRA goes to the benchmark as it is, for example
# `--also before=/path/to/an/older/warden-bench-egress` to measure an earlier build of
# warden's proxy in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v squid >/dev/null || [ -x /usr/sbin/squid ] || {
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y -qq squid
}
cargo build --release -q -p warden-bench-egress
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
echo "peer: $(/usr/sbin/squid -v | head -1)"
"${CARGO_TARGET_DIR:-target}/release/warden-bench-egress" \
    --requests "${1:-5000}" --gib "${2:-1}" --tunnels "${3:-1000}" --rounds "${4:-5}" \
    --markdown "${@:5}"
