"""The laptop's HTTP questions (the registry's API, the boot check's health URL) against an
address where something other than HTTP answers, e.g. an SSH port in the image name: a clear
error naming what answered, never a traceback."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from deploy.core import registry
from deploy.core.errors import DeployError
from deploy.local import imagebuild

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"


@contextlib.contextmanager
def not_http() -> Iterator[int]:
    """A local TCP port that answers every connection with an SSH banner; yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(BANNER)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@contextlib.contextmanager
def bearer_challenge(realm: str) -> Iterator[int]:
    """A local registry that answers 401 with a bearer challenge naming `realm`."""

    class Challenge(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="r"')
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Challenge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_whose_registry_address_is_not_http_is_named_not_a_traceback():
    with not_http() as port:
        with pytest.raises(DeployError) as err:
            registry.tag_digest(f"127.0.0.1:{port}/app", "v1")
    assert err.value.message == (f"127.0.0.1:{port} did not answer as an HTTP registry: "
                                 f"BadStatusLine: {BANNER.decode().strip()}")
    assert f"127.0.0.1:{port}/app" in err.value.fix


def test_a_token_service_that_is_not_http_is_named():
    with not_http() as token_port:
        realm = f"http://127.0.0.1:{token_port}/token"
        with bearer_challenge(realm) as port, pytest.raises(DeployError) as err:
            registry.tag_digest(f"127.0.0.1:{port}/app", "v1", "user", "secret-password")
    assert err.value.message.startswith(f"cannot get a token from {realm}: BadStatusLine: SSH-2.0")


def test_the_boot_check_says_what_answered_when_it_is_not_http():
    with not_http() as port:
        # several tries: the last one's answer is returned, however slow the first was
        last = imagebuild.wait_for_http(f"http://127.0.0.1:{port}/health", timeout=3,
                                        interval=0.2)
    assert last == f"no HTTP answer (BadStatusLine: {BANNER.decode().strip()})"
