"""The README's benchmarks in their quick mode, once per CI run: they run to the end and print
their tables. No figure is held to a target here (speed targets are met in the benchmarks'
own full runs, which print them); what is checked is that the commands work."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, child_env, output


def bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=1200,
                          check=False)


def test_bench_run_quick_prints_every_figure(sandbox: object) -> None:
    proc = bench("run.py", "--quick")
    out = output(proc)
    assert proc.returncode == 0, out[-4000:]
    rows = re.findall(r"^\| (\d\w?) [^|]*\| ([^|]+) \| [^|]+ \| (met|MISSED|not measured) \|$",
                      out, re.MULTILINE)
    assert [number for number, _, _ in rows] == [
        "1a", "1b", "1c", "2", "2", "2", "3", "4a", "4b", "5", "5"], out
    assert re.search(r"^machine: .+ cores", out, re.MULTILINE)


def test_bench_proxy_quick_loses_no_request_behind_caddy(sandbox: object) -> None:
    proc = bench("proxy.py", "--quick")
    out = output(proc)
    assert proc.returncode == 0, out[-4000:]  # exit 1: a request failed behind the proxy
    rows = re.findall(r"^\| (recreate|proxy) \| ([^|]+) \| (\d+) \| (\d+) \|", out, re.MULTILINE)
    assert [(mode, what.strip()) for mode, what, _, _ in rows] == [
        ("recreate", "deploy v2"), ("recreate", "rollback to v1"),
        ("proxy", "deploy v2"), ("proxy", "rollback to v1")], out
    assert all(int(n) > 0 for _, _, n, _ in rows)  # the probe ran through every switch
    assert [int(bad) for mode, _, _, bad in rows if mode == "proxy"] == [0, 0]
