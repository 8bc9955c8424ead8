"""A probe that runs on a sandbox VM during a switch: GET a URL at a steady rate, each request
on a new connection (as users' requests come), until its stdin closes; then one JSON line:
how many requests, how many failed (and the first few failures), the versions that answered.

Standard library only: `inv demo` starts it inside the VM (`python3 probe.py URL HOST`), so
the requests take the VM's own path to the proxy, not the laptop's.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request


def probe(url: str, host: str, stop: threading.Event, rate: float = 20.0) -> dict:
    """Requests at `rate` per second until `stop`; what they got."""
    total = 0
    failures: list[str] = []
    versions: list[str] = []
    begin = time.monotonic()
    while not stop.is_set():
        slot = begin + total / rate
        total += 1
        delay = slot - time.monotonic()
        if delay > 0 and stop.wait(delay):
            total -= 1  # stopped before it was sent
            break
        request = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                version = str(json.load(response).get("version"))
            if not versions or versions[-1] != version:
                versions.append(version)
        except urllib.error.HTTPError as exc:
            failures.append(f"HTTP {exc.code}")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # IncompleteRead
            failures.append(f"{type(exc).__name__}: {exc}")
    return {"requests": total, "failed": len(failures), "failures": failures[:5],
            "versions": versions, "seconds": round(time.monotonic() - begin, 1)}


def main() -> None:
    url, host = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("probing", flush=True)  # the first request is on its way
    print(json.dumps(probe(url, host, stop)), flush=True)


if __name__ == "__main__":
    main()
