"""Runs `xmodal <args>` and appends every attempt to reach a non-loopback host to LOG.

    python serve_offline.py LOG demo --model DIR --port N

An audit hook (PEP 578) sees each `socket.connect` and `socket.getaddrinfo` before it happens,
whoever makes it; it is installed before anything else is imported.
"""

import signal
import sys

LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0", "::")


def _is_loopback(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host == "" or host.startswith(LOOPBACK)


def _audit(log_path):
    def hook(event, args):
        if event == "socket.connect" and isinstance(args[1], tuple):
            host = args[1][0]
        elif event == "socket.getaddrinfo" and args[0] is not None:
            host = args[0]
        else:
            return
        if not _is_loopback(host):
            with open(log_path, "a") as log:
                log.write(f"{event} {host}\n")

    return hook


if __name__ == "__main__":
    sys.addaudithook(_audit(sys.argv[1]))
    # Ctrl-C stops Gradio cleanly; a process started in the background may have inherited SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from xmodal.trainers.cli import main

    sys.exit(main(sys.argv[2:]))
