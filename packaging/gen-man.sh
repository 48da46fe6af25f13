#!/usr/bin/env bash
# Generates the man pages into OUTDIR: swpatch.1 from the binary's own argument parser
# (swift-argument-parser's generate-manual reads `swpatch --experimental-dump-help`),
# swpatch-patch.5 from docs/patch-format.md. Used by `make man` and `make deb`.
#   gen-man.sh SWPATCH_BINARY GENERATE_MANUAL_TOOL DATE VERSION OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$1" genman="$2" date="$3" version="$4" out="$5"
"$genman" "$binary" --date "$date" --section 1 --authors 'swpatch developers' --output-directory "$out"
# The parser's discussions keep their blank lines, which mdoc warns about: make each a
# paragraph break.
sed -i 's/^$/.Pp/' "$out/swpatch.1"
/usr/bin/python3 packaging/md2man.py docs/patch-format.md "$date" "$version" >"$out/swpatch-patch.5"
