#!/usr/bin/env bash
# tinyp2p benchmark: the targets of issues 3 and 11, measured side by side in one run.
#
#   bash bench/run.sh                   # full run (about 3 minutes), writes bench/RESULTS.md
#   BENCH_ROWS=A2 bash bench/run.sh     # one row (or a few: BENCH_ROWS="A A2"), prints only
#   BENCH_QUICK=1 bash bench/run.sh     # smoke run: small sizes, 2 runs, prints only
#
# The README's table is the table of bench/RESULTS.md from the latest full run, copied over.
#
# Rows, all on 127.0.0.1 with free ports (tinyp2p and the Python peer pick port 0):
#   A   one 256 MiB text file, one node, one client: tinyp2p node + client vs nginx
#       (sendfile on) + `curl -o file` ("raw"); client wall time, share of raw, CPU seconds
#       per GiB of client + server, peak RSS of the tinyp2p client and node;
#   A2  the same with 256 MiB of random bytes (`head -c ... /dev/urandom`): base64 path;
#   B   one 64 MiB text file: tinyp2p vs the original program (tests/peer.py, the faithful
#       Python 3 port, node + client);
#   C   999 files of 1 KiB on three nodes (node1 joins node0, node2 joins node1), one client
#       run fetching everything (pattern `.`), tinyp2p vs Python;
#   D   wrk, 2 threads, 64 connections, 10 s, posting a mode-1 call to a node with 100
#       files, one run per node: req/s and errors (non-2xx + socket errors + 200 answers
#       that are not the listing, counted by a Lua response() hook).
#
# Method, rows A-C (why: a baseline that swung 0.50-1.23 s made an earlier A row say 101%):
#   - the source files are read once before the row (`cat >/dev/null`) and `fincore`
#     confirms they are resident; both servers serve the very same file, and every client
#     writes into a fresh folder on the same file system, removed after the run (C: after
#     the row), so no run pays for another's writeback;
#   - runs are interleaved, tinyp2p then baseline: one warm-up pair (run 0, not counted),
#     then BENCH_RUNS counted pairs; each cell is the median with min-max, and the ratio is
#     the median of the per-pair ratios with their min-max;
#   - run 0 is also the node's first request for the file: a node keeps the survey of a file
#     it sent (by device, inode, size and ctime, once the ctime is 2 s old), so later
#     requests stream at once; run 0 is reported on its own row (A, A2);
#   - the measure is the client process's wall time (monotonic clock around it); client
#     CPU (user + sys) and peak RSS from GNU time, the servers' CPU from /proc/PID/stat
#     (utime + stime, before and after the run; nginx: its worker), the node's peak RSS
#     from VmHWM in /proc/PID/status after the row. MB = 10^6 bytes, MiB/GiB = 2^20/2^30.
#   - every fetched file is checked byte-exact against its original (cmp, or count + md5).
#
# Environment:
#   BENCH_ROWS="A A2 B C D"  rows to run (default all; spaces or commas)
#   BENCH_RUNS=N      counted runs per row A-C after the warm-up pair (default 7; quick 2)
#   BENCH_QUICK=1     16 MiB / 8 MiB files, 99 small files, 3 s of wrk
#   BENCH_RESULTS=F   write the results to F; by default only a full run of all rows writes
#                     (to bench/RESULTS.md)
#   TINYP2P_BIN=PATH  benchmark this binary instead of building target/release/tinyp2p
#   BENCH_KEEP=1      keep the temp folder (data, logs, wrk output) for a look after
#   BENCH_RUN_LIMIT=S kill a client run after S seconds (default 600) and count it failed
#
# Needs nginx, wrk, GNU time, curl and python3; installs the first four with apt-get when
# missing. Exit status: 0 when every step ran and every transfer was byte-exact (targets
# met or not), 1 when something failed (see the "failures" list), 3 on setup errors.
set -euo pipefail
export LC_ALL=C

# ================================================================ settings
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER_PY="$ROOT/tests/peer.py"
PW=bench-secret
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    BIG_MIB=16 MED_MIB=8 SMALL_TOTAL=99 WRK_SECS=3 DEFAULT_RUNS=2
else
    BIG_MIB=256 MED_MIB=64 SMALL_TOTAL=999 WRK_SECS=10 DEFAULT_RUNS=7
fi
RUNS=${BENCH_RUNS:-$DEFAULT_RUNS}
SMALL_PER_NODE=$((SMALL_TOTAL / 3))
SMALL_TOTAL=$((SMALL_PER_NODE * 3))
RUN_LIMIT=${BENCH_RUN_LIMIT:-600}
ALL_ROWS="A A2 B C D"
WANTED=" $(tr ',' ' ' <<<"${BENCH_ROWS:-$ALL_ROWS}" | xargs) "

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 3
}
want() { [[ $WANTED == *" $1 "* ]]; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive number, not '$RUNS'"
for r in $WANTED; do
    [[ " $ALL_ROWS " == *" $r "* ]] || die "unknown row '$r' in BENCH_ROWS (rows: $ALL_ROWS)"
done
# A smoke run or a partial run must not overwrite the full run's results by accident.
if [[ -n ${BENCH_RESULTS:-} ]]; then
    RESULTS=$BENCH_RESULTS
elif [[ $QUICK != 1 && $WANTED == " $ALL_ROWS " ]]; then
    RESULTS=$ROOT/bench/RESULTS.md
else
    RESULTS=''
fi

# ================================================================ tools and build
install_tools() {
    local -a need=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    [[ -x /usr/bin/time ]] || need+=(time)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    command -v fincore >/dev/null 2>&1 || need+=(util-linux)
    ((${#need[@]})) || return 0
    log "installing missing tools: ${need[*]}"
    local sudo=''
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${need[@]}"
}
install_tools
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
HZ=$(getconf CLK_TCK) # the unit of utime and stime in /proc/PID/stat
command -v python3 >/dev/null 2>&1 || die "python3 is needed (the baseline and the timer)"
# The real interpreter, not a pyenv-style shim: the baseline pays no wrapper start-up.
PY=$(python3 -c 'import sys; print(sys.executable)')
[[ -f $PEER_PY ]] || die "missing $PEER_PY"

if [[ -n ${TINYP2P_BIN:-} ]]; then
    BIN=$TINYP2P_BIN
    log "using TINYP2P_BIN=$BIN (no build)"
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tinyp2p
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# ================================================================ temp dir, cleanup
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

mkdir -p "$TMP/logs" "$TMP/out"

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

# ================================================================ small helpers
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

calc() { awk "BEGIN { print ($1) }"; } # calc 'awk expression' -> printed value (in parentheses: a bare > would redirect)
fmt() { printf "%.${2:-1}f" "$1"; }  # fmt NUMBER [DIGITS]
kb_to_mb() { calc "$1 * 1024 / 1000000"; }
yesno() { # yesno 'awk condition'
    if [[ $(calc "($1) ? 1 : 0") == 1 ]]; then echo yes; else echo NO; fi
}

stats() { # stats VALUES...: "median min max" (the median of an even count: mean of the middle two)
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
median() { stats "$@" | cut -d' ' -f1; }
maximum() { stats "$@" | cut -d' ' -f3; }

spread() { # spread DIGITS SUFFIX VALUES...: "median (min–max)", e.g. "0.412 s (0.398–0.455 s)"
    local d=$1 u=$2 m lo hi
    shift 2
    read -r m lo hi < <(stats "$@")
    printf "%.${d}f%s (%.${d}f–%.${d}f%s)" "$m" "$u" "$lo" "$hi" "$u"
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fresh_dir() { # fresh_dir PATH: an empty folder
    rm -rf "$1"
    mkdir -p "$1"
}

vm_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

proc_cpu() { # proc_cpu PID...: user + system CPU seconds of the processes so far
    local pid sum=0
    for pid in "$@"; do
        # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
        sum=$(sed 's/^.*) //' "/proc/$pid/stat" | awk -v s="$sum" -v hz="$HZ" '{ print s + ($12 + $13) / hz }')
    done
    echo "$sum"
}

warm_cache() { # warm_cache FILE...: reads them into the page cache; prints the share resident
    cat "$@" >/dev/null
    fincore -b -n -o RES,SIZE "$@" | awk '{ r += ($1 < $2 ? $1 : $2); s += $2 }
        END { printf "%.0f%%", s ? 100 * r / s : 100 }'
}

DETAILS=()
detail() { # detail LINE: a line of the per-run figures (also logged)
    DETAILS+=("$*")
}

ROWS=()
row() { # row workload tinyp2p baseline ratio target met
    ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |")
}

# ================================================================ processes
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
    fail "$kind node ($name) did not start: $(head -c 2000 "$logf")"
    return 1
}

NGX_URL='' NGX_WORKER=''
# start_nginx DIR FILE: nginx (one worker, sendfile on) serving DIR on a free port; sets
# NGX_URL (the URL of FILE) and NGX_WORKER (the worker's pid, whose CPU time is counted).
start_nginx() {
    local dir=$1 file=$2 port conf ngx_pid i
    port=$(free_port)
    mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
    conf="$TMP/nginx/nginx.conf"
    cat >"$conf" <<EOF
daemon off;
$([[ $(id -u) == 0 ]] && echo 'user root;')
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    server { listen 127.0.0.1:$port; root $dir; }
}
EOF
    "$NGINX" -c "$conf" -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" >"$TMP/logs/nginx.log" 2>&1 &
    ngx_pid=$!
    PIDS+=("$ngx_pid")
    NGX_URL="http://127.0.0.1:$port/$file"
    for ((i = 0; i < 100; i++)); do
        NGX_WORKER=$(pgrep -P "$ngx_pid" | head -n1 || true)
        [[ -n $NGX_WORKER ]] && curl -sf -m 5 -I -o /dev/null "$NGX_URL" && return 0
        sleep 0.1
    done
    fail "nginx did not start: $(cat "$TMP/logs/nginx.log" "$TMP/nginx/logs/error.log" 2>&1 | head -c 2000)"
    return 1
}

T_SECS='' CPU_SECS='' RSS_KB='' RUN_RC=0
# timed DIR NAME CMD...: runs CMD in DIR under GNU time; sets T_SECS (monotonic wall
# seconds), CPU_SECS (user + sys), RSS_KB (peak RSS in KiB) and RUN_RC (124: killed after
# RUN_LIMIT seconds); stdout/stderr go to logs/NAME.{out,err}.
timed() {
    local dir=$1 name=$2 u s
    shift 2
    RUN_RC=0
    (cd "$dir" && exec "$PY" "$TMP/timer.py" "$TMP/logs/$name.time" timeout -k 5 "$RUN_LIMIT" \
        /usr/bin/time -f '%U %S %M' -o "$TMP/logs/$name.res" "$@") \
        >"$TMP/logs/$name.out" 2>"$TMP/logs/$name.err" || RUN_RC=$?
    T_SECS=$(cat "$TMP/logs/$name.time")
    # GNU time puts "Command exited with non-zero status N" before its line on a failure.
    read -r u s RSS_KB < <(tail -n1 "$TMP/logs/$name.res" 2>/dev/null || echo "0 0 0")
    CPU_SECS=$(calc "$u + $s")
    ((RUN_RC != 124)) || echo "(killed: no exit within $RUN_LIMIT s)" >>"$TMP/logs/$name.err"
}

# ================================================================ interleaved runs
# One row's figures, index 0 being the warm-up run (not counted) and 1..RUNS the counted
# ones; "rs" is tinyp2p, "base" the baseline. T wall s, CC client CPU s, SC servers' CPU s
# over the run, CPU = CC + SC, RSS client peak KiB. SRV_rs and SRV_base hold the pids of
# each side's servers; ROW, SRC, CHECK, KEEP_OUT, BASE_NAME describe the row.
reset_row() { # reset_row ROW BASE_NAME CHECK
    ROW=$1 BASE_NAME=$2 CHECK=$3 KEEP_OUT=0 ROW_LOAD=$(cut -d' ' -f1 /proc/loadavg)
    T_rs=() CC_rs=() SC_rs=() CPU_rs=() RSS_rs=() SRV_rs=()
    T_base=() CC_base=() SC_base=() CPU_base=() RSS_base=() SRV_base=()
}

who() { if [[ $1 == rs ]]; then echo tinyp2p; else echo "$BASE_NAME"; fi; }

# run_side SIDE RUN CMD...: one timed client run in a fresh folder, checked by CHECK;
# returns 1 (recorded as a failure) when the client fails or fetched wrong bytes.
run_side() {
    local side=$1 run=$2 dir="$TMP/out/$ROW-$1-$2" cpu0 cpu1 srv
    local -n srv_pids=SRV_$side t=T_$side cc=CC_$side sc=SC_$side cpu=CPU_$side rss=RSS_$side
    shift 2
    fresh_dir "$dir"
    cpu0=$(proc_cpu "${srv_pids[@]}")
    timed "$dir" "$ROW-$side-$run" "$@"
    cpu1=$(proc_cpu "${srv_pids[@]}")
    if ((RUN_RC != 0)); then
        fail "$ROW: $(who "$side") client exited $RUN_RC: $(tail -c 1500 "$TMP/logs/$ROW-$side-$run.err")"
        return 1
    fi
    "$CHECK" "$dir" "$(who "$side")" || return 1
    srv=$(calc "$cpu1 - $cpu0")
    t+=("$T_SECS") cc+=("$CPU_SECS") sc+=("$srv") cpu+=("$(calc "$CPU_SECS + $srv")") rss+=("$RSS_KB")
    log "$ROW run $run, $(who "$side"): $(fmt "$T_SECS" 3) s; CPU client $CPU_SECS s + server $srv s; client RSS $(fmt "$(kb_to_mb "$RSS_KB")") MB"
    # Removed now, so its dirty pages are dropped instead of written back during the next
    # run; row C keeps them (see row_c).
    ((KEEP_OUT)) || rm -rf "$dir"
}

# interleave RS_FN BASE_FN: the warm-up pair (run 0), then RUNS counted pairs, tinyp2p
# first in each; stops at the first failure.
interleave() {
    local i
    for ((i = 0; i <= RUNS; i++)); do
        "$1" "$i" || return 1
        "$2" "$i" || return 1
    done
}

# The clients of the two sides (URL_rs, URL_base, PATTERN and SRC set by the row).
rs_client() { run_side rs "$1" "$BIN" "$PW" client "$URL_rs" "$PATTERN"; }
py_client() { run_side base "$1" "$PY" "$PEER_PY" "$PW" client "$URL_base" "$PATTERN"; }
curl_client() { run_side base "$1" curl -sf -o "$(basename "$SRC")" "$URL_base"; }

check_file() { # check_file DIR WHO: DIR holds SRC's name with SRC's bytes
    local got
    got="$1/$(basename "$SRC")"
    cmp -s "$SRC" "$got" && return 0
    fail "$ROW: $2 client's $(basename "$SRC") differs from the original: $(cmp "$SRC" "$got" 2>&1 | head -c 300)"
    return 1
}

pair_ratios() { # pair_ratios NUM DEN [SCALE]: SCALE * NUM[i] / DEN[i] for each counted pair
    local -n num=$1 den=$2
    local i
    for ((i = 1; i < ${#num[@]}; i++)); do calc "${3:-1} * ${num[i]} / ${den[i]}"; done
}

per_gib() { # per_gib ARRAY BYTES: each counted value divided by BYTES in GiB
    local -n vals=$1
    local v
    for v in "${vals[@]:1}"; do calc "$v / ($2 / 1073741824)"; done
}

# per_run_table TITLE: the row's figures, run by run, as a markdown table for RESULTS.md
per_run_table() {
    local i label
    detail ""
    detail "$1. Load average (1 min) at the start of the row: $ROW_LOAD. Run 0 is the warm-up pair, not counted; tinyp2p's run 0 is the node's first request for the file."
    detail ""
    detail "| run | tinyp2p s | $BASE_NAME s | baseline / tinyp2p | tinyp2p CPU s, client + server | $BASE_NAME CPU s, client + server | client peak RSS MB, tinyp2p / $BASE_NAME |"
    detail "|---|---|---|---|---|---|---|"
    for ((i = 0; i < ${#T_rs[@]} && i < ${#T_base[@]}; i++)); do
        label=$i
        ((i)) || label="0 (warm-up)"
        detail "| $label | $(fmt "${T_rs[i]}" 3) | $(fmt "${T_base[i]}" 3) | $(fmt "$(calc "${T_base[i]} / ${T_rs[i]}")" 2) |" \
            "${CC_rs[i]} + ${SC_rs[i]} | ${CC_base[i]} + ${SC_base[i]} |" \
            "$(fmt "$(kb_to_mb "${RSS_rs[i]}")") / $(fmt "$(kb_to_mb "${RSS_base[i]}")") |"
    done
}

# ================================================================ data
# Only what the chosen rows need. Files must be over 2 s old before a node first sends them,
# or it does not keep their survey (a change within one ctime tick could go unseen) and the
# first counted run, not the warm-up, would pay for it: hence the sleep.
make_data() {
    log "generating data in $TMP for rows:$WANTED"
    if want A; then
        mkdir -p "$TMP/A/share"
        "$PY" "$TMP/gen.py" big "$TMP/A/share/big.txt" "$BIG_MIB" 1
    fi
    if want A2; then
        mkdir -p "$TMP/A2/share"
        head -c $((BIG_MIB << 20)) /dev/urandom >"$TMP/A2/share/big.bin"
    fi
    if want B; then
        mkdir -p "$TMP/B/share"
        "$PY" "$TMP/gen.py" big "$TMP/B/share/medium.txt" "$MED_MIB" 2
    fi
    if want C; then
        for n in 0 1 2; do
            mkdir -p "$TMP/C/n$n"
            "$PY" "$TMP/gen.py" small "$TMP/C/n$n" "n$n-f" "$SMALL_PER_NODE" 1024 $((10 + n))
        done
        C_SUM=$(cat "$TMP"/C/n0/* "$TMP"/C/n1/* "$TMP"/C/n2/* | md5sum)
    fi
    if want D; then
        mkdir -p "$TMP/D/share"
        "$PY" "$TMP/gen.py" small "$TMP/D/share" file 100 1024 20
    fi
    sync # no writeback of the fresh data during the timed runs
    sleep 3
}

# ================================================================ rows A and A2
# row_big ROW FILE LABEL TARGET_PERCENT: one node and nginx serving the same FILE.
row_big() {
    local row=$1 label=$3 target=$4 resident hwm=''
    reset_row "$row" "nginx + curl" check_file
    SRC=$2 PATTERN="^$(basename "$2" | sed 's/\./\\./g')\$"
    log "row $row: $label, tinyp2p vs nginx + curl ($RUNS runs + a warm-up pair)"
    resident=$(warm_cache "$SRC")
    log "$ROW: $resident of $(basename "$SRC") in the page cache"
    local ok=1
    if start_nginx "$(dirname "$SRC")" "$(basename "$SRC")" && start_node rust "$(dirname "$SRC")" "$row-node"; then
        URL_rs=$NODE_URL URL_base=$NGX_URL SRV_rs=("$NODE_PID") SRV_base=("$NGX_WORKER")
        interleave rs_client curl_client || ok=0
        hwm=$(vm_hwm_kb "$NODE_PID")
    else
        ok=0
    fi
    stop_all
    per_run_table "Row $row, $label: page cache before the row $resident resident; node VmHWM after the row ${hwm:-?} KiB"
    if ((ok)); then
        report_big "$label" "$(stat -c %s "$SRC")" "$target" "$hwm"
    else
        row "$label, 1 node, 1 client: client wall time" FAILED FAILED - ">= $target% of raw" "NO (failed)"
    fi
}

# report_big LABEL BYTES TARGET_PERCENT NODE_HWM_KB: the row's lines of the table
report_big() {
    local label=$1 bytes=$2 target=$3 hwm=$4 share cpu_ratio crss
    share=$(median $(pair_ratios T_base T_rs 100))
    row "$label, 1 node, 1 client: client wall time, runs 1-$RUNS" \
        "$(spread 3 ' s' "${T_rs[@]:1}"), $(fmt "$(calc "$bytes / $(median "${T_rs[@]:1}") / 1e6")" 0) MB/s" \
        "$(spread 3 ' s' "${T_base[@]:1}"), $(fmt "$(calc "$bytes / $(median "${T_base[@]:1}") / 1e6")" 0) MB/s (nginx sendfile + curl)" \
        "$(spread 0 % $(pair_ratios T_base T_rs 100)) of raw" ">= $target% of raw" "$(yesno "$share >= $target")"
    row "$label: run 0, the node's first request for the file (survey not yet kept)" \
        "$(fmt "${T_rs[0]}" 3) s" "$(fmt "${T_base[0]}" 3) s" \
        "$(fmt "$(calc "100 * ${T_base[0]} / ${T_rs[0]}")" 0)% of raw" "(info)" "-"
    cpu_ratio=$(spread 1 x $(pair_ratios CPU_rs CPU_base))
    row "$label: CPU seconds per GiB, client + server" \
        "$(spread 2 '' $(per_gib CPU_rs "$bytes"))" \
        "$(spread 2 '' $(per_gib CPU_base "$bytes")) (curl + nginx worker)" \
        "tinyp2p uses $cpu_ratio raw's CPU" "(info)" "-"
    crss=$(maximum "${RSS_rs[@]}")
    row "$label: peak RSS (MB = 10^6 bytes), tinyp2p client / node" \
        "$(fmt "$(kb_to_mb "$crss")") MB / $(fmt "$(kb_to_mb "$hwm")") MB" "-" "-" "<= 16 MB each" \
        "$(yesno "$crss * 1024 <= 16e6 && $hwm * 1024 <= 16e6")"
}

# ================================================================ row B
row_b() {
    local ok=1 label="one $MED_MIB MiB text file, 1 node, 1 client"
    reset_row B Python check_file
    SRC=$TMP/B/share/medium.txt PATTERN='^medium\.txt$'
    log "row B: $label, tinyp2p vs the Python original ($RUNS runs + a warm-up pair)"
    warm_cache "$SRC" >/dev/null
    if start_node rust "$TMP/B/share" B-rust-node; then
        URL_rs=$NODE_URL SRV_rs=("$NODE_PID")
        if start_node python "$TMP/B/share" B-py-node; then
            URL_base=$NODE_URL SRV_base=("$NODE_PID")
            interleave rs_client py_client || ok=0
        else ok=0; fi
    else ok=0; fi
    stop_all
    per_run_table "Row B, $label"
    if ((!ok)); then
        row "$label: client wall time" FAILED FAILED - ">= 20x faster" "NO (failed)"
        return
    fi
    row "$label: client wall time, runs 1-$RUNS" "$(spread 3 ' s' "${T_rs[@]:1}")" \
        "$(spread 3 ' s' "${T_base[@]:1}") (Python)" "$(spread 1 x $(pair_ratios T_base T_rs)) faster" \
        ">= 20x faster" "$(yesno "$(median $(pair_ratios T_base T_rs)) >= 20")"
    row "$label: client peak RSS" "$(fmt "$(kb_to_mb "$(maximum "${RSS_rs[@]}")")") MB" \
        "$(fmt "$(kb_to_mb "$(maximum "${RSS_base[@]}")")") MB (Python)" "-" "(info)" "-"
}

# ================================================================ row C
start_chain() { # start_chain KIND: three nodes, node1 joins node0, node2 joins node1; sets C_URL, C_PIDS
    local kind=$1
    C_URL='' C_PIDS=()
    start_node "$kind" "$TMP/C/n0" "C-$kind-node0" || return 1
    C_URL=$NODE_URL C_PIDS+=("$NODE_PID")
    start_node "$kind" "$TMP/C/n1" "C-$kind-node1" "$C_URL" || return 1
    C_PIDS+=("$NODE_PID")
    start_node "$kind" "$TMP/C/n2" "C-$kind-node2" "$NODE_URL" || return 1
    C_PIDS+=("$NODE_PID")
}

check_c() { # check_c DIR WHO: all the small files, same bytes as the originals
    local n
    n=$(find "$1" -maxdepth 1 -type f ! -name '.*' | wc -l)
    if ((n != SMALL_TOTAL)); then
        fail "C: $2 client fetched $n files, expected $SMALL_TOTAL"
        return 1
    fi
    [[ $(cat "$1"/* | md5sum) == "$C_SUM" ]] && return 0
    fail "C: $2 client's files differ from the originals"
    return 1
}

row_c() {
    local ok=1 label="$SMALL_TOTAL files of 1 KiB on 3 nodes, 1 client run"
    reset_row C Python check_c
    # Each run fetches into a folder of its own, all removed after the row: on ext4
    # without a journal (as here) every new inode is searched for past the inodes freed in
    # the last 30 s, so deleting one run's files slows the next run's file creation, a
    # cost of the file system that would swamp what this row measures, for both sides.
    KEEP_OUT=1 PATTERN=.
    log "row C: $label, tinyp2p vs the Python original ($RUNS runs + a warm-up pair)"
    warm_cache "$TMP"/C/n*/* >/dev/null
    if start_chain rust; then
        URL_rs=$C_URL SRV_rs=("${C_PIDS[@]}")
        if start_chain python; then
            URL_base=$C_URL SRV_base=("${C_PIDS[@]}")
            interleave rs_client py_client || ok=0
        else ok=0; fi
    else ok=0; fi
    stop_all
    rm -rf "$TMP"/out/C-*
    per_run_table "Row C, $label; server CPU is the three nodes' together"
    if ((!ok)); then
        row "$label: client wall time" FAILED FAILED - ">= 12x faster" "NO (failed)"
        return
    fi
    row "$label: client wall time, runs 1-$RUNS" "$(spread 3 ' s' "${T_rs[@]:1}")" \
        "$(spread 3 ' s' "${T_base[@]:1}") (Python)" "$(spread 1 x $(pair_ratios T_base T_rs)) faster" \
        ">= 12x faster" "$(yesno "$(median $(pair_ratios T_base T_rs)) >= 12")"
}

# ================================================================ row D
# write_lua KIND BODY: wrk's script, posting BODY and counting answers that are not the
# listing (cheap: < 5% of wrk's own rate in a test against nginx at ~30k req/s).
write_lua() {
    cat >"$TMP/D/post-$1.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml"
wrk.body = [[$2]]
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
}

is_listing() { [[ $1 == *file000.txt* && $1 == *file099.txt* && $1 != *"<fault>"* && $1 != *"<boolean>"* ]]; }

WRK_RPS='' WRK_ERR='' WRK_DETAIL=''
# wrk_node KIND: starts a node on D/share, checks its mode-1 answer, runs wrk on it, checks
# the answer again; sets WRK_RPS, WRK_ERR and WRK_DETAIL.
wrk_node() {
    local kind=$1 url body answer out
    WRK_RPS='' WRK_ERR='' WRK_DETAIL=''
    start_node "$kind" "$TMP/D/share" "D-$kind-node" || return 1
    url=$NODE_URL
    body="<?xml version=\"1.0\"?><methodCall><methodName>f</methodName><params><param><value><string>$(token "$url")</string></value></param><param><value><int>1</int></value></param><param><value><string>file</string></value></param></params></methodCall>"
    write_lua "$kind" "$body"
    answer=$(curl -s -m 30 -H 'Content-Type: text/xml' --data-binary "$body" "$url/RPC2" || true)
    is_listing "$answer" || {
        fail "D: $kind node's mode-1 answer is not the listing of 100 files: $(head -c 600 <<<"$answer")"
        stop_all
        return 1
    }
    out="$TMP/logs/D-wrk-$kind.txt"
    timeout -k 5 $((WRK_SECS + 60)) wrk -t2 -c64 -d"${WRK_SECS}s" -s "$TMP/D/post-$kind.lua" "$url/RPC2" >"$out" 2>&1 || {
        fail "D: wrk against the $kind node failed: $(head -c 600 "$out")"
        stop_all
        return 1
    }
    sed 's/^/    /' "$out" >&2
    answer=$(curl -s -m 10 -H 'Content-Type: text/xml' --data-binary "$body" "$url/RPC2" || true)
    is_listing "$answer" || fail "D: $kind node's mode-1 answer after the wrk run is wrong: $(head -c 600 <<<"$answer")"
    stop_all
    wrk_figures "$kind" "$out"
}

wrk_figures() { # wrk_figures KIND WRK_OUTPUT: reads req/s and errors from wrk's output
    local kind=$1 out=$2 non2xx sock bad
    WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    non2xx=${non2xx:-0}
    sock=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    sock=${sock:-0}
    bad=$(awk '/^Bad answers:/ { print $3 }' "$out")
    if [[ -z $bad || -z $WRK_RPS ]]; then
        fail "D: no Requests/sec or no Lua count in wrk's output for the $kind node"
        return 1
    fi
    bad=$((bad - non2xx)) # the Lua count includes the non-2xx answers
    WRK_ERR=$((non2xx + sock + bad))
    WRK_DETAIL="$non2xx non-2xx, $sock socket, $bad wrong answers"
    detail "- D, $([[ $kind == rust ]] && echo tinyp2p || echo Python) node: $(awk '/requests in/ { print $1, "requests in", $4 }' "$out") $(grep -o 'Socket errors:.*' "$out" || echo "no socket errors"), latency avg/stdev/max: $(awk '/Latency/ { print $2 "/" $3 "/" $4 }' "$out")"
    ((bad == 0)) || fail "D: $kind node gave $bad HTTP 200 answers under wrk that are not the listing"
}

row_d() {
    local rs_rps='' py_rps='' rs_err='' py_err='' rs_det='' py_det=''
    log "row D: wrk -t2 -c64 -d${WRK_SECS}s, mode-1 calls on a node with 100 files, tinyp2p vs Python"
    detail ""
    detail "Row D, wrk -t2 -c64 -d${WRK_SECS}s, one run per node, no warm-up:"
    detail ""
    if wrk_node rust; then rs_rps=$WRK_RPS rs_err=$WRK_ERR rs_det=$WRK_DETAIL; fi
    if wrk_node python; then py_rps=$WRK_RPS py_err=$WRK_ERR py_det=$WRK_DETAIL; fi
    local rs_cell=FAILED py_cell=FAILED ratio='-' met='NO (failed)'
    [[ -n $rs_rps ]] && rs_cell="$(fmt "$rs_rps" 0) req/s"
    [[ -n $py_rps ]] && py_cell="$(fmt "$py_rps" 0) req/s (Python)"
    if [[ -n $rs_rps && -n $py_rps ]]; then
        ratio="$(fmt "$(calc "$rs_rps / $py_rps")" 1)x (one run each)"
        met=$(yesno "$rs_rps >= 10 * $py_rps")
    fi
    row "wrk, 64 connections, mode-1 calls, node with 100 files" "$rs_cell" "$py_cell" "$ratio" ">= 10x req/s" "$met"
    local e_rs=FAILED e_py=FAILED e_met='NO (failed)'
    [[ -n $rs_err ]] && e_rs="$rs_err ($rs_det)" && e_met=$(yesno "$rs_err == 0")
    [[ -n $py_err ]] && e_py="$py_err ($py_det)"
    row "wrk errors (non-2xx + socket errors + wrong answers)" "$e_rs" "$e_py" "-" "0 for tinyp2p" "$e_met"
}

# ================================================================ results
METHOD="All on 127.0.0.1. Rows A-C: before each row its source files are read once (\`cat >/dev/null\`; \`fincore\` shows how much was resident) and both servers serve that same file; each client writes into a fresh folder under the same temporary folder (same file system), removed right after the run (row C: after the row). Runs interleaved, tinyp2p then baseline: one warm-up pair (run 0, not counted), then $RUNS counted pairs; cells show median (min–max) of the counted runs, ratios are the median (min–max) of the per-pair ratios. tinyp2p's run 0 is the node's first request for the file, when it surveys the whole file; a node keeps that survey (by device, inode, size and ctime; the data is made over 2 s before the row) so runs 1-$RUNS start at once: run 0 is shown on its own row. Time: the client process's wall time on a monotonic clock. CPU seconds per GiB: (client user + sys from GNU time \`%U + %S\`, plus the server's utime + stime from /proc/PID/stat read before and after the run; for nginx its one worker) / file size in GiB, per run. Peak RSS: client from GNU time \`%M\` (max over the runs), node from VmHWM in /proc/PID/status after the row. MB = 10^6 bytes, MiB and GiB = 2^20 and 2^30 bytes. Every fetched file is checked byte-exact (cmp; row C: count and md5 of all). Row D: \`wrk -t2 -c64 -d${WRK_SECS}s\` on \`/RPC2\`, one run per node, no warm-up."

write_results() { # write_results TABLE FILE
    local cpu version commit cmd
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    version=$("$BIN" --version 2>/dev/null | head -n1 || true)
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    [[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] ||
        commit="$commit + uncommitted changes to src/ or Cargo"
    cmd="bash bench/run.sh"
    [[ -n ${BENCH_ROWS:-} ]] && cmd="BENCH_ROWS='$BENCH_ROWS' $cmd"
    [[ -n ${BENCH_RUNS:-} ]] && cmd="BENCH_RUNS=$BENCH_RUNS $cmd"
    [[ $QUICK == 1 ]] && cmd="BENCH_QUICK=1 $cmd"
    {
        echo "# tinyp2p benchmark results"
        echo
        [[ $QUICK == 1 ]] && echo "**Quick smoke run (BENCH_QUICK=1): reduced sizes, not the issues' workloads.**" && echo
        echo "$1"
        echo
        if ((${#FAILURES[@]})); then
            echo "Failures:" && echo
            printf -- '- %s\n' "${FAILURES[@]}"
            echo
        fi
        echo "## Run"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`$cmd\` (from the repository root)"
        echo "- machine: $(nproc) CPUs, $cpu, $(awk '/^MemTotal:/ { printf "%.1f GB RAM", $2 * 1024 / 1e9 }' /proc/meminfo), Linux $(uname -r); load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- tinyp2p: ${version:-unknown version}, commit $commit"
        echo "- tools: $("$PY" --version 2>&1) (tests/peer.py), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(curl --version | head -n1 | cut -d' ' -f1-2), $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), GNU time $(dpkg-query -W -f '${Version}' time 2>/dev/null || echo '?')"
        echo "- method: $METHOD"
        echo
        echo "## Per-run figures"
        printf '%s\n' "${DETAILS[@]}"
    } >"$2"
    log "wrote $2"
}

# ================================================================ run
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Other work on the machine shows up as spread (min-max) and as outliers; say so up front.
[[ $(yesno "${LOAD_BEFORE%% *} > 0.25 * $(nproc)") == yes ]] &&
    log "warning: load average $LOAD_BEFORE on $(nproc) CPUs: other work is running, expect noisy figures"
make_data
want A && row_big A "$TMP/A/share/big.txt" "one $BIG_MIB MiB text file" 75
want A2 && row_big A2 "$TMP/A2/share/big.bin" "one $BIG_MIB MiB random binary file" 60
want B && row_b
want C && row_c
want D && row_d

TABLE=$(
    echo "| workload | tinyp2p | baseline | ratio (median, min–max) | target | met? |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
)
echo
echo "$TABLE"
printf '%s\n' "${DETAILS[@]}"
if ((${#FAILURES[@]})); then
    echo
    echo "failures:"
    printf -- '- %s\n' "${FAILURES[@]}"
fi
[[ -z $RESULTS ]] || write_results "$TABLE" "$RESULTS"
((${#FAILURES[@]} == 0)) || exit 1
