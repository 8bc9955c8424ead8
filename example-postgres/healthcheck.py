"""The container's health check: exit 0 when `GET URL` answers 200; else say why, exit 1.

Docker runs it every 2 s in every running app container, so it is kept cheap: started as
`python -I -S healthcheck.py URL` (no site-packages, no environment) and speaking HTTP over a
bare socket, it costs a fifth of the CPU of a `python -c "import urllib.request; ..."` check.
Docker keeps the last line it prints (`docker inspect`, and `fab deploy` names it).
"""

import socket
import sys


def status_of(url: str, timeout: float = 2.0) -> bytes:
    """The status code of `GET url` (http only), as bytes; b'' when there is no status line."""
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    with socket.create_connection((host, int(port or 80)), timeout=timeout) as conn:
        conn.sendall(f"GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = conn.recv(1024)
            if not chunk:
                break
            head += chunk
    fields = head.split(b" ", 2)
    return fields[1] if len(fields) > 1 else b""


def main(url: str) -> int:
    try:
        status = status_of(url)
    except OSError as exc:
        print(f"{url}: {exc}")
        return 1
    if status != b"200":
        print(f"{url}: answered {status.decode(errors='replace') or 'no status line'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
