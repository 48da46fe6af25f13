"""Frida peer of `make bench`: patch OLD (in the main executable) to NEW from LIBRARY.

    frida-patch.py PID LIBRARY OLD NEW

Attaches, loads LIBRARY with Module.load and redirects OLD with Interceptor.replaceFast,
then prints "live" and keeps the patch until a line (or EOF) arrives on stdin; then
detaches (which reverts the patch) and prints "detached". Errors print "error: ..."
and exit 1. swpatch-bench bounds every run with a timeout.
"""
import sys
import traceback

import frida

SCRIPT = """
const library = Module.load(%(library)s);
const replacement = library.getExportByName(%(new)s);
const target = Process.mainModule.getExportByName(%(old)s);
Interceptor.replaceFast(target, replacement);
"""


def main() -> int:
    pid, library, old, new = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    errors = []
    session = frida.attach(pid)
    source = SCRIPT % {k: repr(v) for k, v in {"library": library, "old": old, "new": new}.items()}
    script = session.create_script(source)
    script.on("message", lambda message, data: errors.append(message.get("description", str(message)))
              if message.get("type") == "error" else None)
    script.load()
    if errors:
        print("error: " + errors[0], flush=True)
        session.detach()
        return 1
    print("live", flush=True)
    sys.stdin.readline()
    script.unload()
    session.detach()
    print("detached", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # one line for the bench's table; the traceback to stderr
        traceback.print_exc()
        print(f"error: {type(error).__name__}: {error}", flush=True)
        sys.exit(1)
