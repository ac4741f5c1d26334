"""Scale out with Ray Serve: one ``AgentRunServer`` per replica, N replicas behind Serve's proxy.

    from agentrun_asgi.ray_serve import deployment
    app = deployment("my_agents.main:server", num_replicas=4)   # ray.serve.Application
    serve.run(app, route_prefix="/")     # or: serve run my_agents.serve:app

Serve ingresses any ASGI app: ``serve.ingress`` takes an app or a function that builds one,
and calls that function on each replica when it starts. The server is built there, on the
replica, instead of being pickled on the driver (a server holds locks, loggers and the agent's
clients). Serve runs the app's ASGI lifespan on the replica (startup hooks, ``lifespan``) and
relays each ``http.response.body`` message through its proxy as it comes, so SSE frames keep
streaming; a client that leaves is seen by the replica as ``http.disconnect``.

``ray`` is imported only inside :func:`deployment`: importing this module costs nothing and
needs no Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .types import ASGIApp

#: What a replica serves: ``"package.module:attribute"`` naming an ``AgentRunServer`` (or a
#: function returning one), or such a function itself.
ServerSource = str | Callable[[], ASGIApp]


def build_server(source: ServerSource) -> ASGIApp:
    """The ASGI app ``source`` stands for; runs on the replica."""
    from .loader import load_agent
    from .server import AgentRunServer

    target: Any = load_agent(source) if isinstance(source, str) else source
    if isinstance(target, AgentRunServer):
        return target
    app = target()
    if not callable(app):
        raise TypeError(f"{source!r} returned {type(app).__name__}, not an ASGI app")
    return app  # type: ignore[no-any-return]


def deployment(
    server: ServerSource,
    *,
    num_replicas: int | str = 2,
    name: str = "AgentRunServer",
    **options: Any,
) -> Any:
    """A bound Serve application (``ray.serve.Application``) serving ``server`` on replicas.

    ``server`` is an import string (``"package.module:attribute"``, imported on each replica,
    so the module must be importable there: installed, or shipped with a ``runtime_env``), or a
    function returning the server (pickled by Ray: a function of a module the replicas cannot
    import needs ``ray.cloudpickle.register_pickle_by_value(module)``). ``num_replicas`` may be
    ``"auto"`` for autoscaling; ``options`` go to ``serve.deployment`` (``ray_actor_options``,
    ``max_ongoing_requests``, ``autoscaling_config``...).
    """
    try:
        serve = importlib.import_module("ray.serve")
    except ImportError as exc:  # no Ray, or Ray without its serve extra's packages
        raise ImportError(
            f"deployment() needs Ray Serve ({exc}): pip install 'agentrun-asgi[ray]'"
        ) from exc

    def build() -> ASGIApp:
        return build_server(server)

    class AgentRunDeployment:
        """The ingress: Serve forwards every HTTP request to the app ``build`` made."""

    ingress = serve.ingress(build)(AgentRunDeployment)
    return serve.deployment(name=name, num_replicas=num_replicas, **options)(ingress).bind()
