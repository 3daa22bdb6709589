#!/usr/bin/env bash
# demo.sh: the original's walkthrough on loopback. Three nodes in temporary folders
# (node1 joins node0, node2 joins node1), a look at what the network offers, a client that
# fetches every file (checked byte-exact), and a short scripted session at the prompt of a
# fourth node. Exits non-zero if anything did not arrive; stops every process it started.
set -euo pipefail
cd "$(dirname "$0")"

echo "== tinyp2p demo: builds the release binary, starts three nodes on 127.0.0.1, lists and"
echo "   fetches their files with the client, then drives a node's shell. The first build"
echo "   takes about a minute; cargo's progress follows."
cargo build --release
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

mkdir -p "$WORK"/node{0,1,2,3} "$WORK/client"
echo "hello from node0" >"$WORK/node0/file0"
printf 'CRLF text from node1\r\nline two\r\n' >"$WORK/node1/file1"
head -c 1048576 /dev/urandom >"$WORK/node1/photo.bin"
echo "grüße aus node2 ✓" >"$WORK/node2/file2"

start_node "$WORK/node0"; NODE0=$URL
start_node "$WORK/node1" "$NODE0"; NODE1=$URL
start_node "$WORK/node2" "$NODE1"; NODE2=$URL
echo "== three nodes: $NODE0 $NODE1 $NODE2 (node0 said:)"
sed 's/^/   /' "$WORK/node0.log"
for n in 0 1 2; do echo "-- node$n shares:"; ls -l "$WORK/node$n" | tail -n +2; done

echo "== what the network offers: tinyp2p - list $NODE0"
"$BIN" - list "$NODE0"

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

echo "== a node with a prompt, its commands piped in: tinyp2p - shell 127.0.0.1 0 $NODE2"
echo "   (commands: peers / ls file / fetch photo / exit; on a terminal it shows a tinyp2p> prompt)"
printf 'peers\nls file\nfetch photo\nexit\n' | (cd "$WORK/node3" && "$BIN" - shell 127.0.0.1 0 "$NODE2") 2>"$WORK/node3.log"
cmp "$WORK/node1/photo.bin" "$WORK/node3/photo.bin" || { echo "demo: the shell's fetch failed" >&2; exit 1; }
echo "== the shell node fetched photo.bin into its own folder, byte-exact"
