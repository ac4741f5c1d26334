#!/bin/sh
# Several worker processes on one machine, each a uvicorn event loop, under gunicorn's process
# manager (restarts a worker that dies, graceful reloads on SIGHUP). Put one of these per machine
# behind the load balancer; every worker is stateless, so any of them can take any request.
#
#   AGENTRUN_AGENT=my_package.agent:invoke_agent WORKERS=4 BIND=0.0.0.0:9000 \
#     sh examples/run_gunicorn.sh
#
# - AGENTRUN_AGENT names the agent; every worker imports agentrun_asgi:app, which reads it.
# - --graceful-timeout exceeds the server's shutdown_grace (10 s by default), so streams in
#   flight end cleanly on a deploy: the worker class (uvicorn-worker's, telling the server when
#   gunicorn stops it) begins the server's shutdown on gunicorn's SIGTERM.
# - --keep-alive above the load balancer's idle timeout (60 s on most) avoids 502s from
#   connections the balancer reuses just as the worker closes them.
# - --forwarded-allow-ips trusts the balancer's X-Forwarded-For / -Proto (set to its address).
set -eu
exec gunicorn "${APP:-agentrun_asgi:app}" \
  --worker-class agentrun_asgi.gunicorn.UvicornWorker \
  --workers "${WORKERS:-4}" \
  --bind "${BIND:-0.0.0.0:9000}" \
  --graceful-timeout "${GRACEFUL_TIMEOUT:-30}" \
  --keep-alive "${KEEP_ALIVE:-75}" \
  --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
  --log-level "${LOG_LEVEL:-info}"
