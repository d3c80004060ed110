"""A provisioned server whose file-size limit a test moves, to make the disk refuse WAL writes.

Run as ``python fsize_server.py DIR``: serves ``DIR`` (the base test config) on 127.0.0.1, prints
the port, then obeys one command per stdin line, answering ``ok`` on stdout:

- ``limit N``: set ``RLIMIT_FSIZE`` to N bytes, so every write that would grow a file past N
  fails with ``EFBIG`` (the kernel refuses it exactly like a full disk refuses a write);
- ``unlimit``: restore the limit the process started with;
- ``quit`` (or EOF): stop the server gracefully.

``SIGXFSZ`` is ignored, so an over-limit write is an ``OSError`` rather than the death of the
process.  Nothing in the server is replaced or patched.
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_support import running_server


def main() -> int:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    directory = Path(sys.argv[1])
    start = resource.getrlimit(resource.RLIMIT_FSIZE)
    with running_server(directory, {"save_interval": 0}) as srv:
        print(srv.port, flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "limit":
                resource.setrlimit(resource.RLIMIT_FSIZE, (int(words[1]), start[1]))
            elif words[0] == "unlimit":
                resource.setrlimit(resource.RLIMIT_FSIZE, start)
            else:
                print(f"unknown command {words[0]!r}", flush=True)
                continue
            print("ok", flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, start)  # the final snapshot must fit
    return 0


if __name__ == "__main__":
    sys.exit(main())
