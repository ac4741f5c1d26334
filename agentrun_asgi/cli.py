"""The command line: ``agentrun-asgi serve package.module:function`` (or ``python -m ...``).

It loads the agent first, so that a wrong target fails at once with a clear message instead of
inside a worker, prints the routes and a curl to try, then runs uvicorn. Several workers and
``--reload`` need uvicorn to import the app by name in each process: the target then travels in
``AGENTRUN_AGENT`` and every process imports ``agentrun_asgi:app``, which reads it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import __version__
from .loader import ENV_VAR, AgentLoadError, default_app

if TYPE_CHECKING:
    from .server import AgentRunServer

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (None: no bound), else an error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun-asgi",
        description="Serve an agent function over OpenAI Chat Completions, the OpenAI "
        "Responses API and AG-UI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve an agent with uvicorn",
        description="Serve an agent with uvicorn. TARGET is 'package.module:function' (or a "
        "module-level AgentRunServer); without it, $AGENTRUN_AGENT if set, else the demo agent.",
    )
    serve.add_argument("target", nargs="?", help="the agent, as 'package.module:function'")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default: 127.0.0.1, this machine only; "
                            "pass 0.0.0.0 in a container)")
    serve.add_argument("--port", type=_int_in(0, 65535), default=9000,
                       help="port to bind (default: 9000)")
    serve.add_argument("--workers", type=_int_in(1), default=1,
                       help="worker processes (default: 1)")
    serve.add_argument("--reload", action="store_true",
                       help="restart when a source file changes (development)")
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                       help="log level (default: info)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return 2
    # As `uvicorn` does: modules in the working directory are importable by the console script.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.target:
        os.environ[ENV_VAR] = args.target
    try:
        server = default_app()
    except AgentLoadError as exc:
        print(f"agentrun-asgi: error: {exc}", file=sys.stderr)
        return 2
    print(describe(server, args.host, args.port), flush=True)
    if args.workers > 1 or args.reload:
        import uvicorn

        from .server import uvicorn_log_config

        # Each process builds the app from AGENTRUN_AGENT, which it inherits. uvicorn's
        # supervisors run a plain uvicorn.Server, which on a stop waits for every connection
        # without a limit (an endless stream kept a worker up): bound it as ``start()`` does.
        uvicorn.run("agentrun_asgi:app", host=args.host, port=args.port, workers=args.workers,
                    reload=args.reload, log_level=args.log_level,
                    log_config=uvicorn_log_config(args.log_level),
                    timeout_graceful_shutdown=int(server.lifecycle.grace + 5))  # fmt: skip
    else:
        server.start(host=args.host, port=args.port, log_level=args.log_level)
    return 0


def describe(server: AgentRunServer, host: str, port: int) -> str:
    """The routes the server answers and a curl that tries it."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    # Port 0: the system picks one when uvicorn binds, after this is printed.
    base = f"http://{shown}:{port or '<port>'}"
    agent = os.environ.get(ENV_VAR) or "the demo agent (agentrun_asgi.demo:demo_agent)"
    lines = [f"agentrun-asgi: serving {agent} on {base}", "routes:"]
    if not port:
        lines.insert(1, "(port 0: the system picks a free port, which uvicorn's "
                        '"Uvicorn running on" line names)')
    for route in server.routes:
        lines.append(f"  {','.join(route.methods):<5} {base}{route.path}  ({route.name})")
    lines.append("try:")
    lines.append("  " + _curl(server, base))
    return "\n".join(lines)


def _curl(server: AgentRunServer, base: str) -> str:
    by_name = {route.name: route.path for route in server.routes}
    if "openai.chat_completions" in by_name:
        body = '{"stream":true,"messages":[{"role":"user","content":"hi"}]}'
        path = by_name["openai.chat_completions"]
    elif "agui.run" in by_name:
        body = '{"messages":[{"id":"1","role":"user","content":"hi"}]}'
        path = by_name["agui.run"]
    else:
        return f"curl {base}{server.routes[0].path}" if server.routes else f"curl {base}"
    return (f"curl -N {base}{path} -H 'content-type: application/json' "
            f"-d {shlex.quote(body)}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
