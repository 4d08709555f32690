#!/usr/bin/env bash
# `make demo`: starts a controller and a hostd, registers this machine as a
# host, creates a VM from the test guest image, starts it, and shows the watch
# stream until the guest agent has reported; then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
IMAGE=build/guest
WORK=$(mktemp -d /tmp/virtplane-demo.XXXXXX)
chmod 755 "$WORK"
port() { "$BIN/python" -c 'from tests.support.stack import free_port; print(free_port())'; }
HOSTD=127.0.0.1:$(port)
CONTROLLER=127.0.0.1:$(port)
export VIRTPLANE_CONTROLLER=$CONTROLLER
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
"$BIN/virtplane-hostd" --listen "$HOSTD" --state-dir "$WORK/hostd" --image-root "$IMAGE" \
    >"$WORK/hostd.log" 2>&1 &
pids+=($!)
"$BIN/virtplane-controller" --listen "$CONTROLLER" --database "sqlite:///$WORK/controller.db" \
    >"$WORK/controller.log" 2>&1 &
pids+=($!)
"$BIN/python" - "$HOSTD" "$CONTROLLER" <<'PY'
import sys, grpc
for address in sys.argv[1:]:
    with grpc.insecure_channel(address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
PY
echo "hostd on $HOSTD, controller on $CONTROLLER"

say "virtplane host add local $HOSTD"
vp host add local "$HOSTD"

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
