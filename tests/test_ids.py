"""Ids: the right shape, no repeats, and none shared between a process and its forked child."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from agentrun_asgi.ids import new_id, new_request_id


def test_shapes_and_no_repeats_across_batches() -> None:
    ids = [new_id("chatcmpl-") for _ in range(1000)]  # several batches of 256
    request_ids = [new_request_id() for _ in range(1000)]
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", i) for i in ids)
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in request_ids)
    assert len(set(ids)) == len(ids) and len(set(request_ids)) == len(request_ids)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_does_not_reuse_the_parents_batch() -> None:
    # In a fresh interpreter: forking the test process, which has threads by now, may deadlock
    # the child (and Python 3.12+ warns about it).
    code = textwrap.dedent("""
        import os
        from agentrun_asgi.ids import new_id, new_request_id

        new_id(), new_request_id()  # the parent holds a batch of each now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, new_id().encode() + b" " + new_request_id())
            os._exit(0)
        os.waitpid(pid, 0)
        child_id, child_request_id = os.read(read, 200).split(b" ")
        print(child_id.decode() != new_id(), child_request_id != new_request_id())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
