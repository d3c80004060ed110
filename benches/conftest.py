"""pytest hooks for the benchmarks: fixtures and hooks live in ``bench_support`` (importable by
name, unlike ``conftest``, whose module name the tests' conftest would shadow in one session)."""

from bench_support import (  # noqa: F401  (fixtures and hooks, found by name)
    oracle,
    pytest_generate_tests,
    scratch,
    segment,
)
