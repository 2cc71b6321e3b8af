#!/usr/bin/env bash
# The skiff demo: run a WASI program twice (the second start loads compiled
# code from the cache instead of compiling), then serve an HTTP component
# with a fresh instance per request, then watch limits stop hostile guests,
# then push to skiff's own registry (token auth, scan on push) and run the
# image by reference, then drive `skiff serve` with the real AWS CLI.
# Installs the Wasm targets it needs; builds skiff and the guests.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null
target="${CARGO_TARGET_DIR:-target}"
echo "building skiff (release) and the demo guests; a first build takes several minutes..."
cargo build --release --locked --quiet
cargo build --release --locked --quiet --manifest-path wasm-apps/Cargo.toml \
    --target wasm32-wasip1 --target wasm32-wasip2 --target-dir "$target/wasm-apps"
skiff="$target/release/skiff"
apps="$target/wasm-apps"
hello_p1="$apps/wasm32-wasip1/release/hello.wasm"
hello_p2="$apps/wasm32-wasip2/release/hello.wasm"
sleeper_p1="$apps/wasm32-wasip1/release/sleeper.wasm"
http_hello="$apps/wasm32-wasip2/release/http_hello.wasm"

# A fresh data dir, so the first run really has nothing cached.
export SKIFF_DATA_DIR="$(mktemp -d)"
trap 'rm -rf "$SKIFF_DATA_DIR"' EXIT

now_us() { echo $(( $(date +%s%N) / 1000 )); }
timed() {
    local start end
    start=$(now_us)
    "$@"
    end=$(now_us)
    elapsed=$(( end - start ))
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. skiff run: a WASI core module, first run (compiles, then caches the code)"
echo "\$ skiff run -e NAME=demo hello.wasm one two"
timed "$skiff" run -e NAME=demo "$hello_p1" one two
first=$elapsed
echo "   -> ${first} µs"

step "2. the same module again: compiled code comes from the cache"
timed "$skiff" run -e NAME=demo "$hello_p1" one two
second=$elapsed
echo "   -> ${second} µs, $(( first / (second > 0 ? second : 1) ))x faster than the first run"

step "3. a WASI 0.2 component, exit code of its choosing"
set +e
"$skiff" run "$hello_p2" --exit 7
echo "   -> exit status $?"
set -e

step "4. an HTTP component (wasi:http/proxy): a fresh instance per request"
log="$SKIFF_DATA_DIR/serve.log"
"$skiff" run -p 127.0.0.1:0:80 "$http_hello" >"$log.out" 2>"$log" &
server=$!
for _ in $(seq 1 200); do grep -q "Serving HTTP" "$log" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's|^Serving HTTP on \(http://[^/]*/\).*|\1|p' "$log")
echo "\$ skiff run -p 127.0.0.1:0:80 http_hello.wasm   # $(head -n1 "$log")"
fetch() { python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; }
for path in hello count count; do
    echo "\$ GET ${url}${path}"
    fetch "${url}${path}"
done
echo "(/count is 1 every time: no state survives between requests)"
kill -TERM "$server"
wait "$server" && echo "SIGTERM: in-flight requests drained, exit status 0"

step "5. limits: a memory bomb under -m 32m, a spinning guest under --timeout 1s"
set +e
"$skiff" run -m 32m "$apps/wasm32-wasip1/release/mem-grow.wasm" | tail -n 1
echo "   -> exit status ${PIPESTATUS[0]}"
"$skiff" run --timeout 1s "$apps/wasm32-wasip1/release/cpu-burn.wasm"
echo "   -> exit status $?"
set -e

step "6. the registry: token auth, scan on push, run by reference"
reg_log="$SKIFF_DATA_DIR/registry.log"
"$skiff" registry --addr 127.0.0.1:0 --auth all --scan-on-push 2>"$reg_log" &
registry=$!
for _ in $(seq 1 200); do grep -q "Registry listening" "$reg_log" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's|^Registry listening on http://\([^/]*\)/.*|\1|p' "$reg_log")
echo "\$ skiff registry --auth all --scan-on-push    # on $addr"
echo "\$ skiff registry token | skiff login $addr -u AWS --password-stdin"
"$skiff" registry token --ttl 1h 2>/dev/null | "$skiff" login "$addr" -u AWS --password-stdin
echo "\$ skiff push hello.wasm $addr/demo/hello:v1"
"$skiff" push "$hello_p2" "$addr/demo/hello:v1"
for _ in $(seq 1 100); do
    "$skiff" repo findings demo/hello v1 2>/dev/null | grep -q COMPLETE && break; sleep 0.05
done
echo "\$ skiff repo findings demo/hello v1"
"$skiff" repo findings demo/hello v1
echo "\$ skiff run $addr/demo/hello:v1 from-the-registry"
"$skiff" run "$addr/demo/hello:v1" from-the-registry
echo "\$ skiff images"
"$skiff" images
kill -TERM "$registry"
wait "$registry" || true

step "7. skiff serve: the ECS API, driven only by the AWS CLI (examples/ecs)"
command -v aws >/dev/null 2>&1 || python3 -m pip install --quiet awscli
serve_log="$SKIFF_DATA_DIR/serve.log"
"$skiff" serve --api-addr 127.0.0.1:0 --registry-addr 127.0.0.1:0 2>"$serve_log" &
serve=$!
for _ in $(seq 1 200); do grep -q "API on" "$serve_log" 2>/dev/null && break; sleep 0.05; done
api=$(sed -n 's|^skiff serve: API on \(http://[^/]*\)/.*|\1|p' "$serve_log")
serve_registry=$(sed -n 's|.*registry on \([^,]*\),.*|\1|p' "$serve_log")
echo "\$ skiff serve    # API on $api, registry on $serve_registry"
"$skiff" push "$hello_p1" "$serve_registry/hello:v1" >/dev/null
"$skiff" push "$sleeper_p1" "$serve_registry/sleeper:v1" >/dev/null
SKIFF_API="$api" bash "$(dirname "$0")/ecs/walkthrough.sh"
kill -TERM "$serve"
wait "$serve" || true
