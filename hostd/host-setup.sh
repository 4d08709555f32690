#!/usr/bin/env bash
# Prepares this machine as a virtplane host: installs libvirt and QEMU from
# Debian's packages when missing, and starts virtlogd and libvirtd when they
# are not running (there may be no systemd). Idempotent; run as root.
set -euo pipefail

packages=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
          qemu-system-x86 qemu-utils pkg-config gcc python3-dev busybox-static xz-utils
          python3-protobuf)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "host-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Without udev nobody applies Debian's rule for /dev/kvm (group kvm, 0660):
# QEMU, running as libvirt-qemu, then cannot open it, and libvirt re-probes
# QEMU's capabilities on every domain start (tens of seconds each).
if [[ -c /dev/kvm ]] && [[ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]]; then
    echo "host-setup: /dev/kvm to group kvm, mode 0660 (as udev would)"
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if ! pgrep -x virtlogd >/dev/null; then
    echo "host-setup: starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    echo "host-setup: starting libvirtd"
    libvirtd -d
fi
for _ in $(seq 1 100); do
    if virsh -q -c qemu:///system version >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.2
done
echo "host-setup: libvirtd did not answer on qemu:///system" >&2
exit 1
