#!/bin/bash
# A second privileged libvirtd on this machine, standing in for a second host
# (live migration between "two hosts" on one machine; see hostd/README.md).
#
#   tools/second-libvirtd.sh start DIR   starts it; prints its URI
#   tools/second-libvirtd.sh uri DIR     prints its URI
#   tools/second-libvirtd.sh tls-dir DIR prints its migrate_tls_x509_cert_dir
#   tools/second-libvirtd.sh stop DIR    destroys its domains, stops it
#
# It runs in a private mount namespace (unshare -m) where DIR's folders are
# bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /var/log/libvirt, with its own virtlogd and its own
# host_uuid (libvirt refuses to migrate to a host with the same UUID). It
# shares everything else with the machine: the network (migration goes over
# 127.0.0.1), /tmp, the guest image. Its QEMU processes get no cgroups of
# their own, so that they cannot clash with the first libvirtd's.
#
# QEMU's native TLS migration reads its certificates from DIR/migrate-tls
# (its qemu.conf's migrate_tls_x509_cert_dir; a hostd on this libvirtd runs
# with --qemu-tls-dir DIR/migrate-tls, hostd/qemu_tls.py fills it).
#
# Reach it as qemu+unix:///system?socket=DIR/run/libvirt-sock. DIR must be
# short (a unix socket path holds 107 bytes) and must not be on a path the
# libvirt-qemu user cannot traverse. Needs root.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|uri|tls-dir DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")
uri="qemu+unix:///system?socket=$dir/run/libvirt-sock"
tls_dir="$dir/migrate-tls"

running() {
    local pidfile=$1
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# The group QEMU runs as: Debian's libvirt-qemu where it exists.
qemu_group() {
    if getent group libvirt-qemu >/dev/null; then echo libvirt-qemu; else echo root; fi
}

start() {
    if [ "$(id -u)" != 0 ]; then
        echo "second-libvirtd: needs root (a privileged libvirtd)" >&2
        exit 1
    fi
    if running "$dir/libvirtd.pid"; then
        echo "$uri"
        return
    fi
    mkdir -p "$dir"/{etc/qemu,run,lib,cache,log}
    chmod 0755 "$dir"
    # libvirtd refuses to load its QEMU driver when this folder is missing.
    install -d -m 0750 -g "$(qemu_group)" "$tls_dir"
    [ -s "$dir/host-uuid" ] || cat /proc/sys/kernel/random/uuid >"$dir/host-uuid"
    cat >"$dir/etc/libvirtd.conf" <<EOF
# The second libvirtd of tools/second-libvirtd.sh
host_uuid = "$(cat "$dir/host-uuid")"
EOF
    cat >"$dir/etc/qemu.conf" <<EOF
cgroup_controllers = [ ]
migrate_tls_x509_cert_dir = "$tls_dir"
EOF
    : >"$dir/etc/virtlogd.conf"
    # The mounts live as long as a process in the namespace does: the daemons.
    unshare -m --propagation private -- /bin/sh -e -c '
        dir=$1
        mount --bind "$dir/etc" /etc/libvirt
        mount --bind "$dir/run" /run/libvirt
        mount --bind "$dir/lib" /var/lib/libvirt
        mount --bind "$dir/cache" /var/cache/libvirt
        mount --bind "$dir/log" /var/log/libvirt
        virtlogd -d -p "$dir/virtlogd.pid"
        libvirtd -d -p "$dir/libvirtd.pid"
    ' second-libvirtd "$dir"
    for _ in $(seq 300); do
        if [ -S "$dir/run/libvirt-sock" ] && virsh -q -c "$uri" version >/dev/null 2>&1; then
            echo "$uri"
            return
        fi
        sleep 0.1
    done
    echo "second-libvirtd: not answering at $uri after 30 s; see $dir/log" >&2
    stop_daemons
    exit 1
}

stop_daemons() {
    local name pidfile pid
    for name in libvirtd virtlogd; do
        pidfile="$dir/$name.pid"
        running "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$pidfile"
    done
}

stop() {
    if running "$dir/libvirtd.pid"; then
        # Everything on this libvirtd was made by whoever started it.
        local uuid
        for uuid in $(virsh -q -c "$uri" list --all --uuid 2>/dev/null); do
            virsh -q -c "$uri" destroy "$uuid" >/dev/null 2>&1 || true
            virsh -q -c "$uri" undefine "$uuid" >/dev/null 2>&1 || true
        done
    fi
    stop_daemons
}

case $action in
    start) start ;;
    stop) stop ;;
    uri) echo "$uri" ;;
    tls-dir) echo "$tls_dir" ;;
    *) usage ;;
esac
