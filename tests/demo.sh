#!/usr/bin/env bash
# `make demo`: starts a controller (TLS, authentication on: its CA and the
# bootstrap admin's token are made at its first start), logs the CLI in,
# adds this machine as a host and starts its hostd, which enrolls with the
# one-time token AddHost returned and then serves mutual TLS only; creates a
# VM from the test guest image, starts it, and shows the watch stream until
# the guest agent has reported; then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
IMAGE=build/guest
WORK=$(mktemp -d /tmp/virtplane-demo.XXXXXX)
chmod 755 "$WORK"
port() { "$BIN/python" -c 'from tests.support.stack import free_port; print(free_port())'; }
HOSTD=127.0.0.1:$(port)
CONTROLLER=127.0.0.1:$(port)
WEB=127.0.0.1:$(port)
STATE=$WORK/controller
# The CLI's settings of this demo only (virtplane login writes them).
export VIRTPLANE_CONFIG=$WORK/virtplane.toml
unset VIRTPLANE_CONTROLLER VIRTPLANE_ADDRESS VIRTPLANE_CA VIRTPLANE_TOKEN VIRTPLANE_INSECURE_DEV
vp() { "$BIN/virtplane" --timeout 60 "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pids=()
cleanup() {
    set +e
    vp vm stop demo >/dev/null 2>&1
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT

read -r KERNEL INITRD CMDLINE < <("$BIN/python" -c '
import json,sys; d=json.load(open(sys.argv[1])); print(d["kernel"], d["initrd"], d["cmdline"])' \
    "$IMAGE/image.json")

say "logs and state in $WORK"
"$BIN/virtplane-controller" --listen "$CONTROLLER" --database "sqlite:///$WORK/controller.db" \
    --state-dir "$STATE" --web-listen "$WEB" >"$WORK/controller.log" 2>&1 &
pids+=($!)
"$BIN/python" - "$CONTROLLER" "$STATE" <<'PY'
import pathlib, sys, time, grpc
controller, state = sys.argv[1], pathlib.Path(sys.argv[2])
deadline = time.monotonic() + 30
while not ((state / "pki/ca.pem").is_file() and (state / "admin.token").is_file()):
    if time.monotonic() > deadline:
        sys.exit("the controller wrote no CA and admin token in 30 s")
    time.sleep(0.1)
creds = grpc.ssl_channel_credentials((state / "pki/ca.pem").read_bytes())
with grpc.secure_channel(controller, creds) as ch:
    grpc.channel_ready_future(ch).result(timeout=30)
PY
echo "controller on $CONTROLLER (TLS, authentication on; its CA and the admin's token in $STATE)"
echo "web page at https://$WEB/ (its certificate from the CA $STATE/pki/ca.pem; sign in with $STATE/admin.token)"

say "virtplane login --address $CONTROLLER --ca $STATE/pki/ca.pem --token-file $STATE/admin.token"
"$BIN/virtplane" login --address "$CONTROLLER" --ca "$STATE/pki/ca.pem" \
    --token-file "$STATE/admin.token"

say "virtplane host add local $HOSTD --token-file $WORK/enroll.token"
vp host add local "$HOSTD" --token-file "$WORK/enroll.token"

say "virtplane-hostd … --controller $CONTROLLER --controller-ca $STATE/pki/ca.pem --enroll-token-file $WORK/enroll.token"
"$BIN/virtplane-hostd" --listen "$HOSTD" --state-dir "$WORK/hostd" --image-root "$IMAGE" \
    --qemu-tls-dir "$WORK/hostd/qemu-tls" \
    --controller "$CONTROLLER" --controller-ca "$STATE/pki/ca.pem" \
    --enroll-token-file "$WORK/enroll.token" >"$WORK/hostd.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    vp host list 2>/dev/null | grep -q " UP " && break
    kill -0 "${pids[-1]}" 2>/dev/null || { tail -5 "$WORK/hostd.log"; exit 1; }
    sleep 0.1
done
grep -h "enrolled as host" "$WORK/hostd.log" | sed 's/^[^:]*: //'
vp host list

say "virtplane vm create demo (1 vCPU, 256 MiB, the test guest image)"
vp vm create demo --vcpus 1 --memory 256 --kernel "$KERNEL" --initrd "$INITRD" \
    --cmdline "$CMDLINE" --nic user

say "virtplane vm watch --until-guest demo   (and, at the same time, virtplane vm start demo)"
"$BIN/virtplane" --timeout 120 vm watch --until-guest demo &
watch=$!
sleep 0.5
start=$EPOCHREALTIME
vp vm start demo >/dev/null
wait "$watch"
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "StartVm → guest report: %.1f s\n", b - a }'

say "virtplane vm show demo"
vp vm show demo
say "virtplane vm list / host list"
vp vm list
vp host list

say "virtplane vm stop demo"
vp vm stop demo
vp vm delete demo
say "done; logs in $WORK"
