"""A TCP forwarder between network namespaces (a standalone script).

usage: python forward.py [--listen-netns FILE] [--connect-netns FILE] PORT TARGET_HOST:PORT

Listens on 127.0.0.1:PORT (inside the namespace FILE, if given) and forwards each connection to
TARGET (reached from inside the other namespace, if given). The sandbox uses it both ways:
every VM reaches the laptop's registry as its own 127.0.0.1:5000 (a name Docker trusts without
TLS), and the tests reach an app published on a VM's loopback as `ssh -L` would.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15
NAME = b"dsb-forward"  # the process name `ps` and the sandbox's pid checks see


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def enter(netns: str | None) -> None:
    """Move the calling thread (only it) into the network namespace file `netns`."""
    if netns:
        fd = os.open(netns, os.O_RDONLY)
        try:
            _libc_call("setns", fd, CLONE_NEWNET)
        finally:
            os.close(fd)


def in_thread(netns: str | None, make: Callable[[], T]) -> T:
    """Run `make()` in a short-lived thread inside `netns`; its result (a socket keeps the
    namespace it was made in)."""
    value: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            enter(netns)
            value.append(make())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return value[0]


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src closes; then half-close dst."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def connect(client: socket.socket, target: tuple[str, int], netns: str | None) -> None:
    """Connect to the target (inside `netns`) and pump both ways; close the client if it fails."""
    try:
        enter(netns)  # this connection's own thread
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
    pump(client, upstream)


def serve(server: socket.socket, target: tuple[str, int], netns: str | None) -> None:
    """Accept forever; two threads per connection."""
    while True:
        client, _ = server.accept()
        threading.Thread(target=connect, args=(client, target, netns), daemon=True).start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-netns")
    parser.add_argument("--connect-netns")
    parser.add_argument("port", type=int)
    parser.add_argument("target")
    args = parser.parse_args(argv[1:])
    host, _, target_port = args.target.rpartition(":")
    _libc_call("prctl", PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)
    server = in_thread(args.listen_netns,
                       lambda: socket.create_server(("127.0.0.1", args.port), backlog=64))
    print(f"listening on 127.0.0.1:{args.port} in {args.listen_netns or 'this namespace'}, "
          f"forwarding to {args.target} in {args.connect_netns or 'this namespace'}", flush=True)
    serve(server, (host, int(target_port)), args.connect_netns)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
