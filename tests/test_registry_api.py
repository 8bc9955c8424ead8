"""The laptop's HTTP questions (the registry's API, the boot check's health URL) against an
address where something other than HTTP answers, e.g. an SSH port in the image name: a clear
error naming what answered, never a traceback."""

from __future__ import annotations

import contextlib
import http.server

import pytest
from conftest import answering_raw, http_serving

from deploy.core import registry
from deploy.core.errors import DeployError
from deploy.local import imagebuild

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"


def bearer_challenge(realm: str) -> contextlib.AbstractContextManager[int]:
    """A local registry that answers 401 with a bearer challenge naming `realm`."""

    class Challenge(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="r"')
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return http_serving(Challenge)


def test_an_image_whose_registry_address_is_not_http_is_named_not_a_traceback():
    with answering_raw(BANNER) as port:
        with pytest.raises(DeployError) as err:
            registry.tag_digest(f"127.0.0.1:{port}/app", "v1")
    assert err.value.message == (f"127.0.0.1:{port} did not answer as an HTTP registry: "
                                 f"BadStatusLine: {BANNER.decode().strip()}")
    assert f"127.0.0.1:{port}/app" in err.value.fix


def test_a_token_service_that_is_not_http_is_named():
    with answering_raw(BANNER) as token_port:
        realm = f"http://127.0.0.1:{token_port}/token"
        with bearer_challenge(realm) as port, pytest.raises(DeployError) as err:
            registry.tag_digest(f"127.0.0.1:{port}/app", "v1", "user", "secret-password")
    assert err.value.message.startswith(f"cannot get a token from {realm}: BadStatusLine: SSH-2.0")


def test_the_boot_check_says_what_answered_when_it_is_not_http():
    with answering_raw(BANNER) as port:
        # several tries: the last one's answer is returned, however slow the first was
        last = imagebuild.wait_for_http(f"http://127.0.0.1:{port}/health", timeout=3,
                                        interval=0.2)
    assert last == f"no HTTP answer (BadStatusLine: {BANNER.decode().strip()})"
