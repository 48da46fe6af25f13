#!/usr/bin/env bash
# Builds dist/swpatch_VERSION_amd64.deb with dpkg-deb from a release swpatch binary
# (`make deb` builds it with --static-swift-stdlib first, docs/operations.md).
#   build-deb.sh VERSION SWPATCH_BINARY GENERATE_MANUAL_TOOL MAN_DATE MAINTAINER
# Man pages and completions are generated here from the binary's own argument parser
# (generate-manual reads `swpatch --experimental-dump-help`; completions come from
# `swpatch --generate-completion-script`), and swpatch-patch(5) from
# docs/patch-format.md: nothing in the package is written twice by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$1" binary="$2" genman="$3" mandate="$4" maintainer="$5"
out=dist
root="$out/swpatch_${version}_amd64"
deb="$out/swpatch_${version}_amd64.deb"
rm -rf "$root" "$deb"
umask 022
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/include" "$root/lib/systemd/system" \
  "$root/usr/lib/tmpfiles.d" "$root/usr/share/doc/swpatch" "$root/usr/share/man/man1" \
  "$root/usr/share/man/man5" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
install -d -m 0700 "$root/var/lib/swpatch"

# The binary, without its symbol table (the package carries no debug symbols).
install -m 0755 "$binary" "$root/usr/bin/swpatch"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/swpatch"
install -m 0644 include/swpatch.h "$root/usr/include/swpatch.h"
install -m 0644 packaging/deb/swpatchd.service "$root/lib/systemd/system/swpatchd.service"
install -m 0644 packaging/deb/tmpfiles.conf "$root/usr/lib/tmpfiles.d/swpatch.conf"

# Man pages: swpatch(1), every verb in one page, from the parser's definitions.
man=$(mktemp -d)
trap 'rm -rf "$man"' EXIT
bash packaging/gen-man.sh "$root/usr/bin/swpatch" "$genman" "$mandate" "$version" "$man"
gzip -9n -c "$man/swpatch.1" >"$root/usr/share/man/man1/swpatch.1.gz"
gzip -9n -c "$man/swpatch-patch.5" >"$root/usr/share/man/man5/swpatch-patch.5.gz"

# Completions, in the directories each shell's Debian package reads.
# bash-completion sources its scripts: the generated one's #! line is dropped.
"$root/usr/bin/swpatch" --generate-completion-script bash | sed '1{/^#!/d}' \
  >"$root/usr/share/bash-completion/completions/swpatch"
"$root/usr/bin/swpatch" --generate-completion-script zsh >"$root/usr/share/zsh/vendor-completions/_swpatch"
"$root/usr/bin/swpatch" --generate-completion-script fish \
  >"$root/usr/share/fish/vendor_completions.d/swpatch.fish"
chmod 0644 "$root"/usr/share/*/completions/swpatch "$root"/usr/share/zsh/vendor-completions/_swpatch \
  "$root"/usr/share/fish/vendor_completions.d/swpatch.fish

# Docs, the copyright file and a changelog (a native package's changelog.gz).
install -m 0644 README.md "$root/usr/share/doc/swpatch/README.md"
for f in docs/*.md; do install -m 0644 "$f" "$root/usr/share/doc/swpatch/"; done
install -m 0644 packaging/deb/copyright "$root/usr/share/doc/swpatch/copyright"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  printf 'swpatch (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Built from the swpatch repository at commit %s.\n\n' "$commit"
  printf ' -- %s  %s\n' "$maintainer" \
    "$(date -R -d "$mandate")"
} | gzip -9n >"$root/usr/share/doc/swpatch/changelog.gz"
chmod 0644 "$root/usr/share/doc/swpatch/changelog.gz" "$root"/usr/share/man/man*/*.gz

# Maintainer scripts, and the dependencies dpkg-shlibdeps derives from the binary's
# DT_NEEDED libraries (libelf1, libdw1, libcapstone4, libssl3, libc6, ...).
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
shl=$(mktemp -d)
mkdir "$shl/debian"
printf 'Source: swpatch\n\nPackage: swpatch\nArchitecture: amd64\n' >"$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O -e "$OLDPWD/$root/usr/bin/swpatch" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s|@MAINTAINER@|$maintainer|" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/deb/control.in >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
rm -rf "$root"
echo "$deb"
