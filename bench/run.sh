#!/usr/bin/env bash
# tinyp2p benchmark: the targets of issue 3, measured side by side in one run.
#
#   bash bench/run.sh                  # full run (a few minutes), writes bench/RESULTS.md
#   BENCH_QUICK=1 bash bench/run.sh    # smoke run: small sizes, prints the table only
#
# What it does:
#   1. builds the release binary (cargo build --release -> target/release/tinyp2p);
#   2. installs nginx, wrk and GNU time with apt-get when one is missing (needs root);
#   3. makes all its data in a mktemp -d folder, removed on exit, and kills every process
#      it started on exit (normal end, error or Ctrl-C);
#   4. runs, all on 127.0.0.1 with free ports (tinyp2p and the Python peer use port 0):
#      A. one 256 MiB text file, one node, one client: tinyp2p node + tinyp2p client vs
#         nginx (sendfile on) + `curl -o file`; MB/s of each, their ratio, and the peak RSS
#         of the tinyp2p client (/usr/bin/time %M) and server (VmHWM after the transfers);
#      B. one 64 MiB text file: tinyp2p node + client vs the original program (the faithful
#         Python 3 port tests/peer.py, node + client); also the Python client's peak RSS;
#      C. 999 files of 1 KiB on three nodes (333 each, node1 joins node0, node2 joins
#         node1), one client run fetching everything (pattern `.`), tinyp2p vs Python;
#      D. wrk, 2 threads, 64 connections, posting a mode-1 call (pattern `file`, valid
#         token) to one node with 100 files: tinyp2p node vs Python node; req/s and errors
#         (non-2xx responses + socket errors + 200 answers that are not the listing, the
#         last counted by a Lua response() hook);
#      Every fetched file is checked against its original (cmp / count + checksum), and
#      the mode-1 answer is checked to be the listing (not a fault, not <boolean>0).
#      Rows A-C run BENCH_RUNS times (default 3, tinyp2p and baseline interleaved) and
#      report the median; timings use Python's monotonic clock around the process.
#   5. prints a markdown table (workload | tinyp2p | baseline | ratio | target | met?) and,
#      for a full run, writes it to bench/RESULTS.md with the machine, date and command.
#
# Environment:
#   BENCH_QUICK=1     16 MiB / 8 MiB files, 99 small files, 3 s of wrk, 1 run per row
#   BENCH_RUNS=N      runs per row A-C (default 3, quick 1)
#   BENCH_RESULTS=F   where to write the results (default bench/RESULTS.md; a quick run
#                     writes nothing unless this is set)
#   TINYP2P_BIN=PATH  benchmark this binary instead of building target/release/tinyp2p
#   BENCH_KEEP=1      keep the temp folder (data, node logs, wrk output) for a look after
#   BENCH_RUN_LIMIT=S kill a client run after S seconds (default 600) and count it failed
#
# Units: MB = 10^6 bytes (throughput and RSS). Exit status: 0 when every step ran and every
# transfer was byte-exact (targets met or not), 1 when something failed (see the table and
# the "failures" list), other codes for setup errors.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER_PY="$ROOT/tests/peer.py"
PW=bench-secret
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    BIG_MIB=16 MED_MIB=8 SMALL_TOTAL=99 WRK_SECS=3 DEFAULT_RUNS=1
else
    BIG_MIB=256 MED_MIB=64 SMALL_TOTAL=999 WRK_SECS=10 DEFAULT_RUNS=3
fi
RUNS=${BENCH_RUNS:-$DEFAULT_RUNS}
SMALL_PER_NODE=$((SMALL_TOTAL / 3))
SMALL_TOTAL=$((SMALL_PER_NODE * 3))
if [[ $QUICK == 1 ]]; then
    RESULTS=${BENCH_RESULTS:-}
else
    RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
fi

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 3
}

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[[ -x /usr/bin/time ]] || need+=(time)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    log "installing missing tools: ${need[*]}"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
command -v python3 >/dev/null 2>&1 || die "python3 is needed (the baseline and the timer)"
# The real interpreter, not a pyenv-style shim: the baseline pays no wrapper start-up.
PY=$(python3 -c 'import sys; print(sys.executable)')
[[ -f $PEER_PY ]] || die "missing $PEER_PY"

# ---------------------------------------------------------------- build
if [[ -n ${TINYP2P_BIN:-} ]]; then
    BIN=$TINYP2P_BIN
    log "using TINYP2P_BIN=$BIN (no build)"
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tinyp2p
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tinyp2p-bench.XXXXXX")
PIDS=()

stop_pid() { # TERM, then KILL after 5 s; reaps the process
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_all() { # stops every background process started so far
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$TMP/logs"

# A timer around one process: monotonic clock, start-up of the timer itself not counted.
cat >"$TMP/timer.py" <<'EOF'
import subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.call(cmd)
t1 = time.monotonic()
with open(out, "w") as f:
    f.write("%.6f\n" % (t1 - t0))
sys.exit(rc)
EOF

# Printable ASCII text with some &, < and > (about 1% of the bytes), made fast.
cat >"$TMP/gen.py" <<'EOF'
import os, random, sys

WORDS = ["the", "of", "and", "to", "in", "is", "peer", "node", "file", "tinyp2p", "alpha",
         "beta", "gamma", "delta", "hello", "world", "42", "3.14", "x", "if", "then",
         "(quoted)", "'single'", '"double"', "path/to", "a=b;", "#hash", "50%",
         "&", "<", ">", "a&b", "<tag>", "x>y"]
WEIGHTS = [10] * 28 + [1] * 6

def text(rng, size):
    out, n = [], 0
    while n < size:
        words = rng.choices(WORDS, WEIGHTS, k=min(12 * 4096, 12 * (size // 48 + 2)))
        chunk = "\n".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12)) + "\n"
        out.append(chunk)
        n += len(chunk)
    data = "".join(out).encode("ascii")[:size]
    return data[:-1] + b"\n"

if sys.argv[1] == "big":  # big PATH MIB SEED: MIB blocks of 1 MiB, each one rotated
    path, mib, rng = sys.argv[2], int(sys.argv[3]), random.Random(int(sys.argv[4]))
    block = text(rng, 1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            r = (i * 7919) % len(block)
            f.write(block[r:] + block[:r])
else:  # small DIR PREFIX COUNT SIZE SEED
    d, prefix, count, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(int(sys.argv[6]))
    for i in range(count):
        with open(os.path.join(d, "%s%03d.txt" % (prefix, i)), "wb") as f:
            f.write(text(rng, size))
EOF

# ---------------------------------------------------------------- helpers
FAILURES=()
fail() { # fail TEXT: records a failed step (multi-line stderr is folded into one line)
    local msg=$*
    msg=${msg//$'\n'/ | }
    FAILURES+=("$msg")
    log "FAILED: $msg"
}

token() { # token URL
    "$PY" -c 'import hmac, sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), "md5").hexdigest())' "$PW" "$1"
}

median() { # median of the arguments (the lower one for an even count)
    printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"
}

calc() { # calc 'awk expression' -> printed value
    awk "BEGIN { print $1 }"
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

NODE_URL='' NODE_PID=''
# start_node KIND(rust|python) DIR LOGNAME [PEER_URL...]: sets NODE_URL and NODE_PID;
# returns 1 (with the log shown) when the node dies or does not print its URL in 60 s.
start_node() {
    local kind=$1 dir=$2 name=$3 logf i
    shift 3
    logf="$TMP/logs/$name.log"
    if [[ $kind == rust ]]; then
        (cd "$dir" && exec "$BIN" "$PW" server 127.0.0.1 0 "$@") >"$logf" 2>&1 &
    else
        (cd "$dir" && exec "$PY" "$PEER_PY" "$PW" server 127.0.0.1 0 "$@") >"$logf" 2>&1 &
    fi
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    NODE_URL=''
    for ((i = 0; i < 600; i++)); do
        NODE_URL=$(grep -m1 -o 'listening on http://[0-9.]*:[0-9]*' "$logf" | sed 's/^listening on //' || true)
        [[ -n $NODE_URL ]] && return 0
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "$([[ $kind == rust ]] && echo tinyp2p || echo Python) node ($name) did not start: $(head -c 2000 "$logf")"
    return 1
}

T_SECS='' RSS_KB='' RUN_RC=0
# timed DIR OUTNAME CMD...: runs CMD in DIR under /usr/bin/time; sets T_SECS (monotonic
# seconds), RSS_KB (peak RSS in KiB) and RUN_RC (124: killed after RUN_LIMIT seconds);
# stdout/stderr go to logs/OUTNAME.{out,err}.
RUN_LIMIT=${BENCH_RUN_LIMIT:-600}
timed() {
    local dir=$1 name=$2
    shift 2
    RUN_RC=0
    (cd "$dir" && exec "$PY" "$TMP/timer.py" "$TMP/logs/$name.time" timeout -k 5 "$RUN_LIMIT" \
        /usr/bin/time -f %M -o "$TMP/logs/$name.rss" "$@") \
        >"$TMP/logs/$name.out" 2>"$TMP/logs/$name.err" || RUN_RC=$?
    T_SECS=$(cat "$TMP/logs/$name.time")
    RSS_KB=$(tail -n1 "$TMP/logs/$name.rss" 2>/dev/null || echo 0)
    ((RUN_RC != 124)) || echo "(killed: no exit within $RUN_LIMIT s)" >>"$TMP/logs/$name.err"
}

fresh_dir() { # fresh_dir PATH: an empty folder
    rm -rf "$1"
    mkdir -p "$1"
}

vm_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

kb_to_mb() { calc "$1 * 1024 / 1000000"; } # KiB -> MB
fmt() { printf "%.${2:-1}f" "$1"; }

RAWS=()
raw() { # raw TEXT: one line of per-run figures for the results
    RAWS+=("$*")
    log "$*"
}

ROWS=()
row() { # row workload tinyp2p baseline ratio target met
    ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |")
}
yesno() { # yesno 'awk condition'
    if [[ $(calc "($1) ? 1 : 0") == 1 ]]; then echo yes; else echo NO; fi
}

# ---------------------------------------------------------------- data
log "generating data in $TMP (A: $BIG_MIB MiB, B: $MED_MIB MiB, C: $SMALL_TOTAL x 1 KiB, D: 100 x 1 KiB)"
mkdir -p "$TMP/A/share" "$TMP/B/share" "$TMP/C/n0" "$TMP/C/n1" "$TMP/C/n2" "$TMP/D/share"
"$PY" "$TMP/gen.py" big "$TMP/A/share/big.txt" "$BIG_MIB" 1
"$PY" "$TMP/gen.py" big "$TMP/B/share/medium.txt" "$MED_MIB" 2
for n in 0 1 2; do
    "$PY" "$TMP/gen.py" small "$TMP/C/n$n" "n$n-f" "$SMALL_PER_NODE" 1024 $((10 + n))
done
"$PY" "$TMP/gen.py" small "$TMP/D/share" file 100 1024 20
BIG_BYTES=$(stat -c %s "$TMP/A/share/big.txt")
MED_BYTES=$(stat -c %s "$TMP/B/share/medium.txt")
C_SUM=$(cat "$TMP"/C/n0/* "$TMP"/C/n1/* "$TMP"/C/n2/* | md5sum)
sync # no writeback of the fresh data during the timed runs

# ---------------------------------------------------------------- row A
row_a() {
    local port conf ngx_pid i url rs_ok=1 ngx_ok=1 srv_pid='' srv_hwm='' node_url=''
    local -a rs_t=() ngx_t=() rs_rss=()
    log "row A: $BIG_MIB MiB text file, tinyp2p vs nginx + curl ($RUNS runs)"
    port=$(free_port)
    mkdir -p "$TMP/A/nginx/logs" "$TMP/A/nginx/tmp"
    conf="$TMP/A/nginx/nginx.conf"
    cat >"$conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $TMP/A/nginx/nginx.pid;
error_log $TMP/A/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log $TMP/A/nginx/logs/access.log;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path $TMP/A/nginx/tmp/body;
    proxy_temp_path $TMP/A/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/A/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/A/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/A/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $TMP/A/share;
    }
}
EOF
    "$NGINX" -c "$conf" -p "$TMP/A/nginx" -e "$TMP/A/nginx/logs/error.log" >"$TMP/logs/nginx.log" 2>&1 &
    ngx_pid=$!
    PIDS+=("$ngx_pid")
    url="http://127.0.0.1:$port/big.txt"
    for ((i = 0; i < 100; i++)); do
        curl -sf -m 5 -I -o /dev/null "$url" && break
        sleep 0.1
    done
    curl -sf -m 5 -I -o /dev/null "$url" || die "nginx did not start: $(cat "$TMP/logs/nginx.log" "$TMP/A/nginx/logs/error.log")"

    if start_node rust "$TMP/A/share" A-rust-node; then
        srv_pid=$NODE_PID
        node_url=$NODE_URL
    else
        rs_ok=0
    fi
    for ((i = 1; i <= RUNS; i++)); do
        if ((rs_ok)); then
            fresh_dir "$TMP/A/out-rust"
            timed "$TMP/A/out-rust" "A-rust-client-$i" "$BIN" "$PW" client "$node_url" '^big\.txt$'
            if ((RUN_RC != 0)); then
                fail "A: tinyp2p client exited $RUN_RC: $(head -c 2000 "$TMP/logs/A-rust-client-$i.err")"
                rs_ok=0
            elif ! cmp -s "$TMP/A/share/big.txt" "$TMP/A/out-rust/big.txt"; then
                fail "A: tinyp2p client's big.txt differs from the original ($(cmp "$TMP/A/share/big.txt" "$TMP/A/out-rust/big.txt" 2>&1 | head -c 300))"
                rs_ok=0
            else
                rs_t+=("$T_SECS")
                rs_rss+=("$RSS_KB")
            fi
            rm -rf "$TMP/A/out-rust" # its dirty pages go now, not in the next timed run
        fi
        fresh_dir "$TMP/A/out-nginx"
        timed "$TMP/A/out-nginx" "A-curl-$i" curl -s -o big.txt "$url"
        if ((RUN_RC != 0)) || ! cmp -s "$TMP/A/share/big.txt" "$TMP/A/out-nginx/big.txt"; then
            fail "A: curl from nginx failed (rc $RUN_RC) or fetched different bytes"
            ngx_ok=0
        else
            ngx_t+=("$T_SECS")
        fi
        rm -rf "$TMP/A/out-nginx"
    done
    rm -rf "$TMP/A/out-rust" "$TMP/A/out-nginx"
    if ((rs_ok)); then
        srv_hwm=$(vm_hwm_kb "$srv_pid")
    fi
    stop_all
    raw "A, client run time (s): tinyp2p ${rs_t[*]:-none}; nginx + curl ${ngx_t[*]:-none}; tinyp2p client peak RSS (KiB): ${rs_rss[*]:-none}; server VmHWM (KiB): ${srv_hwm:-none}"

    local rs_mbs='' ngx_mbs='' rs_cell=FAILED ngx_cell=FAILED ratio='-' met='NO (failed)'
    if ((ngx_ok)); then
        ngx_mbs=$(calc "$BIG_BYTES / $(median "${ngx_t[@]}") / 1000000")
        ngx_cell="$(fmt "$ngx_mbs" 0) MB/s (nginx sendfile + curl)"
    fi
    if ((rs_ok)); then
        rs_mbs=$(calc "$BIG_BYTES / $(median "${rs_t[@]}") / 1000000")
        rs_cell="$(fmt "$rs_mbs" 0) MB/s"
    fi
    if ((rs_ok && ngx_ok)); then
        ratio="$(fmt "$(calc "100 * $rs_mbs / $ngx_mbs")" 0)%"
        met=$(yesno "$rs_mbs >= 0.5 * $ngx_mbs")
    fi
    row "one $BIG_MIB MiB text file, 1 node, 1 client: throughput" "$rs_cell" "$ngx_cell" "$ratio" ">= 50% of nginx" "$met"
    if ((rs_ok)); then
        local cmax
        cmax=$(printf '%s\n' "${rs_rss[@]}" | sort -g | tail -n1)
        row "peak RSS, tinyp2p client ($BIG_MIB MiB file)" "$(fmt "$(kb_to_mb "$cmax")") MB" "-" "-" "<= 32 MB" "$(yesno "$cmax * 1024 <= 32000000")"
        row "peak RSS, tinyp2p server (VmHWM after the transfers)" "$(fmt "$(kb_to_mb "$srv_hwm")") MB" "-" "-" "<= 32 MB" "$(yesno "$srv_hwm * 1024 <= 32000000")"
    else
        row "peak RSS, tinyp2p client ($BIG_MIB MiB file)" FAILED "-" "-" "<= 32 MB" "NO (failed)"
        row "peak RSS, tinyp2p server (VmHWM after the transfers)" FAILED "-" "-" "<= 32 MB" "NO (failed)"
    fi
}

# ---------------------------------------------------------------- row B
row_b() {
    local i rs_ok=1 py_ok=1 rs_url='' py_url=''
    local -a rs_t=() py_t=() rs_rss=() py_rss=()
    log "row B: $MED_MIB MiB text file, tinyp2p vs the Python original ($RUNS runs)"
    if start_node rust "$TMP/B/share" B-rust-node; then rs_url=$NODE_URL; else rs_ok=0; fi
    if start_node python "$TMP/B/share" B-py-node; then py_url=$NODE_URL; else py_ok=0; fi
    for ((i = 1; i <= RUNS; i++)); do
        if ((rs_ok)); then
            fresh_dir "$TMP/B/out-rust"
            timed "$TMP/B/out-rust" "B-rust-client-$i" "$BIN" "$PW" client "$rs_url" '^medium\.txt$'
            if ((RUN_RC != 0)); then
                fail "B: tinyp2p client exited $RUN_RC: $(head -c 2000 "$TMP/logs/B-rust-client-$i.err")"
                rs_ok=0
            elif ! cmp -s "$TMP/B/share/medium.txt" "$TMP/B/out-rust/medium.txt"; then
                fail "B: tinyp2p client's medium.txt differs from the original"
                rs_ok=0
            else
                rs_t+=("$T_SECS")
                rs_rss+=("$RSS_KB")
            fi
            rm -rf "$TMP/B/out-rust"
        fi
        if ((py_ok)); then
            fresh_dir "$TMP/B/out-py"
            timed "$TMP/B/out-py" "B-py-client-$i" "$PY" "$PEER_PY" "$PW" client "$py_url" '^medium\.txt$'
            if ((RUN_RC != 0)) || ! cmp -s "$TMP/B/share/medium.txt" "$TMP/B/out-py/medium.txt"; then
                fail "B: Python client failed (rc $RUN_RC) or fetched different bytes: $(tail -c 1000 "$TMP/logs/B-py-client-$i.err")"
                py_ok=0
            else
                py_t+=("$T_SECS")
                py_rss+=("$RSS_KB")
            fi
            rm -rf "$TMP/B/out-py"
        fi
    done
    rm -rf "$TMP/B/out-rust" "$TMP/B/out-py"
    stop_all
    raw "B, client run time (s): tinyp2p ${rs_t[*]:-none}; Python ${py_t[*]:-none}; client peak RSS (KiB): tinyp2p ${rs_rss[*]:-none}; Python ${py_rss[*]:-none}"

    local rs_s='' py_s='' rs_cell=FAILED py_cell=FAILED ratio='-' met='NO (failed)'
    if ((rs_ok)); then
        rs_s=$(median "${rs_t[@]}")
        rs_cell="$(fmt "$rs_s" 3) s ($(fmt "$(calc "$MED_BYTES / $rs_s / 1000000")" 0) MB/s)"
    fi
    if ((py_ok)); then
        py_s=$(median "${py_t[@]}")
        py_cell="$(fmt "$py_s" 3) s ($(fmt "$(calc "$MED_BYTES / $py_s / 1000000")" 0) MB/s, Python)"
    fi
    if ((rs_ok && py_ok)); then
        ratio="$(fmt "$(calc "$py_s / $rs_s")" 1)x"
        met=$(yesno "$py_s >= 20 * $rs_s")
    fi
    row "one $MED_MIB MiB text file, 1 node, 1 client: time" "$rs_cell" "$py_cell" "$ratio" ">= 20x faster" "$met"
    local rs_rss_cell='-' py_rss_cell='-'
    ((rs_ok)) && rs_rss_cell="$(fmt "$(kb_to_mb "$(printf '%s\n' "${rs_rss[@]}" | sort -g | tail -n1)")") MB"
    ((py_ok)) && py_rss_cell="$(fmt "$(kb_to_mb "$(printf '%s\n' "${py_rss[@]}" | sort -g | tail -n1)")") MB (Python)"
    row "peak RSS, client ($MED_MIB MiB file)" "$rs_rss_cell" "$py_rss_cell" "-" "(info)" "-"
}

# ---------------------------------------------------------------- row C
start_chain() { # start_chain KIND: three nodes, node1 joins node0, node2 joins node1; sets C_URL
    local kind=$1 u0 u1
    C_URL=''
    start_node "$kind" "$TMP/C/n0" "C-$kind-node0" || return 1
    u0=$NODE_URL
    start_node "$kind" "$TMP/C/n1" "C-$kind-node1" "$u0" || return 1
    u1=$NODE_URL
    start_node "$kind" "$TMP/C/n2" "C-$kind-node2" "$u1" || return 1
    C_URL=$u0
}

check_c() { # check_c DIR WHO: 999 files, same bytes as the originals
    local n sum
    n=$(find "$1" -maxdepth 1 -type f ! -name '.*' | wc -l)
    if ((n != SMALL_TOTAL)); then
        fail "C: $2 client fetched $n files, expected $SMALL_TOTAL"
        return 1
    fi
    sum=$(cat "$1"/* | md5sum)
    if [[ $sum != "$C_SUM" ]]; then
        fail "C: $2 client's files differ from the originals"
        return 1
    fi
}

row_c() {
    local i rs_ok=1 py_ok=1 rs_url='' py_url=''
    local -a rs_t=() py_t=()
    log "row C: $SMALL_TOTAL files of 1 KiB on three nodes, tinyp2p vs the Python original ($RUNS runs)"
    # Each run fetches into a folder of its own, all removed after the row: on ext4
    # without a journal (as here) every new inode is searched for past the inodes freed in
    # the last 30 s, so deleting one run's 999 files slows the next run's file creation,
    # a cost of the file system that would swamp what this row measures, for both sides.
    if start_chain rust; then rs_url=$C_URL; else rs_ok=0; fi
    if start_chain python; then py_url=$C_URL; else py_ok=0; fi
    for ((i = 1; i <= RUNS; i++)); do
        if ((rs_ok)); then
            fresh_dir "$TMP/C/out-rust-$i"
            timed "$TMP/C/out-rust-$i" "C-rust-client-$i" "$BIN" "$PW" client "$rs_url" '.'
            if ((RUN_RC != 0)); then
                fail "C: tinyp2p client exited $RUN_RC: $(head -c 2000 "$TMP/logs/C-rust-client-$i.err")"
                rs_ok=0
            elif check_c "$TMP/C/out-rust-$i" tinyp2p; then
                rs_t+=("$T_SECS")
            else
                rs_ok=0
            fi
        fi
        if ((py_ok)); then
            fresh_dir "$TMP/C/out-py-$i"
            timed "$TMP/C/out-py-$i" "C-py-client-$i" "$PY" "$PEER_PY" "$PW" client "$py_url" '.'
            if ((RUN_RC != 0)); then
                fail "C: Python client exited $RUN_RC: $(tail -c 1000 "$TMP/logs/C-py-client-$i.err")"
                py_ok=0
            elif check_c "$TMP/C/out-py-$i" Python; then
                py_t+=("$T_SECS")
            else
                py_ok=0
            fi
        fi
    done
    rm -rf "$TMP"/C/out-rust-* "$TMP"/C/out-py-*
    stop_all
    raw "C, client run time (s): tinyp2p ${rs_t[*]:-none}; Python ${py_t[*]:-none}"

    local rs_s='' py_s='' rs_cell=FAILED py_cell=FAILED ratio='-' met='NO (failed)'
    ((rs_ok)) && rs_s=$(median "${rs_t[@]}") && rs_cell="$(fmt "$rs_s" 3) s"
    ((py_ok)) && py_s=$(median "${py_t[@]}") && py_cell="$(fmt "$py_s" 3) s (Python)"
    if ((rs_ok && py_ok)); then
        ratio="$(fmt "$(calc "$py_s / $rs_s")" 1)x"
        met=$(yesno "$py_s >= 10 * $rs_s")
    fi
    row "$SMALL_TOTAL files of 1 KiB on 3 nodes, 1 client run: time" "$rs_cell" "$py_cell" "$ratio" ">= 10x faster" "$met"
}

# ---------------------------------------------------------------- row D
WRK_RPS='' WRK_ERR=''
# wrk_node KIND: starts a node on D/share, checks its mode-1 answer, runs wrk on it.
wrk_node() {
    local kind=$1 url tok body answer out
    WRK_RPS='' WRK_ERR=''
    start_node "$kind" "$TMP/D/share" "D-$kind-node" || return 1
    url=$NODE_URL
    tok=$(token "$url")
    body="<?xml version=\"1.0\"?><methodCall><methodName>f</methodName><params><param><value><string>$tok</string></value></param><param><value><int>1</int></value></param><param><value><string>file</string></value></param></params></methodCall>"
    # The response() hook counts answers that are not the listing (cheap: < 5% of wrk's
    # own rate in a test against nginx at ~30k req/s).
    cat >"$TMP/D/post-$kind.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml"
wrk.body = [[$body]]
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, "file099.txt", 1, true)
     or string.find(body, "<fault>", 1, true) or string.find(body, "<boolean>", 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("Bad answers: %d\n", total))
end
EOF
    answer=$(curl -s -m 30 -H 'Content-Type: text/xml' --data-binary "$body" "$url/RPC2" || true)
    if [[ $answer != *file000.txt* || $answer != *file099.txt* || $answer == *"<fault>"* || $answer == *"<boolean>"* ]]; then
        fail "D: $kind node's mode-1 answer is not the listing of 100 files: $(head -c 600 <<<"$answer")"
        stop_all
        return 1
    fi
    out="$TMP/logs/D-wrk-$kind.txt"
    timeout -k 5 $((WRK_SECS + 60)) wrk -t2 -c64 -d"${WRK_SECS}s" -s "$TMP/D/post-$kind.lua" "$url/RPC2" >"$out" 2>&1 || {
        fail "D: wrk against the $kind node failed: $(head -c 600 "$out")"
        stop_all
        return 1
    }
    sed 's/^/    /' "$out" >&2
    answer=$(curl -s -m 10 -H 'Content-Type: text/xml' --data-binary "$body" "$url/RPC2" || true)
    if [[ $answer != *file099.txt* || $answer == *"<fault>"* ]]; then
        fail "D: $kind node's mode-1 answer after the wrk run is wrong: $(head -c 600 <<<"$answer")"
    fi
    stop_all
    WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    local non2xx sock bad
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sock=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    bad=$(awk '/^Bad answers:/ { print $3 }' "$out")
    [[ -n $bad ]] || {
        fail "D: wrk's Lua check did not report for the $kind node"
        return 1
    }
    # bad also counts the non-2xx answers; the rest are 200s that are not the listing.
    bad=$((bad - ${non2xx:-0}))
    WRK_ERR=$((${non2xx:-0} + ${sock:-0} + bad))
    WRK_DETAIL="${non2xx:-0} non-2xx, ${sock:-0} socket, $bad wrong answers"
    raw "D, $([[ $kind == rust ]] && echo tinyp2p || echo Python) node: $(awk '/requests in/ { print $1, "requests in", $4 }' "$out") $(grep -o 'Socket errors:.*' "$out" || echo "no socket errors"), latency avg/stdev/max: $(awk '/Latency/ { print $2 "/" $3 "/" $4 }' "$out")"
    ((bad == 0)) || fail "D: $kind node gave $bad HTTP 200 answers under wrk that are not the listing (a fault, <boolean> or another body)"
    [[ -n $WRK_RPS ]] || {
        fail "D: no Requests/sec in wrk's output for the $kind node"
        return 1
    }
}

row_d() {
    local rs_rps='' py_rps='' rs_err='' py_err='' rs_det='' py_det=''
    log "row D: wrk -t2 -c64 -d${WRK_SECS}s, mode-1 calls on a node with 100 files, tinyp2p vs Python"
    if wrk_node rust; then rs_rps=$WRK_RPS rs_err=$WRK_ERR rs_det=$WRK_DETAIL; fi
    if wrk_node python; then py_rps=$WRK_RPS py_err=$WRK_ERR py_det=$WRK_DETAIL; fi
    local rs_cell=FAILED py_cell=FAILED ratio='-' met='NO (failed)'
    [[ -n $rs_rps ]] && rs_cell="$(fmt "$rs_rps" 0) req/s"
    [[ -n $py_rps ]] && py_cell="$(fmt "$py_rps" 0) req/s (Python)"
    if [[ -n $rs_rps && -n $py_rps ]]; then
        ratio="$(fmt "$(calc "$rs_rps / $py_rps")" 1)x"
        met=$(yesno "$rs_rps >= 10 * $py_rps")
    fi
    row "wrk, 64 connections, mode-1 calls, node with 100 files" "$rs_cell" "$py_cell" "$ratio" ">= 10x req/s" "$met"
    local e_rs=FAILED e_py=FAILED e_met='NO (failed)'
    [[ -n $rs_err ]] && e_rs="$rs_err ($rs_det)" && e_met=$(yesno "$rs_err == 0")
    [[ -n $py_err ]] && e_py="$py_err ($py_det)"
    row "wrk errors (non-2xx + socket errors + wrong answers)" "$e_rs" "$e_py" "-" "0 for tinyp2p" "$e_met"
}

# ---------------------------------------------------------------- run
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
row_a
row_b
row_c
row_d

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
VERSION=$("$BIN" --version 2>/dev/null | head -n1 || true)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    COMMIT="$COMMIT + uncommitted changes to src/ or Cargo"
fi
CMD="bash bench/run.sh"
[[ $QUICK == 1 ]] && CMD="BENCH_QUICK=1 $CMD"
[[ -n ${BENCH_RUNS:-} ]] && CMD="BENCH_RUNS=$BENCH_RUNS $CMD"

TABLE=$(
    echo "| workload | tinyp2p | baseline | ratio | target | met? |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
)
echo
echo "$TABLE"
if ((${#FAILURES[@]})); then
    echo
    echo "failures:"
    printf -- '- %s\n' "${FAILURES[@]}"
fi

if [[ -n $RESULTS ]]; then
    {
        echo "# tinyp2p benchmark results"
        echo
        [[ $QUICK == 1 ]] && echo "**Quick smoke run (BENCH_QUICK=1): reduced sizes, not the issue's workloads.**" && echo
        echo "$TABLE"
        echo
        if ((${#FAILURES[@]})); then
            echo "Failures:"
            echo
            printf -- '- %s\n' "${FAILURES[@]}"
            echo
        fi
        echo "Per-run figures:"
        echo
        printf -- '- %s\n' "${RAWS[@]}"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- machine: $(nproc) CPUs, $CPU, $(awk '/^MemTotal:/ { printf "%.1f GB RAM", $2 * 1024 / 1e9 }' /proc/meminfo), load average before the run: $LOAD_BEFORE"
        echo "- command: \`$CMD\` (from the repository root)"
        echo "- tinyp2p: ${VERSION:-unknown version}, commit $COMMIT; baseline: tests/peer.py on $("$PY" --version 2>&1), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(curl --version | head -n1 | cut -d' ' -f1-2), $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
        echo "- method: all on 127.0.0.1; rows A-C: median of $RUNS runs (tinyp2p and baseline interleaved), time of the whole client process on a monotonic clock, fetched bytes checked against the originals; RSS from /usr/bin/time %M (client) and VmHWM (server); MB = 10^6 bytes; row D: \`wrk -t2 -c64 -d${WRK_SECS}s\` on \`/RPC2\`, one run per node."
    } >"$RESULTS"
    log "wrote $RESULTS"
fi

((${#FAILURES[@]} == 0)) || exit 1
