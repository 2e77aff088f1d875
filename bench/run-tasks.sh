#!/usr/bin/env bash
# Tasks through `warden serve` (see bench/tasks): tasks per second through the API, the queue
# and real sandboxes with a scripted agent, the API's p50/p99 under that load, and the task
# store on SQLite against a throwaway PostgreSQL (end to end, and the store alone). Installs
# PostgreSQL and git from Debian when missing.
#
#   bench/run-tasks.sh [TASKS] [CLIENTS] [RUNNER] [EXTRA...]     (default 200 8 10)
#
# EXTRA goes to the benchmark as it is (for example `--quick`, `--store-tasks 5000`, or
# `--no-postgres`). Needs root (or unprivileged user namespaces and a delegated cgroup) and a
# quiet machine. Paste the Markdown tables it prints into bench/RESULTS.md with the date and
# the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-200}
clients=${2:-8}
runner=${3:-10}
target_dir=${CARGO_TARGET_DIR:-target}

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
missing=()
command -v git >/dev/null || missing+=(git)
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
if ((${#missing[@]})); then
    $sudo apt-get install -y -qq "${missing[@]}"
    # Debian's package may start a cluster of its own; the benchmark starts a throwaway one
    # and leaves no PostgreSQL running, so stop what the installation started.
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters -h | while read -r version cluster _; do
            $sudo pg_ctlcluster "$version" "$cluster" stop 2>/dev/null || true
        done
    fi
fi

# A run killed with SIGKILL leaves its throwaway cluster running (Ctrl-C and panics stop it
# themselves): stop any in /tmp/wbt-pg-* at the end.
stop_left_clusters() {
    for data in /tmp/wbt-pg-*/data; do
        [[ -f "$data/postmaster.pid" ]] || continue
        pg_ctl=$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)
        if [[ $(id -u) -eq 0 ]]; then
            su postgres -s /bin/sh -c "$pg_ctl -D $data -m immediate -w stop" >/dev/null 2>&1 || true
        else
            "$pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$(dirname "$data")"
    done
}
trap stop_left_clusters EXIT

cargo build --release -q -p warden -p warden-bench-tasks
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
echo "git: $(git --version)"
"$target_dir/release/warden-bench-tasks" --warden "$target_dir/release/warden" \
    --tasks "$tasks" --concurrency "$clients" --runner-concurrency "$runner" "${@:4}"
