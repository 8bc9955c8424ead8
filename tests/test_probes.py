"""The request probes (the fault campaign's, the proxy tests', the demo's) count an answer cut
off in its body as a failed request and go on probing: an `IncompleteRead` once killed the
campaign's probe thread in the middle of a fault, and the requests after it went uncounted."""

from __future__ import annotations

import threading
import time

from conftest import answering_raw

CUT = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 33\r\n"
       b"Connection: close\r\n\r\n")  # then the connection closes: no body


def test_the_fault_campaigns_probe_counts_a_cut_answer_and_keeps_probing():
    from faultkit import Probe

    with answering_raw(CUT) as port:
        probe = Probe(f"http://127.0.0.1:{port}/version", interval=0.02)
        with probe:
            deadline = time.monotonic() + 30  # a loaded machine answers slowly
            while len(probe.samples) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert probe._thread.is_alive()
    assert len(probe.samples) >= 3
    assert {s.status for s in probe.samples} == {"IncompleteRead"}


def test_the_proxy_tests_fetch_and_the_demos_probe_count_a_cut_answer():
    from vmkit import fetch

    from sandbox.probe import probe

    class Target:  # what fetch asks of an App: the request for a path
        def __init__(self, port: int) -> None:
            self.port = port

        def request(self, path: str) -> str:
            return f"http://127.0.0.1:{self.port}{path}"

    with answering_raw(CUT) as port:
        hit = fetch(Target(port), "/version", timeout=2)  # type: ignore[arg-type]
        assert str(hit.status).startswith("IncompleteRead"), hit
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        result = probe(f"http://127.0.0.1:{port}/version", "", stop, rate=20)
    # the first request goes at once: at least one, however slow the machine
    assert result["requests"] >= 1 and result["failed"] == result["requests"], result
    assert all(f.startswith("IncompleteRead") for f in result["failures"]), result
