"""Benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

Importing this package must stay free of third-party imports: the AgentRun SDK target runs it
from a separate interpreter that has only that SDK installed.
"""
