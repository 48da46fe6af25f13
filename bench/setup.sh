#!/bin/bash
# Set-up of `make bench`: installs what the peers need, only if it is missing, so a
# machine that has everything stays quiet and offline. A peer that cannot be installed
# is reported here and shown as "not installed" in the bench's table; the bench still
# runs the rest.
#   Debian packages (as root): gdb, libllvm15 (the symbol-resolution subject), binutils
#   (nm), time (GNU time, for the CLI's peak RSS)
#   Frida: a virtual environment bench/.venv with `pip install frida`
set -uo pipefail
cd "$(dirname "$0")"

missing=""
for p in gdb libllvm15 binutils time; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench: not root, cannot install:$missing (the table will say what is missing)" >&2
  else
    echo "bench: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
      echo "bench: could not install:$missing (the table will say what is missing)" >&2
    fi
  fi
fi

if ! .venv/bin/python -c "import frida" >/dev/null 2>&1; then
  echo "bench: installing frida into bench/.venv" >&2
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && ! dpkg -s python3-venv >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv; } >/dev/null 2>&1 \
        && python3 -m venv .venv >/dev/null 2>&1
    fi
  fi
  if [ -x .venv/bin/pip ]; then
    timeout 300 .venv/bin/pip install -q frida >/dev/null 2>&1 \
      || echo "bench: pip install frida failed (the table will say frida is not installed)" >&2
  else
    echo "bench: cannot make a Python venv (the table will say frida is not installed)" >&2
  fi
fi
exit 0
