"""pytest hooks for the test suites: the shared fixtures live in ``support`` (importable by name,
unlike ``conftest``, whose module name the benches' conftest would shadow in one session)."""

from tests.server_support import client, server  # noqa: F401  (fixtures, found by name)
from tests.support import clock, data_dir, engine  # noqa: F401  (fixtures, found by name)
