"""``python -m benchmarks.profile``: where a server's time goes under load (py-spy, sampled).

Starts one target (pinned to core 0), loads one work item with wrk on core 1 while
``py-spy record`` samples the server, then prints the functions with the most samples of their
own (self) and in total (inclusive), and self time per package. Needs ``py-spy`` (pip) and
``wrk``; the server runs with the same flags as in ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import loadgen
from .runner import WORK, Results, build_targets
from .servers import free_port, spawn, stop, stop_all, wait_first_200

#: Frames every sample passes through (the process's entry and the event loop): left out of
#: the inclusive list, where they would only fill the top.
_OUTER = ("click/", "runpy", "uvicorn/main.py", "uvicorn/server.py", "uvicorn/_compat.py",
          "uvicorn/__main__.py", "asyncio/runners.py", "asyncio/base_events.py")  # fmt: skip
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _component(path: str) -> str:
    """A package-level name for a source file: site-packages/<pkg>, agentrun_asgi, stdlib..."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    for name in ("agentrun_asgi", "benchmarks"):
        if f"/{name}/" in path or path.startswith(f"{name}/"):
            return name
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 2)
        return "stdlib:" + (rest[1] if len(rest) > 1 else "?")
    return path or "?"


def _short(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if not match:
        return frame, "?"
    path = match.group("file")
    shown = path.split("site-packages/", 1)[-1]
    for name in ("agentrun_asgi/", "benchmarks/"):
        if name in shown:
            shown = name + shown.split(name, 1)[1]
    return f"{match.group('func')} ({shown})", path


def summarize(collapsed: str, top: int) -> list[str]:
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    by_component: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]  # fmt: skip
        if not frames:
            continue
        samples += count
        leaf, leaf_path = frames[-1]
        self_counts[leaf] += count
        by_component[_component(leaf_path)] += count
        for name in {name for name, _ in frames}:
            total_counts[name] += count
    if not samples:
        return ["no samples (is py-spy allowed to ptrace the server?)"]
    lines = [f"{samples} samples of the busy server thread"]
    lines.append(f"\nself time by package (top {top}):")
    for name, count in by_component.most_common(top):
        lines.append(f"  {100 * count / samples:5.1f}%  {name}")
    lines.append(f"\nfunctions by self time (top {top}):")
    for name, count in self_counts.most_common(top):
        lines.append(f"  {100 * count / samples:5.1f}%  {name}")
    lines.append(f"\nfunctions by inclusive time, entry and loop frames left out (top {top}):")
    inner = [(n, c) for n, c in total_counts.most_common() if not any(o in n for o in _OUTER)]
    for name, count in inner[:top]:
        lines.append(f"  {100 * count / samples:5.1f}%  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--target", default="project", choices=("floor", "starlette", "project", "sdk"))
    p.add_argument("--work", default="json", choices=tuple(WORK))
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sdk-python", metavar="PATH")
    p.add_argument("--raw", metavar="PATH", help="keep py-spy's collapsed stacks here")
    args = p.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy not found: pip install py-spy")
        return 2
    if not loadgen.wrk_path():
        print("wrk not found: apt-get install -y wrk")
        return 2
    wanted = argparse.Namespace(targets=f"floor,{args.target}", sdk_python=args.sdk_python)
    target = next(t for t in build_targets(wanted, Results()) if t.name == args.target)
    if target.skip:
        print(f"skipped {target.name}: {target.skip}")
        return 2
    kind, body = WORK[args.work]
    path = target.paths[kind]
    port = free_port()
    proc = spawn(target, port)
    raw = Path(args.raw) if args.raw else Path(tempfile.mkstemp(suffix=".txt")[1])
    try:
        wait_first_200(proc, port, target.paths["openai"], WORK["json"][1])
        loadgen.run_wrk(port, path, body, args.connections, 1)  # warm up
        load: dict[str, loadgen.Run] = {}
        runner = threading.Thread(
            target=lambda: load.update(run=loadgen.run_wrk(port, path, body, args.connections,
                                                           args.seconds + 1)))  # fmt: skip
        runner.start()
        subprocess.run(
            [py_spy, "record", "--pid", str(proc.pid), "--rate", str(args.rate), "--duration",
             str(args.seconds), "--format", "raw", "--output", str(raw), "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        runner.join()
    finally:
        stop(proc)
        stop_all()
    run = load.get("run")
    print(f"{target.name} / {args.work}: {run.rps:,.0f} req/s under py-spy ({args.rate} Hz, "
          f"--nonblocking), wrk -c{args.connections} -d{args.seconds + 1}s")  # fmt: skip
    for line in summarize(raw.read_text(), args.top):
        print(line)
    if not args.raw:
        raw.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
