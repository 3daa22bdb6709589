#!/usr/bin/env bash
# demo.sh: the original's walkthrough on loopback. Three nodes in temporary folders
# (node1 joins node0, node2 joins node1), then a client asks node0 for every file and
# gets each node's files, byte-exact. Exits non-zero if anything did not arrive; stops
# every process it started on any exit.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --quiet
BIN="$PWD/target/release/tinyp2p"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export TINYP2P_PASSWORD=demo-secret # PW '-' keeps the password out of the process list

# start_node DIR [PEER...]: starts a node serving DIR on a free port; sets URL.
start_node() {
  local dir=$1 line=""
  shift
  (cd "$dir" && exec "$BIN" - server 127.0.0.1 0 "$@") 2>"$dir.log" &
  PIDS+=($!)
  for _ in $(seq 200); do
    line=$(grep -m1 '^listening on ' "$dir.log" || true)
    [ -n "$line" ] && break
    sleep 0.05
  done
  [ -n "$line" ] || { echo "demo: node in $dir did not start:" >&2; cat "$dir.log" >&2; exit 1; }
  URL=${line#listening on }
}

mkdir -p "$WORK"/node{0,1,2} "$WORK/client"
echo "hello from node0" >"$WORK/node0/file0"
printf 'CRLF text from node1\r\nline two\r\n' >"$WORK/node1/file1"
head -c 1048576 /dev/urandom >"$WORK/node1/photo.bin"
echo "grüße aus node2 ✓" >"$WORK/node2/file2"

start_node "$WORK/node0"; NODE0=$URL
start_node "$WORK/node1" "$NODE0"; NODE1=$URL
start_node "$WORK/node2" "$NODE1"; NODE2=$URL
echo "== three nodes: $NODE0 $NODE1 $NODE2"
for n in 0 1 2; do echo "-- node$n shares:"; ls -l "$WORK/node$n" | tail -n +2; done

echo "== client in an empty folder: tinyp2p - client $NODE0 '.'"
(cd "$WORK/client" && "$BIN" - client "$NODE0" '.')

echo "== the client's folder now holds:"
ls -l "$WORK/client" | tail -n +2
for n in 0 1 2; do
  for f in "$WORK/node$n"/*; do
    cmp "$f" "$WORK/client/$(basename "$f")" || { echo "demo: $(basename "$f") did not arrive intact" >&2; exit 1; }
  done
done
echo "== every file arrived byte-exact"
