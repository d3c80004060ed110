"""eventtally's test suites: a package, so its modules import each other as
``tests.support``, ``tests.server_support``, ``tests.reference`` … and the
fixtures live in one place, ``tests/conftest.py``."""
