#!/usr/bin/env bash
# Build the virtplane test-guest image: an uncompressed kernel plus an initramfs
# that holds busybox, the virtio drivers, Debian's python3.11 and the guest agent.
#
#   bash tools/guest-image/build.sh OUT_DIR
#
# Produces OUT_DIR/vmlinux, OUT_DIR/initramfs.img and OUT_DIR/image.json.
# Debian packages are fetched with `apt-get download` and unpacked with `dpkg -x`
# into OUT_DIR/cache, which is reused by later runs. See README.md beside this file.
#
# Environment:
#   GUESTD_SRC=DIR      agent package to build the guestd wheel from, installed
#                       into /opt/virtplane (default: REPO/guestd)
#   PROTOS_SRC=DIR      directory holding virtplane/v1/guest_channel_pb2.py
#                       (default: REPO/protos)
#   PYTHON=EXE          python that builds the guestd wheel (setuptools) and whose
#                       google.protobuf is copied (default: REPO/.venv/bin/python)
#   REQUIRE_AGENT=1     fail (instead of warning) when the agent, its generated
#                       protobuf module or the protobuf runtime is missing
#   GUEST_CMDLINE=...   kernel command line written to image.json
#   INITRD_COMPRESS=    gzip (default) or none
#   REFRESH=1           ask apt again for the newest package versions
#   KERNEL_PACKAGE=P    kernel package to use (default: what linux-image-amd64 depends on)
set -euo pipefail
umask 022
export LC_ALL=C

log() { printf 'guest-image: %s\n' "$*" >&2; }
warn() { printf 'guest-image: WARNING: %s\n' "$*" >&2; }
die() {
	printf 'guest-image: ERROR: %s\n' "$*" >&2
	exit 1
}

if [ $# -ne 1 ] || [ -z "$1" ]; then die "usage: bash tools/guest-image/build.sh OUT_DIR"; fi

START_NS=$(date +%s%N)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=$OUT/cache
mkdir -p "$CACHE/debs" "$CACHE/x" "$CACHE/kernel"

abs_path() { # relative paths are taken from the repo root
	case "$1" in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$REPO_ROOT/$1" ;;
	esac
}
GUESTD_SRC=$(abs_path "${GUESTD_SRC:-guestd}")
PROTOS_SRC=$(abs_path "${PROTOS_SRC:-protos}")
PYTHON_EXE=${PYTHON:-.venv/bin/python}
case "$PYTHON_EXE" in */*) PYTHON_EXE=$(abs_path "$PYTHON_EXE") ;; esac
REQUIRE_AGENT=${REQUIRE_AGENT:-0}
GUEST_CMDLINE=${GUEST_CMDLINE:-console=ttyS0 panic=-1 quiet}
INITRD_COMPRESS=${INITRD_COMPRESS:-gzip}
KERNEL_META=linux-image-amd64

# Debian packages whose files may go into the image (besides the kernel's modules).
# Shared libraries are taken from them as the ELF NEEDED entries ask; a package
# none of whose files is used is left out of the image and its dpkg status.
PACKAGES=(busybox-static python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
	libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libuuid1)
# Modules /init loads; their dependencies come along.
MODULES=(virtio_pci virtio_console virtio_net virtio_blk button evdev)
# Parts of the standard library the guest never needs.
STDLIB_TRIM=(test idlelib tkinter turtledemo turtle.py ensurepip lib2to3 pydoc_data
	distutils venv unittest/test ctypes/test sqlite3 curses dbm/ndbm.py
	config-3.11-x86_64-linux-gnu __phello__ __hello__.py antigravity.py this.py)
MULTIARCH=x86_64-linux-gnu

case "$INITRD_COMPRESS" in gzip | none) ;; *) die "INITRD_COMPRESS must be gzip or none" ;; esac

# ---------------------------------------------------------------- host tools
need_pkg() { # need_pkg COMMAND DEBIAN_PACKAGE
	command -v "$1" >/dev/null 2>&1 && return 0
	dpkg -s "$2" >/dev/null 2>&1 || {
		log "installing $2 (for $1)"
		apt-get install -y -q "$2" >/dev/null ||
			{ apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; } ||
			die "apt-get install $2 failed"
	}
	command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}
command -v apt-get >/dev/null 2>&1 || die "apt-get is required"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is required"
need_pkg xz xz-utils
need_pkg readelf binutils
need_pkg gzip gzip
need_pkg sha256sum coreutils

# One build at a time per OUT_DIR.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUT/.build.lock"
	flock 9
fi

# ---------------------------------------------------------- package versions
# cache/packages.lock: "ROLE PACKAGE VERSION ARCH" lines (ROLE kernel or pkg).
# It is asked for again only when apt's lists or this script changed, or REFRESH=1.
LOCK=$CACHE/packages.lock
APT_LISTS=/var/lib/apt/lists

resolve_versions() {
	local kpkg show
	kpkg=${KERNEL_PACKAGE:-}
	if [ -z "$kpkg" ]; then
		show=$(apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null) || return 1
		kpkg=$(printf '%s\n' "$show" | sed -n 's/^Depends: *\(linux-image-[^ ,]*\).*/\1/p' | head -n1)
		[ -n "$kpkg" ] || return 1
	fi
	show=$(apt-cache show --no-all-versions "$kpkg" "${PACKAGES[@]}" 2>/dev/null) || return 1
	# one record per package, of this machine's architecture (or "all")
	printf '%s\n' "$show" | awk -v kpkg="$kpkg" -v arch="$(dpkg --print-architecture)" '
		function emit() {
			if (p != "" && (a == arch || a == "all") && !(p in seen)) {
				seen[p] = 1
				print (p == kpkg ? "kernel" : "pkg"), p, v, a
			}
			p = v = a = ""
		}
		/^Package: / { p = $2 }
		/^Version: / { v = $2 }
		/^Architecture: / { a = $2 }
		/^$/ { emit() }
		END { emit() }' >"$LOCK.new"
	local want
	for want in "$kpkg" "${PACKAGES[@]}"; do
		awk -v p="$want" '$2 == p { found = 1 } END { exit !found }' "$LOCK.new" ||
			{ warn "apt knows no package $want"; return 1; }
	done
	mv "$LOCK.new" "$LOCK"
}

lock_is_stale() {
	[ -s "$LOCK" ] || return 0
	[ "${REFRESH:-0}" = 1 ] && return 0
	[ "$LOCK" -ot "${BASH_SOURCE[0]}" ] && return 0
	[ -d "$APT_LISTS" ] && [ "$LOCK" -ot "$APT_LISTS" ] && return 0
	if [ -n "${KERNEL_PACKAGE:-}" ]; then
		awk -v k="$KERNEL_PACKAGE" '$1 == "kernel" && $2 == k { f = 1 } END { exit !f }' "$LOCK" || return 0
	fi
	return 1
}

if lock_is_stale; then
	if ! resolve_versions; then
		if [ -s "$LOCK" ] && [ "${REFRESH:-0}" != 1 ]; then
			warn "could not ask apt for package versions; reusing $LOCK"
			touch "$LOCK"
		else
			log "apt-get update"
			apt-get update -q >/dev/null || die "apt-get update failed"
			resolve_versions || die "cannot resolve package versions with apt-cache"
		fi
	fi
fi

deb_path() { # deb_path PACKAGE VERSION ARCH -> the file name apt-get download uses
	printf '%s/debs/%s_%s_%s.deb\n' "$CACHE" "$1" "${2//:/%3a}" "$3"
}
pkg_key() { printf '%s_%s\n' "$1" "${2//:/%3a}"; }

download_missing() {
	local role pkg ver arch missing=()
	while read -r role pkg ver arch; do
		[ -f "$(deb_path "$pkg" "$ver" "$arch")" ] || missing+=("$pkg=$ver")
	done <"$LOCK"
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt-get download ${missing[*]}"
	(cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null)
}
if ! download_missing; then
	log "download failed; apt-get update and retry"
	apt-get update -q >/dev/null || die "apt-get update failed"
	resolve_versions || die "cannot resolve package versions with apt-cache"
	download_missing || die "apt-get download failed"
fi

# Forget packages the lock no longer names.
declare -A IN_LOCK=()
while read -r role pkg ver arch; do
	IN_LOCK[$(pkg_key "$pkg" "$ver")]=1
	if [ "$role" = kernel ]; then KPKG=$pkg KVERSION=$ver KARCH=$arch; fi
done <"$LOCK"
[ -n "${KPKG:-}" ] || die "no kernel package in $LOCK"
for f in "$CACHE"/debs/*.deb "$CACHE"/x/* "$CACHE"/kernel/*; do
	[ -e "$f" ] || continue
	base=${f##*/}
	base=${base%.deb}
	base=${base%.control}
	case "$f" in */debs/*) base=${base%_*} ;; esac
	[ -n "${IN_LOCK[$base]:-}" ] || rm -rf "$f"
done

# ------------------------------------------------------------ unpack packages
X=() # X[i] = unpacked tree of PACKAGES[i]
declare -A XDIR=()
unpack() { # unpack PACKAGE VERSION ARCH -> cache/x/PACKAGE_VERSION (+ .control)
	local key dir deb
	key=$(pkg_key "$1" "$2")
	dir=$CACHE/x/$key
	deb=$(deb_path "$1" "$2" "$3")
	if [ ! -f "$dir/.unpacked" ]; then
		rm -rf "$dir" "$dir.tmp"
		dpkg-deb -x "$deb" "$dir.tmp"
		dpkg-deb -f "$deb" >"$dir.control"
		touch "$dir.tmp/.unpacked"
		mv "$dir.tmp" "$dir"
	fi
	XDIR[$1]=$dir
}
while read -r role pkg ver arch; do
	if [ "$role" = pkg ]; then unpack "$pkg" "$ver" "$arch"; fi
done <"$LOCK"
for pkg in "${PACKAGES[@]}"; do X+=("${XDIR[$pkg]}"); done
BUSYBOX=${XDIR[busybox-static]}/bin/busybox
[ -x "$BUSYBOX" ] || die "no busybox in busybox-static"

# --------------------------------------------------------------------- kernel
# cache/kernel/KEY/{vmlinux,kver,modroot/lib/modules/KVER/...}: the kernel's XZ
# payload and the modules the guest loads. The 400 MB unpacked package is dropped.
KDIR=$CACHE/kernel/$(pkg_key "$KPKG" "$KVERSION")
if [ ! -f "$KDIR/.done" ] || [ "$(cat "$KDIR/modules.list" 2>/dev/null)" != "${MODULES[*]}" ]; then
	log "unpacking $KPKG $KVERSION"
	rm -rf "$KDIR"
	mkdir -p "$KDIR"
	kdeb=$(deb_path "$KPKG" "$KVERSION" "$KARCH")
	dpkg-deb -f "$kdeb" >"$KDIR/control"
	dpkg-deb -x "$kdeb" "$KDIR/pkg"
	vmlinuz=$(find "$KDIR/pkg/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
	[ -n "$vmlinuz" ] || die "$KPKG has no /boot/vmlinuz-*"
	kver=${vmlinuz##*/vmlinuz-}
	# The bzImage carries the kernel as an XZ stream: try each XZ magic until
	# one decompresses to an ELF file.
	found=
	while read -r off; do
		# tail may die of SIGPIPE once xz has read its stream: only xz's status counts
		set +o pipefail
		if tail -c +"$((off + 1))" "$vmlinuz" 2>/dev/null | xz -dc --single-stream >"$KDIR/vmlinux.tmp" 2>/dev/null &&
			[ "$(head -c 4 "$KDIR/vmlinux.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
			found=1
			break
		fi
	done < <(grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | cut -d: -f1)
	set -o pipefail
	[ -n "$found" ] || die "no XZ-compressed ELF kernel found in $vmlinuz"
	chmod 0644 "$KDIR/vmlinux.tmp"
	mv "$KDIR/vmlinux.tmp" "$KDIR/vmlinux"

	"$BUSYBOX" depmod -b "$KDIR/pkg" "$kver"
	mdir=lib/modules/$kver
	mkdir -p "$KDIR/modroot/$mdir"
	for mod in "${MODULES[@]}"; do
		files=$(awk -F': *' -v m="${mod//-/_}" '{
				n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n)
				if (n == m) { print $1; if ($2 != "") print $2 }
			}' "$KDIR/pkg/$mdir/modules.dep" | tr ' ' '\n')
		[ -n "$files" ] || die "kernel $kver has no module $mod (built in?)"
		for f in $files; do
			mkdir -p "$KDIR/modroot/$mdir/${f%/*}"
			cp "$KDIR/pkg/$mdir/$f" "$KDIR/modroot/$mdir/$f"
		done
	done
	cp "$KDIR/pkg/$mdir/modules.builtin" "$KDIR/modroot/$mdir/"
	"$BUSYBOX" depmod -b "$KDIR/modroot" "$kver"
	echo "$kver" >"$KDIR/kver"
	echo "${MODULES[*]}" >"$KDIR/modules.list"
	rm -rf "$KDIR/pkg"
	touch "$KDIR/.done"
fi
KVER=$(cat "$KDIR/kver")

# ------------------------------------------------------------------ base tree
# Everything but the agent, /init and the package database: rebuilt only when
# the packages, this script or the protobuf runtime's native code change.
PROTOBUF_DIR=
if [ -x "$PYTHON_EXE" ] || command -v "$PYTHON_EXE" >/dev/null 2>&1; then
	PROTOBUF_DIR=$("$PYTHON_EXE" -c 'import google.protobuf,os;print(os.path.dirname(google.protobuf.__file__))' 2>/dev/null) ||
		PROTOBUF_DIR=
fi
UPB_DIR=
[ -n "$PROTOBUF_DIR" ] && [ -d "$PROTOBUF_DIR/../_upb" ] && UPB_DIR=$(cd "$PROTOBUF_DIR/../_upb" && pwd)

BASE=$CACHE/base
BASE_KEY=$( {
	cat "$LOCK" "${BASH_SOURCE[0]}"
	echo "$INITRD_COMPRESS"
	if [ -n "$UPB_DIR" ]; then find "$UPB_DIR" -name '*.so' -type f -exec sha256sum {} +; fi
} | sha256sum | cut -c1-16)
BASE_CPIO=$CACHE/base.cpio
[ "$INITRD_COMPRESS" = gzip ] && BASE_CPIO=$CACHE/base.cpio.gz

# Copy one library NAME, found in the unpacked packages, to /usr/lib/MULTIARCH.
declare -A USED_PKGS=()
find_lib() { # find_lib NAME: sets LIB_SRC (its path in an unpacked package) and LIB_PKG
	local i d
	for i in "${!PACKAGES[@]}"; do
		for d in "lib/$MULTIARCH" "usr/lib/$MULTIARCH"; do
			if [ -e "${X[$i]}/$d/$1" ]; then
				LIB_PKG=${PACKAGES[$i]}
				LIB_SRC=${X[$i]}/$d/$1
				return 0
			fi
		done
	done
	return 1
}
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }

# Add the libraries FILE needs, and theirs, to the base tree. Returns 1 when one is missing.
declare -A HAVE_LIB=()
add_needed() {
	local lib ok=0
	for lib in $(needed "$1"); do
		[ -n "${HAVE_LIB[$lib]:-}" ] && continue
		if ! find_lib "$lib"; then
			MISSING_LIB=$lib
			ok=1
			continue
		fi
		cp -L "$LIB_SRC" "$BASE/usr/lib/$MULTIARCH/$lib"
		USED_PKGS[$LIB_PKG]=1
		HAVE_LIB[$lib]=1
		add_needed "$BASE/usr/lib/$MULTIARCH/$lib" || ok=1
	done
	return $ok
}
add_lib() { # add_lib NAME: a library loaded without a NEEDED entry (ld.so, dlopen)
	find_lib "$1" || die "no $1 in the packages"
	cp -L "$LIB_SRC" "$BASE/usr/lib/$MULTIARCH/$1"
	USED_PKGS[$LIB_PKG]=1
	HAVE_LIB[$1]=1
}

build_base() {
	log "building base tree (python, busybox, modules)"
	rm -rf "$BASE" "$BASE.tmp"
	local B=$BASE.tmp
	BASE=$B
	mkdir -p "$B"/{usr/bin,usr/sbin,"usr/lib/$MULTIARCH",usr/lib64,usr/share}
	mkdir -p "$B"/{dev,proc,sys,run,tmp,root,mnt,opt/virtplane,etc/virtplane,var/log,var/lib/dpkg}
	chmod 1777 "$B/tmp"
	chmod 0700 "$B/root"
	ln -s usr/bin "$B/bin"
	ln -s usr/sbin "$B/sbin"
	ln -s usr/lib "$B/lib"
	ln -s usr/lib64 "$B/lib64"
	ln -s /run "$B/var/run"
	if [ "$(id -u)" = 0 ]; then
		mknod -m 0600 "$B/dev/console" c 5 1
		mknod -m 0666 "$B/dev/null" c 1 3
	fi

	# busybox and its applet links (bin/ and sbin/ live under usr/)
	cp "$BUSYBOX" "$B/usr/bin/busybox"
	USED_PKGS[busybox-static]=1
	local applet
	for applet in $("$BUSYBOX" --list-full); do
		case "$applet" in
		bin/* | sbin/*) applet=usr/$applet ;;
		usr/*) ;;
		*) continue ;;
		esac
		[ -e "$B/$applet" ] || ln -s /usr/bin/busybox "$B/$applet"
	done

	# python3.11 and the standard library
	local pymin=${XDIR[python3.11-minimal]} libmin=${XDIR[libpython3.11-minimal]}
	local libstd=${XDIR[libpython3.11-stdlib]}
	cp "$pymin/usr/bin/python3.11" "$B/usr/bin/python3.11"
	ln -s python3.11 "$B/usr/bin/python3"
	USED_PKGS[python3.11-minimal]=1
	cp -a "$libmin/usr/lib/python3.11" "$B/usr/lib/"
	cp -a "$libstd/usr/lib/python3.11/." "$B/usr/lib/python3.11/"
	USED_PKGS[libpython3.11-minimal]=1
	USED_PKGS[libpython3.11-stdlib]=1
	if [ -f "$libmin/etc/python3.11/sitecustomize.py" ]; then
		mkdir -p "$B/etc/python3.11"
		cp "$libmin/etc/python3.11/sitecustomize.py" "$B/etc/python3.11/"
	fi
	local t
	for t in "${STDLIB_TRIM[@]}"; do rm -rf "$B/usr/lib/python3.11/$t"; done
	find "$B/usr/lib/python3.11" \( -name __pycache__ -o -name 'tests' -o -name '*.exe' \) -prune \
		-exec rm -rf {} +
	rm -f "$B"/usr/lib/python3.11/lib-dynload/{_test,_xx,xx,_ctypes_test}*.so

	# shared libraries: the loader, what NEEDED asks for, and what glibc dlopens
	add_lib ld-linux-x86-64.so.2
	ln -s "../lib/$MULTIARCH/ld-linux-x86-64.so.2" "$B/usr/lib64/ld-linux-x86-64.so.2"
	add_lib libgcc_s.so.1 # pthread_exit/cancel unwinding
	local l
	for l in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do add_lib "$l"; done
	add_needed "$B/usr/bin/python3.11" || die "python3.11 needs $MISSING_LIB, which no package provides"
	local so dropped=()
	for so in "$B"/usr/lib/python3.11/lib-dynload/*.so; do
		add_needed "$so" || {
			rm -f "$so"
			dropped+=("${so##*/} ($MISSING_LIB)")
		}
	done
	[ ${#dropped[@]} -eq 0 ] || log "left out (library not in the image): ${dropped[*]%%.cpython*}"
	if [ -n "$UPB_DIR" ]; then
		for so in "$UPB_DIR"/*.so; do
			[ -e "$so" ] || continue
			add_needed "$so" || warn "${so##*/} needs $MISSING_LIB: protobuf will use its python code"
		done
	fi
	chmod 0755 "$B/usr/lib/$MULTIARCH"/*

	# kernel modules
	mkdir -p "$B/usr/lib/modules"
	cp -a "$KDIR/modroot/lib/modules/$KVER" "$B/usr/lib/modules/"
	USED_PKGS[$KPKG]=1

	# /etc
	local debian_major
	debian_major=$(awk '$2 == "libc6" { if (match($3, /deb[0-9]+/)) print substr($3, RSTART + 3, RLENGTH - 3) }' "$LOCK")
	cat >"$B/etc/os-release" <<-EOF
		PRETTY_NAME="virtplane test guest (busybox, Python 3.11, Debian ${debian_major:-12} packages)"
		NAME="virtplane test guest"
		ID=virtplane-testguest
		ID_LIKE=debian
		VERSION_ID="${debian_major:-12}"
		VERSION="${debian_major:-12} (kernel $KVER)"
	EOF
	echo vp-guest >"$B/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tvp-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$B/etc/hosts"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$B/etc/passwd"
	echo 'root:*:0:0:99999:7:::' >"$B/etc/shadow"
	chmod 0600 "$B/etc/shadow"
	printf 'root:x:0:\ntty:x:5:\n' >"$B/etc/group"
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$B/etc/nsswitch.conf"
	: >"$B/etc/resolv.conf"
	printf 'export PATH=/usr/sbin:/usr/bin\nexport PYTHONPATH=/opt/virtplane\n' >"$B/etc/profile"
	printf '%s\n' "${MODULES[@]}" >"$B/etc/virtplane/modules" # /init loads these
	printf '%s\n' "${!USED_PKGS[@]}" | sort >"$B/etc/virtplane/.packages"

	# The pure-Python standard library goes into /usr/lib/python311.zip (first on
	# python's default sys.path), sources and byte code side by side: it takes a
	# third of the guest RAM the files would, and tracebacks still show source.
	# Byte-compiled by the image's own python, run here through its own loader;
	# unchecked-hash pycs, as the image is never modified.
	local stdlib=$B/usr/lib/python3.11
	guest_python -m compileall -q -b -j 0 --invalidation-mode unchecked-hash \
		-s "$B" -p / -x '/lib-dynload/' "$stdlib" >/dev/null ||
		die "could not byte-compile the standard library"
	guest_python - "$stdlib" "$B/usr/lib/python311.zip" <<-'EOF' || die "could not zip the standard library"
		import os, sys, zipfile
		src, dest = sys.argv[1], sys.argv[2]
		with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
		    for root, dirs, files in os.walk(src):
		        dirs[:] = sorted(d for d in dirs if not (root == src and d == "lib-dynload"))
		        for name in sorted(files):
		            if name.endswith((".py", ".pyc")):
		                path = os.path.join(root, name)
		                info = zipfile.ZipInfo(os.path.relpath(path, src), (2020, 1, 1, 0, 0, 0))
		                info.compress_type = zipfile.ZIP_DEFLATED
		                info.external_attr = 0o644 << 16
		                with open(path, "rb") as f:
		                    z.writestr(info, f.read())
	EOF
	# keep lib-dynload, and os.py: the landmark python finds its prefix by
	find "$stdlib" -mindepth 1 -maxdepth 1 ! -name lib-dynload ! -name os.py -exec rm -rf {} +

	BASE=$CACHE/base
	mv "$B" "$BASE"
	mv "$BASE/etc/virtplane/.packages" "$CACHE/base.packages"
	make_cpio "$BASE" "$BASE_CPIO.tmp"
	mv "$BASE_CPIO.tmp" "$BASE_CPIO"
	echo "$BASE_KEY" >"$CACHE/base.key"
}

guest_python() { # run the image's python3.11 on this host
	local root=${BASE_ROOT:-$BASE}
	env -i PYTHONHOME="$root/usr" PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8 \
		"$root/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/$MULTIARCH" \
		"$root/usr/bin/python3.11" "$@"
}

make_cpio() { # make_cpio DIR FILE: newc archive of DIR's contents, compressed as asked
	(
		cd "$1"
		find . -mindepth 1 ! -name .unpacked | sed 's|^\./||' | LC_ALL=C sort |
			"$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null
	) | if [ "$INITRD_COMPRESS" = gzip ]; then gzip -6 -n; else cat; fi >"$2"
}

if [ ! -f "$BASE_CPIO" ] || [ ! -d "$BASE" ] || [ "$(cat "$CACHE/base.key" 2>/dev/null)" != "$BASE_KEY" ]; then
	rm -f "$CACHE/base.key"
	build_base
fi

# -------------------------------------------------------------- agent overlay
# Rebuilt every run (well under a second): /init, /opt/virtplane, dpkg status.
OVL=$CACHE/overlay
rm -rf "$OVL"
mkdir -p "$OVL/opt/virtplane" "$OVL/var/lib/dpkg" "$OVL/etc/virtplane"
install -m 0755 "$SCRIPT_DIR/init" "$OVL/init"
# test only: the flooding agent /init runs with virtplane.hostile=S
install -D -m 0644 "$SCRIPT_DIR/hostile.py" "$OVL/usr/lib/virtplane-test/hostile.py"

agent_problem() {
	if [ "$REQUIRE_AGENT" = 1 ]; then die "$*"; fi
	warn "$*"
}

# guestd as the wheel installs it (guestd/packaging/build.py, cached beside the
# image): the guestd package and the guest copy of guest_channel_pb2.py, with
# the wheel's dist-info, which gives the agent its version.
if WHEEL=$("$PYTHON_EXE" "$REPO_ROOT/guestd/packaging/build.py" wheel --out "$CACHE/guestd" \
	--guestd-src "$GUESTD_SRC" --protos "$PROTOS_SRC"); then
	"$PYTHON_EXE" -m zipfile -e "$WHEEL" "$OVL/opt/virtplane/" ||
		agent_problem "cannot unpack $WHEEL"
	install -m 0644 "$REPO_ROOT/guestd/packaging/guestd.conf" "$OVL/etc/virtplane/guestd.conf"
else
	agent_problem "could not build the guestd wheel (see above)"
fi

# pure-Python protobuf runtime (and upb, when the image has the libraries it needs)
PB_IMPL=
if [ -n "$PROTOBUF_DIR" ] && [ -f "$PROTOBUF_DIR/__init__.py" ]; then
	mkdir -p "$OVL/opt/virtplane/google"
	(
		cd "$PROTOBUF_DIR/.."
		find protobuf \( -name __pycache__ -o -name compiler -o -name testdata \) -prune -o -name '*.py' -print
	) | while read -r f; do
		mkdir -p "$OVL/opt/virtplane/google/$(dirname "$f")"
		cp "$PROTOBUF_DIR/../$f" "$OVL/opt/virtplane/google/$f"
	done
	upb_ok=
	if [ -n "$UPB_DIR" ]; then
		upb_ok=1
		for so in "$UPB_DIR"/*.so; do
			[ -e "$so" ] || continue
			for lib in $(needed "$so"); do
				[ -e "$BASE/usr/lib/$MULTIARCH/$lib" ] || upb_ok=
			done
		done
		if [ -n "$upb_ok" ]; then
			mkdir -p "$OVL/opt/virtplane/google/_upb"
			cp "$UPB_DIR"/*.so "$OVL/opt/virtplane/google/_upb/"
		fi
	fi
	[ -n "$upb_ok" ] || PB_IMPL=python
else
	agent_problem "no google.protobuf in $PYTHON_EXE"
fi
{
	echo "# sourced by /init before it starts the agent"
	[ -n "$PB_IMPL" ] && echo "export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=$PB_IMPL"
	true
} >"$OVL/etc/virtplane/guestd.env"

if [ -n "$(find "$OVL/opt/virtplane" -name '*.py' -print -quit)" ]; then
	BASE_ROOT=$BASE guest_python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
		-s "$OVL" -p / "$OVL/opt/virtplane" >/dev/null ||
		warn "could not byte-compile /opt/virtplane"
fi

# dpkg status: every package a file of the image came from, and the agent
agent_version=$(sed -n 's/^version *= *"\(.*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" 2>/dev/null | head -n1)
{
	while read -r pkg; do
		[ "$pkg" = "$KPKG" ] && control=$KDIR/control ||
			control=$CACHE/x/$(pkg_key "$pkg" "$(awk -v p="$pkg" '$2 == p { print $3 }' "$LOCK")").control
		awk '
			/^[A-Za-z-]+:/ { key = $1; sub(/:$/, "", key); val = $0; sub(/^[^:]*: */, "", val); f[key] = val; next }
			END {
				print "Package: " f["Package"]
				print "Status: install ok installed"
				split("Priority Section Maintainer Architecture Multi-Arch Source Version", keys, " ")
				for (i = 1; i <= 7; i++) if (keys[i] in f) print keys[i] ": " f[keys[i]]
				print "Description: " f["Description"]
				print ""
			}' "$control"
	done <"$CACHE/base.packages"
	cat <<-EOF
		Package: virtplane-guestd
		Status: install ok installed
		Priority: optional
		Section: admin
		Maintainer: virtplane developers
		Architecture: all
		Version: ${agent_version:-0.0.0}
		Depends: python3.11-minimal, libpython3.11-stdlib
		Description: virtplane guest agent (guestd)

	EOF
} >"$OVL/var/lib/dpkg/status"

# ------------------------------------------------------------------- outputs
OVL_CPIO=$CACHE/overlay.cpio
[ "$INITRD_COMPRESS" = gzip ] && OVL_CPIO=$CACHE/overlay.cpio.gz
for f in "$CACHE"/base.cpio* "$CACHE"/overlay.cpio*; do # archives of the other compression
	if [ "$f" != "$BASE_CPIO" ] && [ "$f" != "$OVL_CPIO" ]; then rm -f "$f"; fi
done
make_cpio "$OVL" "$OVL_CPIO"
# The kernel unpacks concatenated archives one after the other.
cat "$BASE_CPIO" "$OVL_CPIO" >"$OUT/initramfs.img.tmp"
chmod 0644 "$OUT/initramfs.img.tmp"
mv "$OUT/initramfs.img.tmp" "$OUT/initramfs.img"

if ! [ "$OUT/vmlinux" -ef "$KDIR/vmlinux" ]; then
	ln -f "$KDIR/vmlinux" "$OUT/vmlinux.tmp" 2>/dev/null || cp "$KDIR/vmlinux" "$OUT/vmlinux.tmp"
	chmod 0644 "$OUT/vmlinux.tmp"
	mv -f "$OUT/vmlinux.tmp" "$OUT/vmlinux"
fi

json_str() { # JSON string literal of $1
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}
{
	printf '{\n  "kernel": %s,\n' "$(json_str "$OUT/vmlinux")"
	printf '  "initrd": %s,\n' "$(json_str "$OUT/initramfs.img")"
	printf '  "cmdline": %s,\n' "$(json_str "$GUEST_CMDLINE")"
	printf '  "kernel_version": %s\n}\n' "$(json_str "$KVER")"
} >"$OUT/image.json.tmp"
chmod 0644 "$OUT/image.json.tmp"
mv "$OUT/image.json.tmp" "$OUT/image.json"

# QEMU runs as another user: it must be able to reach the files.
d=$OUT
while [ "$d" != / ]; do
	perm=$(stat -c %A "$d")
	[ "${perm:9:1}" = x ] || [ "${perm:9:1}" = t ] ||
		warn "$d is not searchable by other users: QEMU (libvirt-qemu) will not read the image"
	d=$(dirname "$d")
done

elapsed_ms=$((($(date +%s%N) - START_NS) / 1000000))
log "$OUT/initramfs.img $(du -k "$OUT/initramfs.img" | cut -f1) KiB, kernel $KVER, ${elapsed_ms} ms"
