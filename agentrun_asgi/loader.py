"""Finding the agent for the module-level ``app``: ``AGENTRUN_AGENT=package.module:function``."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

ENV_VAR = "AGENTRUN_AGENT"


class AgentLoadError(ImportError):
    """The agent named by ``AGENTRUN_AGENT`` (or on the command line) cannot be loaded."""


def load_agent(spec: str) -> Any:
    """The object ``spec`` (``package.module:attribute``) names, or a clear error."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AgentLoadError(f"{spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentLoadError(f"{spec!r}: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:
        # Code at the module's top level failed (a syntax error, a missing setting...).
        raise AgentLoadError(
            f"{spec!r}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AgentLoadError(f"{spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise AgentLoadError(f"{spec!r}: {attr!r} is a {type(target).__name__}, not a function")
    return target


def _check_agent(spec: str, target: Any) -> None:
    """Refuse at load what cannot be called as ``agent(request)``, naming the setting: a class,
    a function of no argument, an ASGI app."""
    from .invoker import call_problem

    attr = spec.partition(":")[2]
    if inspect.isclass(target):
        raise AgentLoadError(f"{spec!r}: {attr!r} is a class, not a function")
    problem = call_problem(target)
    if problem is None:
        return
    kind, signature = problem
    if kind == "asgi":
        raise AgentLoadError(
            f"{spec!r}: {attr!r} is an ASGI app, not an agent function: serve it with "
            f"'uvicorn {spec}', or name the function that answers a request"
        )
    raise AgentLoadError(
        f"{spec!r}: {attr!r} must take one argument, the request; its signature is "
        f"{attr.rpartition('.')[2]}{signature}"
    )


def default_app() -> Any:
    """The server behind ``agentrun_asgi:app``: the env-named agent (or server), else the demo."""
    from .server import AgentRunServer

    spec = os.environ.get(ENV_VAR)
    if spec:
        if spec == f"{__package__}:app":
            # That app is built from this very setting: loading it would recurse without end.
            raise AgentLoadError(
                f"{spec!r} is the app that serves ${ENV_VAR} itself: name your agent function"
            )
        agent = load_agent(spec)
        if isinstance(agent, AgentRunServer):
            # ``module:server`` names a configured server (it is callable too): serve it as is
            # rather than calling it as an agent on the first request.
            return agent
        _check_agent(spec, agent)
    else:
        from .demo import demo_agent

        agent = demo_agent
    return AgentRunServer(agent)
