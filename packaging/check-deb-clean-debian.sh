#!/usr/bin/env bash
# Installs the Debian package the way the README says, on a clean Debian 12: debootstraps a
# minimal bookworm into a scratch folder, runs `apt install ./ganpo-workbench_*.deb` there (apt
# resolves the package's Depends from Debian's archive), runs `ganpo --version`, the quick demo
# and the workbench offscreen from the installed paths, then `apt purge` + `apt autoremove` and
# checks that every file the package owned is gone, no file of the base system went, and nothing
# is left that no installed package owns (outside what Debian's own packages' scripts generate in
# /etc and /run, which it lists). Prints what apt fetched, the installed size and the time of
# each part.
#   sudo bash packaging/check-deb-clean-debian.sh [DEB] [--mirror URL] [--keep]
# Needs root (chroot), debootstrap and Debian's archive; takes minutes and ~1.5 GB of disk. Not
# part of the test command (check-deb.sh is: it installs into a scratch dpkg root with this
# machine's libraries); run it when the package's dependencies change.
set -euo pipefail
deb="" mirror=http://deb.debian.org/debian keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) mirror=$2; shift ;;
    --keep) keep=1 ;;
    -*) echo "check-deb-clean-debian: unknown option $1 (see the usage at the top of this script)" >&2; exit 2 ;;
    *) deb=$(realpath -m "$1") ;;  # from where the script was started
  esac
  shift
done
cd "$(dirname "$0")/.."
fail() { echo "check-deb-clean-debian: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root for debootstrap and chroot"
command -v debootstrap >/dev/null || fail "needs debootstrap (apt-get install debootstrap)"
[ -n "$deb" ] || deb=$(bash packaging/build-deb.sh | tail -1)
[ -f "$deb" ] || fail "no package at $deb"
deb=$(realpath "$deb")
echo "package: $deb"

root=$(mktemp -d /var/tmp/ganpo-clean-debian.XXXXXX)
cleanup() {
  for m in dev/pts dev proc sys; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
  if [ "$keep" = 1 ]; then echo "kept: $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT
secs() { date +%s; }

t0=$(secs)
debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/ganpo-debootstrap.log 2>&1 ||
  { tail -20 /tmp/ganpo-debootstrap.log >&2; fail "debootstrap failed (log: /tmp/ganpo-debootstrap.log)"; }
echo "debootstrap (minbase bookworm): $(( $(secs) - t0 )) s"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -qq

# What a system's files are, without the package manager's own state, caches, logs and the
# mounted pseudo file systems (those change with any install).
system_files() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./root \
      -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/cache -o -path ./var/log \
      -o -path ./etc/ld.so.cache -o -path ./var/lib/systemd \) -prune -o -print | LC_ALL=C sort)
}
system_files > "$root/tmp/before.txt"
in_root dpkg-query -W -f '${Package}\n' | LC_ALL=C sort > "$root/tmp/packages-before.txt"

cp "$deb" "$root/tmp/"
name=$(basename "$deb")
t0=$(secs)
# chroot starts the command in /: the package's path is ./tmp/NAME, as the README's ./NAME.
in_root apt-get install -y "./tmp/$name" >/tmp/ganpo-apt-install.log 2>&1 ||
  { tail -30 /tmp/ganpo-apt-install.log >&2; fail "apt install ./$name failed (log: /tmp/ganpo-apt-install.log)"; }
echo "apt install ./$name: $(( $(secs) - t0 )) s; $(grep -E '^Need to get|^After this operation' /tmp/ganpo-apt-install.log | tr '\n' ' ')"
echo "packages installed with it: $(grep -c '^Setting up' /tmp/ganpo-apt-install.log)"

in_root ganpo --version
grep -q "^ganpo [0-9]" <<< "$(in_root ganpo --version)" || fail "ganpo --version"
in_root sh -c "cd /tmp && ganpo demo --quick --no-db --output-dir /tmp/demo | tail -3" || fail "the quick demo failed"
started=$(in_root sh -c "QT_QPA_PLATFORM=offscreen XDG_DATA_HOME=/tmp/xdg ganpo-workbench --self-test --db /tmp/ws.sqlite")
grep -q "started with workspace" <<< "$started" || fail "the workbench did not start from the installed paths: $started"
echo "installed programs: --version, quick demo and workbench self-test ok"

owned=$(in_root dpkg -L ganpo-workbench | while read -r f; do [ -d "$root$f" ] || echo "$f"; done)
t0=$(secs)
in_root apt-get purge -y ganpo-workbench >/tmp/ganpo-apt-remove.log 2>&1 || fail "apt purge failed"
in_root apt-get autoremove --purge -y >>/tmp/ganpo-apt-remove.log 2>&1 || fail "apt autoremove failed"
echo "apt purge + autoremove: $(( $(secs) - t0 )) s, $(grep -c '^Removing' /tmp/ganpo-apt-remove.log) packages removed"
for f in $owned; do [ ! -e "$root$f" ] || fail "the package's $f is still there after apt purge"; done
echo "the package's $(echo "$owned" | wc -l) files are gone"
system_files > "$root/tmp/after.txt"
left=$(LC_ALL=C comm -13 "$root/tmp/before.txt" "$root/tmp/after.txt")
gone=$(LC_ALL=C comm -23 "$root/tmp/before.txt" "$root/tmp/after.txt")
[ -z "$gone" ] || fail "files of the base system gone after removal: $(echo "$gone" | head -20)"
# Debian's own packages may leave what their maintainer scripts generated: in /etc (system
# users' shadow backups, machine-id, the CA hash links) and /run (runtime folders, a tmpfs on a
# booted system): listed, not failed. Elsewhere, a file that an installed package owns (one
# that apt kept, see below) is fine; anything else fails.
strays=""
for f in $(echo "$left" | grep -v -e '^\./etc/' -e '^\./run/' || true); do
  in_root dpkg -S "${f#.}" >/dev/null 2>&1 || [ -d "$root/$f" ] || strays="$strays ${f#.}"
done
[ -z "$strays" ] || fail "left behind after purge and autoremove, owned by no package:$strays"
kept=$(LC_ALL=C comm -13 "$root/tmp/packages-before.txt" <(in_root dpkg-query -W -f '${Package}\n' | LC_ALL=C sort))
[ -z "$kept" ] || echo "installed with it and kept by apt (another package now wants them): $(echo $kept)"
[ -z "$left" ] || echo "left in /etc and /run by the dependencies' maintainer scripts: $(echo "$left" | grep -c .) paths, e.g. $(echo "$left" | grep -v '^\./etc/ssl/certs/' | head -8 | tr '\n' ' ')"
echo "check-deb-clean-debian: ok"
