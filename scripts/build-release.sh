#!/usr/bin/env bash
# Builds warden's release executable the way it is shipped, and prints its path:
#
#   - statically linked: no dynamic loader or symbol binding at start;
#   - not position-independent: nothing to relocate at start. A position-independent build
#     rewrites about 240 pages of relocated data (copy-on-write faults) on every start,
#     about 0.5 ms of each `warden run` on the benchmark machine (bench/RESULTS.md).
#     docs/security-model.md says what that gives up (ASLR of the executable image).
#
#   scripts/build-release.sh [CARGO ARGS...]
#   WARDEN_PIE=1 scripts/build-release.sh     a static, position-independent build instead
#
# The explicit --target keeps these flags off build scripts and proc macros, which the
# compiler loads as shared objects and which must stay position-independent.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(rustc -vV | sed -n 's/^host: //p')
flags="-C target-feature=+crt-static"
case "${WARDEN_PIE:-0}" in
    0) flags="$flags -C relocation-model=static" ;;
    1) ;;
    *)
        echo "WARDEN_PIE must be 0 or 1, not '${WARDEN_PIE}'" >&2
        exit 64
        ;;
esac
RUSTFLAGS="$flags ${RUSTFLAGS:-}" cargo build --release -q -p warden --target "$target" "$@"
echo "${CARGO_TARGET_DIR:-target}/$target/release/warden"
