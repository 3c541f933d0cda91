#!/usr/bin/env bash
# Checks the Debian package the way a person uses it: builds it (build-deb.sh), checks its
# metadata and files, installs it with dpkg into a scratch root (a dpkg database of its own,
# dependencies taken from this machine), runs `ganpo --version`, `ganpo demo --quick --no-db`
# (unless --no-demo) and the workbench offscreen from the installed paths, removes it again and
# checks that nothing is left behind. Exit 0 when everything holds.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=1
[ "${1:-}" = "--no-demo" ] && demo=0
deb=$(bash packaging/build-deb.sh | tail -1)
echo "package: $deb"
fail() { echo "check-deb: $*" >&2; exit 1; }
# Output is matched from variables (here-strings), not through `program | grep -q`: under
# pipefail, a program that still writes after grep -q has left at its match dies of SIGPIPE and
# the check would fail although the text was there.

info=$(dpkg-deb --info "$deb")
grep -q "^ Package: ganpo-workbench" <<< "$info" || fail "not the ganpo-workbench package"
depends=$(echo "$info" | sed -n 's/^ Depends: //p')
echo "depends: $depends"
for lib in libopenblas0-pthread libtorch libqt6widgets6 libsqlite3; do
  grep -q "$lib" <<< "$depends" || fail "Depends lacks $lib"
done
files=$(dpkg-deb --contents "$deb" | awk '{print $6}')
for f in ./usr/bin/ganpo ./usr/bin/ganpo-workbench ./usr/share/applications/ganpo-workbench.desktop \
         ./usr/share/icons/hicolor/scalable/apps/ganpo-workbench.svg ./usr/share/icons/hicolor/48x48/apps/ganpo-workbench.png \
         ./usr/share/icons/hicolor/256x256/apps/ganpo-workbench.png ./usr/share/mime/packages/ganpo-workbench.xml \
         ./usr/share/metainfo/io.github.ganpo_workbench.metainfo.xml ./usr/share/ganpo-workbench/presets/demo.toml \
         ./usr/share/bash-completion/completions/ganpo ./usr/share/man/man1/ganpo.1.gz; do
  grep -qx "$f" <<< "$files" || fail "the package has no $f; it has:
$files"
done
man_page=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/man/man1/ganpo.1.gz | zcat)
grep -q 'ganpo runs list' <<< "$man_page" || fail "the man page lacks the subcommands' options"
command -v desktop-file-validate >/dev/null && desktop-file-validate packaging/ganpo-workbench.desktop
if command -v lintian >/dev/null; then
  # Errors fail the check; warnings are printed for a person to read.
  lintian --no-tag-display-limit "$deb" | tee /tmp/ganpo-lintian.txt || true
  ! grep -q "^E:" /tmp/ganpo-lintian.txt || fail "lintian reports errors"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkg_root=(dpkg --root="$root" --force-depends --force-not-root --force-script-chrootless --log=/dev/null)
"${dpkg_root[@]}" --install "$deb" >/dev/null
"$root/usr/bin/ganpo" --version
grep -q "^ganpo [0-9]" <<< "$("$root/usr/bin/ganpo" --version)" || fail "ganpo --version"
grep -q "LibTorch" <<< "$(QT_QPA_PLATFORM=offscreen "$root/usr/bin/ganpo-workbench" --version)" || fail "ganpo-workbench --version"
work=$(mktemp -d)
# The workbench from the installed paths, on a workspace of its own: it finds the `ganpo` beside it.
started=$(HOME="$work" XDG_DATA_HOME="$work/data" QT_QPA_PLATFORM=offscreen "$root/usr/bin/ganpo-workbench" \
  --self-test --db "$work/ws.sqlite")
grep -q "started with workspace" <<< "$started" || fail "the workbench did not start: $started"
if [ "$demo" = 1 ]; then
  (cd "$work" && "$root/usr/bin/ganpo" demo --quick --no-db --output-dir "$work/demo" | tail -3)
fi
rm -rf "$work"
"${dpkg_root[@]}" --remove ganpo-workbench >/dev/null
left=$(cd "$root" && find . -mindepth 1 -not -path "./var/lib/dpkg*" -not -type d)
[ -z "$left" ] || fail "left behind after removal: $left"
echo "check-deb: ok"
