#!/usr/bin/env bash
# swpatch demo: patch a running process and watch its output change.
#
# Run by `make demo` from the repository root, with SWPATCH set to the swpatch binary.
# Needs root (ptrace) and the fixtures (`make fixtures`). By hand:
#   SWPATCH=.build/debug/swpatch bash Fixtures/demo.sh
set -euo pipefail

: "${SWPATCH:?set SWPATCH to the swpatch binary (make demo does this)}"
FIXTURE=Fixtures/build/loop
PATCH=Fixtures/build/fix-compute.json
for f in "$SWPATCH" "$FIXTURE" "$PATCH"; do
  [ -e "$f" ] || { echo "demo: $f is missing; run 'make fixtures' and build swpatch first" >&2; exit 1; }
done

# A private state directory and daemon socket, so the demo never touches
# /var/lib/swpatch or a daemon already serving /run/swpatch. The first swpatch command
# starts the demo's own daemon; cleanup stops it by its pid file.
DEMO_DIR=$(mktemp -d)
chmod 755 "$DEMO_DIR"
export SWPATCH_STATE_DIR="$DEMO_DIR/state" SWPATCH_SOCKET="$DEMO_DIR/swpatchd.sock"
OUT=$(mktemp)
PID=""

cleanup() {
  # Only the fixture this script started, by its pid.
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if [ -f "$SWPATCH_STATE_DIR/swpatchd.pid" ]; then
    kill -TERM "$(cat "$SWPATCH_STATE_DIR/swpatchd.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$SWPATCH_SOCKET" ] || break; sleep 0.1; done
  fi
  rm -rf "$DEMO_DIR" "$OUT"
}
trap cleanup EXIT

heading() { printf '\n== %s\n' "$1"; }

heading "start the target: $FIXTURE 200 (prints compute(21) every 200 ms)"
"$FIXTURE" 200 >"$OUT" 2>&1 &
PID=$!
echo "target pid: $PID"
sleep 1

heading "before:"
tail -n 3 "$OUT"

heading "attach: $SWPATCH attach $PID $PATCH"
"$SWPATCH" attach "$PID" "$PATCH"
sleep 1

heading "after: (compute(21) now runs compute_v2 from libfix.so: 42 -> 63)"
tail -n 3 "$OUT"

heading "status: $SWPATCH status"
"$SWPATCH" status

heading "audit log: $SWPATCH log"
"$SWPATCH" log

heading "stop the target (SIGTERM)"
kill -TERM "$PID"
status=0
wait "$PID" || status=$?
PID=""
tail -n 1 "$OUT"
echo "target exited with status $status"

if tail -n 4 "$OUT" | grep -q 'compute=63'; then
  heading "demo ok: the running process switched to the replacement without a restart"
else
  heading "demo FAILED: compute=63 never appeared in the output" >&2
  exit 1
fi
