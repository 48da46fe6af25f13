#!/usr/bin/env bash
# `make deb-check`: checks dist/swpatch_VERSION_amd64.deb without installing it on this
# machine. lintian must report no error; the package is unpacked into a scratch root
# (dpkg -x) where the file list is checked, the installed binary runs `--help`, and
# `symbols` and `attach` against a fixture, each man page renders with `man -l`, and
# each completion script loads in its shell (bash and fish complete `swpatch att` to
# `attach`; a missing zsh or fish is skipped, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
deb="$1"
fail() { echo "deb-check: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "no $deb (run make deb)"

echo "== lintian"
lintian --fail-on error --tag-display-limit 0 "$deb" || fail "lintian reports an error"

scratch=$(mktemp -d /tmp/swpatch-deb-check.XXXXXX)
pid=""
cleanup() {
  # Only what this script started, by pid: the fixture, and the daemon the attach started.
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  if [ -f "$scratch/state/swpatchd.pid" ]; then
    kill -TERM "$(cat "$scratch/state/swpatchd.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$scratch/swpatchd.sock" ] || break; sleep 0.1; done
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
dpkg -x "$deb" "$scratch"

echo "== file list"
for f in usr/bin/swpatch usr/include/swpatch.h lib/systemd/system/swpatchd.service \
  usr/lib/tmpfiles.d/swpatch.conf usr/share/man/man1/swpatch.1.gz usr/share/man/man5/swpatch-patch.5.gz \
  usr/share/bash-completion/completions/swpatch usr/share/zsh/vendor-completions/_swpatch \
  usr/share/fish/vendor_completions.d/swpatch.fish usr/share/doc/swpatch/copyright \
  usr/share/doc/swpatch/changelog.gz usr/share/doc/swpatch/operations.md; do
  [ -f "$scratch/$f" ] || fail "missing /$f"
done
[ "$(stat -c %a "$scratch/var/lib/swpatch")" = 700 ] || fail "/var/lib/swpatch is not mode 0700"
dpkg-deb -f "$deb" Depends | grep -q libswift && fail "depends on a Swift runtime package"
if ldd "$scratch/usr/bin/swpatch" | grep -qi swift; then fail "links a shared Swift library"; fi
echo "depends: $(dpkg-deb -f "$deb" Depends)"

echo "== the installed binary"
"$scratch/usr/bin/swpatch" --help | grep -q 'USAGE: swpatch' || fail "swpatch --help"
# symbols, then an attach through a daemon the installed binary starts (its own socket
# and state directory in the scratch root): the fixture's compute(21) goes 42 -> 63.
if [ -x Fixtures/build/loop ] && [ -f Fixtures/build/fix-compute.json ] && [ "$(id -u)" = 0 ]; then
  export SWPATCH_STATE_DIR="$scratch/state" SWPATCH_SOCKET="$scratch/swpatchd.sock"
  chmod 755 "$scratch"
  Fixtures/build/loop 100 >"$scratch/loop.out" 2>&1 &
  pid=$!
  sleep 0.5
  "$scratch/usr/bin/swpatch" symbols "$pid" compute --json | grep -q '"compute"' \
    || fail "swpatch symbols $pid compute"
  echo "symbols: found compute in pid $pid"
  "$scratch/usr/bin/swpatch" attach "$pid" Fixtures/build/fix-compute.json || fail "swpatch attach $pid"
  sleep 0.5
  tail -n 1 "$scratch/loop.out" | grep -q 'compute=63' || fail "after attach: $(tail -n 1 "$scratch/loop.out")"
  echo "attach: pid $pid now prints compute=63"
else
  echo "symbols, attach: skipped (needs root and Fixtures/build/loop: make fixtures)"
fi

echo "== man pages"
for page in "$scratch"/usr/share/man/man*/*.gz; do
  out=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null || true)
  [ -z "$out" ] || fail "man -l $page: $out"
  MANWIDTH=80 man -l "$page" | grep -q NAME || fail "man -l $page renders no NAME"
  echo "rendered: ${page#"$scratch"}"
done

echo "== completions"
# Each shell loads its script and completes `swpatch att` to `attach`.
reply=$(bash -c "source '$scratch/usr/share/bash-completion/completions/swpatch' && complete -p swpatch >/dev/null &&
  COMP_WORDS=(swpatch att) COMP_CWORD=1 COMP_LINE='swpatch att' COMP_POINT=11 && _swpatch swpatch att swpatch &&
  echo \"\${COMPREPLY[*]}\"") || fail "the bash completion does not load"
[ "$reply" = attach ] || fail "bash completes 'swpatch att' to '$reply', not 'attach'"
echo "bash: loads, completes 'swpatch att' to attach"
if command -v zsh >/dev/null; then
  # Completing a word in zsh needs a terminal (zpty): here the script loads and binds
  # _swpatch to swpatch.
  reply=$(zsh -fc "autoload -U compinit && compinit -u -D &&
    source '$scratch/usr/share/zsh/vendor-completions/_swpatch' && print -r -- \${_comps[swpatch]}") \
    || fail "the zsh completion does not load"
  [ "$reply" = _swpatch ] || fail "zsh binds '$reply' to swpatch, not _swpatch"
  echo "zsh: loads, binds _swpatch to swpatch"
else
  echo "zsh: skipped (zsh is not installed)"
fi
if command -v fish >/dev/null; then
  reply=$(fish -c "source '$scratch/usr/share/fish/vendor_completions.d/swpatch.fish'; complete -C 'swpatch att'" \
    | cut -f1) || fail "the fish completion does not load"
  [ "$reply" = attach ] || fail "fish completes 'swpatch att' to '$reply', not 'attach'"
  echo "fish: loads, completes 'swpatch att' to attach"
else
  echo "fish: skipped (fish is not installed)"
fi
echo "deb-check: $deb passed"
