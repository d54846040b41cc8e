#!/usr/bin/env bash
# The main job on one box: installs the system packages the engines need, builds voxanne,
# fetches the offline models (Whisper, Piper, ONNX Runtime, Silero, MiniLM; checksummed),
# configures the example clinic (examples/bright-smile.toml), starts the server with the
# embedded engines, places a simulated Twilio call to the clinic's number whose caller speaks
# (Piper voice, over 8 kHz μ-law) and books a cleaning, prints the transcript and the booking,
# saves what the caller heard, then keeps serving until Ctrl-C. No cloud keys anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh run

export TWILIO_AUTH_TOKEN="${TWILIO_AUTH_TOKEN:-local-demo-secret}"
export VOXANNE_DATA_DIR="${VOXANNE_DATA_DIR:-$PWD/data}"
export VOXANNE_MODELS_DIR="${VOXANNE_MODELS_DIR:-$HOME/.cache/voxanne/models}"
export VOXANNE_ADDR="${VOXANNE_ADDR:-127.0.0.1:8080}"
target="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --release --locked -p api
bin="$target/release/voxanne"
"$bin" models fetch
"$bin" clinic apply examples/bright-smile.toml

"$bin" serve &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
host="${VOXANNE_ADDR%:*}"
port="${VOXANNE_ADDR##*:}"
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
    sleep 0.1
done

"$bin" simulate --to +442071234567 --out "$VOXANNE_DATA_DIR/simulated-call.wav"
echo
echo "Hear it: aplay $VOXANNE_DATA_DIR/simulated-call.call.wav   (left: caller, right: agent)"
echo "The server keeps running on http://$VOXANNE_ADDR (Ctrl-C to stop); call it again with:"
echo "  $bin simulate --to +442071234567 --say \"How much is a check-up?\" --say \"Bye.\""
echo "or talk to the receptionist over text: $bin chat --org bright-smile"
[ "${VOXANNE_DEMO_EXIT:-0}" = 1 ] && exit 0
wait $server
