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

# Post-copy live migration (a migration policy's allow_post_copy): the
# destination's QEMU, running as libvirt-qemu, needs userfaultfd. Where the
# kernel keeps it to privileged processes (vm.unprivileged_userfaultfd = 0,
# Debian's default), QEMU refuses post-copy ("Postcopy is not supported").
if [[ -e /proc/sys/vm/unprivileged_userfaultfd ]] &&
    [[ $(cat /proc/sys/vm/unprivileged_userfaultfd) != 1 ]]; then
    echo "host-setup: vm.unprivileged_userfaultfd = 1 (post-copy migration)"
    sysctl -q -w vm.unprivileged_userfaultfd=1 ||
        echo "host-setup: cannot set vm.unprivileged_userfaultfd: post-copy migration will be refused"
fi

# QEMU's native TLS migration (hostd/qemu_tls.py): libvirtd's qemu.conf names
# the folder hostd writes this host's pair into (hostd --qemu-tls-dir). libvirtd
# does not load its QEMU driver while a folder it names is missing: the folder
# comes first, and a running libvirtd is restarted to read the new setting
# (its domains run on).
qemu_conf=/etc/libvirt/qemu.conf
qemu_tls_dir=/etc/pki/libvirt-migrate
qemu_group=root
getent group libvirt-qemu >/dev/null && qemu_group=libvirt-qemu
restart_libvirtd=0
if [[ ! -d $qemu_tls_dir ]]; then
    echo "host-setup: creating $qemu_tls_dir (QEMU's TLS migration credentials)"
    install -d -m 0750 -g "$qemu_group" "$qemu_tls_dir"
fi
named=$(sed -nE 's/^[[:space:]]*migrate_tls_x509_cert_dir[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$qemu_conf")
if [[ -z $named ]]; then
    echo "host-setup: $qemu_conf: migrate_tls_x509_cert_dir = \"$qemu_tls_dir\""
    printf '\n# virtplane: QEMU TLS migration credentials (hostd --qemu-tls-dir)\nmigrate_tls_x509_cert_dir = "%s"\n' \
        "$qemu_tls_dir" >>"$qemu_conf"
    restart_libvirtd=1
elif [[ $named != "$qemu_tls_dir" ]]; then
    echo "host-setup: $qemu_conf names $named for TLS migration: run hostd with --qemu-tls-dir $named"
fi

# Console logs (a VM's serial port, a file chardev) are written through
# virtlogd, which rotates them: qemu.conf's stdio_handler stays "logd" (its
# default), and virtlogd.conf sets the size of a log and how many old ones are
# kept. A guest printing without end then costs at most
# (1 + max_backups) x max_size on disk.
stdio=$(sed -nE 's/^[[:space:]]*stdio_handler[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$qemu_conf")
if [[ -n $stdio && $stdio != logd ]]; then
    echo "host-setup: $qemu_conf: stdio_handler = \"logd\" (console logs rotated by virtlogd)"
    sed -i -E 's/^([[:space:]]*stdio_handler[[:space:]]*=)/# virtplane: was \1/' "$qemu_conf"
    printf '\n# virtplane: console logs through virtlogd (rotated)\nstdio_handler = "logd"\n' >>"$qemu_conf"
    restart_libvirtd=1
fi
virtlogd_conf=/etc/libvirt/virtlogd.conf
restart_virtlogd=0
for setting in "max_size = 2097152" "max_backups = 3"; do
    key=${setting%% *}
    if [[ -f $virtlogd_conf ]] && ! grep -qE "^[[:space:]]*$key[[:space:]]*=" "$virtlogd_conf"; then
        echo "host-setup: $virtlogd_conf: $setting"
        printf '# virtplane: console logs rotated\n%s\n' "$setting" >>"$virtlogd_conf"
        restart_virtlogd=1
    fi
done
if ((restart_virtlogd)) && [[ -s /run/virtlogd.pid ]] && kill -0 "$(cat /run/virtlogd.pid)" 2>/dev/null; then
    echo "host-setup: virtlogd re-reads its settings"
    kill -USR1 "$(cat /run/virtlogd.pid)"  # it re-executes itself, keeping its open logs
fi
if ! pgrep -x virtlogd >/dev/null; then
    echo "host-setup: starting virtlogd"
    virtlogd -d
fi
if ((restart_libvirtd)) && [[ -s /run/libvirtd.pid ]] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
    echo "host-setup: restarting libvirtd (qemu.conf changed)"
    pid=$(cat /run/libvirtd.pid)
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    libvirtd -d
elif ! pgrep -x libvirtd >/dev/null; then
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
