#!/usr/bin/env bash
# The soak: CALLS concurrent simulated Twilio callers against a release server running the test
# engines, for MINUTES. Each call lasts 1-3 minutes and its caller dials again as it ends, so
# a 30-minute run places well over a thousand calls. Afterwards `voxanne load` checks, for every
# call it completed, the call row (end, status), every turn and event, and the recording
# (checksum, length, the caller channel sample for sample); the server must be idle (no call,
# no queued write), must stop cleanly, and must have logged no error and no panic. Prints the
# figures (calls, errors, lost records, server RSS over time, CPU) and exits non-zero on any
# error or lost record.
#
#   scripts/soak.sh [MINUTES (30)] [CALLS (100)]
#
# Environment:
#   DATABASE_URL           a Postgres database for the server (default: SQLite in the data dir)
#   SOAK_DIR               where the binary, data and logs go (default /tmp/soak)
#   SOAK_CALL_SECONDS      each call's length, MIN-MAX seconds (default 60-180)
#   SOAK_SAMPLE_SECONDS    how often the server's RSS, threads, fds and CPU are sampled (60)
#   SOAK_MAX_RSS_GROWTH_MIB  fail if the server's RSS grows more than this under steady load
#                          (from the first sample after one whole call length to the end; 64)
#   SOAK_CLINIC            a clinic file to apply and call (default examples/bright-smile.toml
#                          when the MiniLM model is in VOXANNE_MODELS_DIR; `none`: the default
#                          organisation)
#   SOAK_NO_BUILD=1        use the release binary already built
#   SOAK_KEEP=1            keep the data directory (recordings) after a passing run
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-30}"
calls="${2:-100}"
soak_dir="${SOAK_DIR:-/tmp/soak}"
call_seconds="${SOAK_CALL_SECONDS:-60-180}"
sample_seconds="${SOAK_SAMPLE_SECONDS:-60}"
max_growth_mib="${SOAK_MAX_RSS_GROWTH_MIB:-64}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
export VOXANNE_MODELS_DIR="${VOXANNE_MODELS_DIR:-$HOME/.cache/voxanne/models}"
mkdir -p "$soak_dir"

if [ -z "${SOAK_NO_BUILD:-}" ]; then
    # One build at a time on a shared machine, when the lock exists.
    if command -v flock >/dev/null; then
        flock /tmp/voxanne-cargo.lock cargo build --release --locked -p api
    else
        cargo build --release --locked -p api
    fi
fi
# A copy, so a later build does not replace the binary under the running soak.
bin="$soak_dir/voxanne"
cp "$target/release/voxanne" "$bin.new" && mv "$bin.new" "$bin"

data="$(mktemp -d "$soak_dir/data.XXXXXX")"
server_log="$soak_dir/server.log"
load_log="$soak_dir/load.log"
export TWILIO_AUTH_TOKEN="soak-$(date +%s)"
export NO_COLOR=1

# What the scripted speech-to-text hears, in turn across all calls: a booking conversation, a
# price, the hours and a knowledge question; no goodbye and nothing that transfers, so calls
# last until their caller hangs up.
transcripts="Hi, I would like to book a cleaning.|Tuesday morning would be great.|The first one, please.|My name is Sam Taylor.|Yes, that's right.|How much is a check-up?|What time do you open on Saturday?|Is there parking?"

clinic="${SOAK_CLINIC:-}"
if [ -z "$clinic" ]; then
    if [ -f "$VOXANNE_MODELS_DIR/minilm/model.onnx" ]; then
        clinic=examples/bright-smile.toml
    else
        clinic=none
    fi
fi
to_args=()
if [ "$clinic" != none ]; then
    VOXANNE_DATA_DIR="$data" "$bin" clinic apply "$clinic" >"$soak_dir/clinic.log" 2>&1 || {
        cat "$soak_dir/clinic.log"
        exit 1
    }
    number="$(sed -nE 's/^numbers = \["([^"]+)".*/\1/p' "$clinic" | head -1)"
    to_args=(--to "$number")
fi

# Headroom above the callers: a caller dials again the moment its call ends, before the
# server has finished the old call and given its slot back; at exactly CALLS the new call
# could hear the busy message, which counts as an error.
max_calls=$((calls + calls / 10 + 2))
VOXANNE_ADDR=127.0.0.1:0 VOXANNE_DATA_DIR="$data" VOXANNE_ENGINES=test \
    VOXANNE_MAX_CALLS="$max_calls" VOXANNE_TEST_TRANSCRIPTS="$transcripts" \
    RUST_LOG="${RUST_LOG:-info,ort=warn}" \
    "$bin" serve >"$server_log" 2>&1 &
server=$!
cleanup() {
    if kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
}
trap cleanup EXIT

addr=""
for _ in $(seq 1 600); do
    addr="$(sed -nE 's/.*voxanne listening.*addr=([0-9.]+:[0-9]+).*/\1/p' "$server_log" | head -1)"
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$server_log"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$server_log"; exit 1; }
echo "soak: $calls callers for $minutes min, calls of $call_seconds s, against pid $server on $addr" \
    "(data $data, ${DATABASE_URL:+Postgres}${DATABASE_URL:-SQLite}, clinic $clinic)"

verify_args=(--verify-data-dir "$data")
[ -n "${DATABASE_URL:-}" ] && verify_args+=(--verify-database-url "$DATABASE_URL")
set +e
"$bin" load --server "http://$addr" --calls "$calls" --seconds $((minutes * 60)) \
    --call-seconds "$call_seconds" --server-pid "$server" --sample-seconds "$sample_seconds" \
    "${to_args[@]}" "${verify_args[@]}" 2>&1 | tee "$load_log"
load_status=${PIPESTATUS[0]}
set -e

# A clean stop: SIGTERM drains calls and the write queue.
rss_before_stop="$(awk '/^VmRSS/ {print $2 " " $3}' "/proc/$server/status" 2>/dev/null || echo "?")"
kill -TERM "$server"
set +e
wait "$server"
server_status=$?
set -e
trap - EXIT

errors="$(grep -cE ' ERROR |panicked' "$server_log" || true)"
warnings="$(grep -c ' WARN ' "$server_log" || true)"
calls_logged="$(grep -c 'call ended' "$server_log" || true)"
growth="$(sed -nE 's/^server RSS growth under load .*: ([+-]?[0-9.]+) MiB.*/\1/p' "$load_log" | tail -1)"

echo
echo "== soak figures ($minutes min, $calls callers) =="
sed -n '/^== load report ==/,$p' "$load_log" | tail -n +2
echo "server: exit status $server_status after SIGTERM; RSS before the stop $rss_before_stop;" \
    "log: $calls_logged calls ended, $errors error/panic lines, $warnings warnings"
if [ "$warnings" -gt 0 ]; then
    echo "warnings by message:"
    sed -nE 's/.* WARN [^:]+: ([^=]*[^ =]).*/\1/p' "$server_log" | sed -E 's/ [a-z_]+$//' |
        sort | uniq -c | sort -rn | head -10
fi

status=0
[ "$load_status" -eq 0 ] || { echo "FAIL: the load generator found errors or lost records"; status=1; }
[ "$server_status" -eq 0 ] || { echo "FAIL: the server exited with $server_status"; status=1; }
[ "$errors" -eq 0 ] || { echo "FAIL: the server logged errors:"; grep -E ' ERROR |panicked' "$server_log" | head -20; status=1; }
if [ -n "$growth" ] && awk -v g="$growth" -v m="$max_growth_mib" 'BEGIN { exit !(g > m) }'; then
    echo "FAIL: server RSS grew $growth MiB under steady load (limit $max_growth_mib MiB)"
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "soak: PASS"
    [ -n "${SOAK_KEEP:-}" ] || rm -rf "$data"
else
    echo "soak: FAIL (data kept in $data; logs $server_log, $load_log)"
fi
exit "$status"
