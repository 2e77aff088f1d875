#!/usr/bin/env bash
# Cluster router: `warden router` against nginx routing on the same header, side by side in
# one run. A trivial backend (nginx answering `200 ok`), then at concurrency 50 with wrk:
#   direct    wrk -> backend                          (the floor)
#   warden    wrk -> warden router -> backend         (X-Sandbox-Pod-IP routing, --no-watch)
#   nginx     wrk -> nginx -> backend                 (map $http_x_sandbox_id -> upstream,
#                                                       keepalive to the upstream)
# Both routers strip Authorization, set X-Forwarded-For/-Host/-Proto and keep pooled
# HTTP/1.1 connections to the backend. Installs nginx and wrk from Debian when missing.
#
#   bench/router/run.sh [SECONDS] [ROUNDS] [CONNECTIONS]      (defaults 10, 3, 50)
#
# WARDEN_BIN=path/to/warden skips the release build and measures that binary.
#
# CPU placement (2-core machine): each router runs alone on ROUTER_CPUS (default 0) with one
# worker (nginx worker_processes 1; warden sizes its runtime to its CPU affinity: one CPU,
# one thread), while wrk and the backend share LOAD_CPUS (default 1). PIN=0 lets everything
# float instead (nginx then gets worker_processes 1 still; warden one thread per CPU).
# Rounds rotate the order of the contenders; the table gives the median round of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
conns=${3:-50}
pin=${PIN:-1}
router_cpus=${ROUTER_CPUS:-0}
load_cpus=${LOAD_CPUS:-1}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y -qq "${missing[@]}"
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -n ${WARDEN_BIN:-} ]]; then
    warden=$WARDEN_BIN # an already built release binary
else
    cargo build --release -q -p warden
    warden="${CARGO_TARGET_DIR:-target}/release/warden"
fi

if [[ $pin == 1 && $(nproc) -ge 2 ]]; then
    on_router=(taskset -c "$router_cpus")
    on_load=(taskset -c "$load_cpus")
else
    on_router=()
    on_load=()
fi

# The router refuses loopback pod IPs (as upstream does): reach the backend on this host's
# non-loopback address.
host_ip=$(ip -4 route get 192.0.2.200 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}' | head -1)
[[ -n $host_ip ]] || host_ip=$(ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')
[[ -n $host_ip ]] || { echo "no non-loopback IPv4 address on this host" >&2; exit 1; }

backend_port=18090
warden_port=18080
nginx_port=18081
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

user_line=""
[[ $(id -u) -eq 0 ]] && user_line="user root;"
common="$user_line
worker_processes 1;
error_log $work/error.log warn;
events { worker_connections 4096; }"
http_common="access_log off;
    client_body_temp_path $work/body; proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
    keepalive_requests 1000000; keepalive_timeout 300s;"

cat >"$work/backend.conf" <<CONF
$common
pid $work/backend.pid;
http {
    $http_common
    server {
        listen $backend_port reuseport;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
CONF

cat >"$work/router.conf" <<CONF
$common
pid $work/router.pid;
http {
    $http_common
    map \$http_x_sandbox_id \$sandbox_upstream {
        default "";
        bench   sandbox_bench;
    }
    upstream sandbox_bench {
        server $host_ip:$backend_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$nginx_port reuseport;
        location / {
            if (\$sandbox_upstream = "") { return 502; }
            proxy_pass http://\$sandbox_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$proxy_host;
            proxy_set_header Authorization "";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto http;
            proxy_buffering off;
        }
    }
}
CONF

"${on_load[@]}" "$nginx_bin" -p "$work" -c "$work/backend.conf" -g 'daemon off;' &
pids+=($!)
"${on_router[@]}" "$nginx_bin" -p "$work" -c "$work/router.conf" -g 'daemon off;' &
pids+=($!)
WARDEN_LOG=warn "${on_router[@]}" "$warden" router --listen "127.0.0.1:$warden_port" --no-watch \
    --backend-timeout 30s 2>"$work/warden.log" &
pids+=($!)

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1:$2" >&2
    cat "$work/error.log" "$work/warden.log" >&2 || true
    exit 1
}
wait_port "$host_ip" $backend_port
wait_port 127.0.0.1 $warden_port
wait_port 127.0.0.1 $nginx_port

headers=(-H "X-Sandbox-ID: bench" -H "X-Sandbox-Pod-IP: $host_ip" -H "X-Sandbox-Port: $backend_port"
    -H "Authorization: Bearer not-forwarded")
url_of() {
    case $1 in
    direct) echo "http://$host_ip:$backend_port/" ;;
    warden) echo "http://127.0.0.1:$warden_port/" ;;
    nginx) echo "http://127.0.0.1:$nginx_port/" ;;
    esac
}

# Every contender must answer 200 with the backend's body before anything is measured.
for c in direct warden nginx; do
    body=$(curl -sf -H "X-Sandbox-ID: bench" -H "X-Sandbox-Pod-IP: $host_ip" \
        -H "X-Sandbox-Port: $backend_port" "$(url_of $c)") || { echo "$c does not answer" >&2; exit 1; }
    [[ $body == ok ]] || { echo "$c answered $body" >&2; exit 1; }
done

# wrk's output -> "req_per_s p50_ms p99_ms errors"
parse() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { v = $i; sub(/,/, "", v); err += v } }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err }
    '
}

# The machine may be shared (builds, other benchmarks): before each measurement, wait (up to
# QUIET_WAIT seconds, default 300) for a second in which the CPUs are at least 95% idle, and
# say when it never came.
cpu_busy_pct() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local total=0 i
    for ((i = 1; i < ${#a[@]}; i++)); do total=$((total + b[i] - a[i])); done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}
wait_quiet() {
    local deadline=$((SECONDS + ${QUIET_WAIT:-300})) busy
    while :; do
        busy=$(cpu_busy_pct)
        ((busy <= 5)) && return 0
        if ((SECONDS >= deadline)); then
            echo "warning: the machine stayed busy (${busy}% of CPU used by others); measuring anyway" >&2
            return 0
        fi
    done
}

contenders=(direct warden nginx)
for c in "${contenders[@]}"; do
    "${on_load[@]}" wrk -t1 -c"$conns" -d2s "${headers[@]}" "$(url_of "$c")" >/dev/null
done
: >"$work/results"
for ((r = 0; r < rounds; r++)); do
    for ((i = 0; i < ${#contenders[@]}; i++)); do
        c=${contenders[$(((i + r) % ${#contenders[@]}))]}
        wait_quiet
        line=$("${on_load[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency "${headers[@]}" "$(url_of "$c")" | parse)
        echo "$c $line" >>"$work/results"
        echo "round $((r + 1)) $c: $line (req/s p50_ms p99_ms errors)" >&2
    done
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(date -u +%Y-%m-%d)"
echo "peer: $("$nginx_bin" -v 2>&1); load: $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), 1 thread, $conns connections, ${secs}s x $rounds rounds"
if ((${#on_router[@]})); then
    echo "cpus: routers on $router_cpus; wrk and backend on $load_cpus"
else
    echo "cpus: not pinned"
fi
# The median round of each contender (by req/s), and ratios.
awk -v go_rps=5800 -v go_p99=22 '
    { n[$1]++; rps[$1, n[$1]] = $2; p50[$1, n[$1]] = $3; p99[$1, n[$1]] = $4; err[$1] += $5 }
    END {
        split("direct warden nginx", order, " ")
        for (k = 1; k <= 3; k++) {
            c = order[k]; m = n[c]
            for (i = 1; i <= m; i++) idx[i] = i
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                if (rps[c, idx[j]] < rps[c, idx[i]]) { t = idx[i]; idx[i] = idx[j]; idx[j] = t }
            mid = idx[int((m + 1) / 2)]
            R[c] = rps[c, mid]; P50[c] = p50[c, mid]; P99[c] = p99[c, mid]
            lo[c] = rps[c, idx[1]]; hi[c] = rps[c, idx[m]]
        }
        print "| contender | req/s (median) | range | p50 ms | p99 ms | errors |"
        print "|---|---:|---:|---:|---:|---:|"
        for (k = 1; k <= 3; k++) {
            c = order[k]
            printf "| %s | %d | %d-%d | %.3f | %.3f | %d |\n", c, R[c], lo[c], hi[c], P50[c], P99[c], err[c]
        }
        printf "\nwarden vs nginx: %.2fx req/s, p50 %.2fx, p99 %.2fx (below 1 is faster)\n", R["warden"] / R["nginx"], P50["warden"] / P50["nginx"], P99["warden"] / P99["nginx"]
        printf "warden vs the Go router (5,800 req/s, p99 22 ms published): %.1fx req/s, p99 %.1fx lower\n", R["warden"] / go_rps, go_p99 / P99["warden"]
        printf "warden vs target (>= 58,000 req/s, p99 <= 2 ms): %s req/s, %s p99\n", (R["warden"] >= 58000 ? "met" : "NOT met"), (P99["warden"] <= 2 ? "met" : "NOT met")
    }
' "$work/results"
