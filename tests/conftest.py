"""pytest hooks for the test suites: the shared fixtures live in ``support`` (importable by name,
unlike ``conftest``, whose module name the benches' conftest would shadow in one session)."""

from conftest_server import client, server  # noqa: F401  (fixtures, found by name)
from support import clock, data_dir, engine  # noqa: F401  (fixtures, found by name)
