"""The public surface (STYLE habits 1, 3, 5; docs/python-api.md): compiled classes are frozen and
wrapped by typed Python classes, ``eventtally.__all__`` exports the API, the exception tree
carries structured attributes, and ``_core.pyi`` matches the compiled module (stubtest)."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally import _core
from tests.support import ROOT, agg_def, filter_def, ingest_def, make_engine, query

EXPECTED_ALL = {
    "ConfigError",
    "Engine",
    "EventtallyError",
    "EventtallyIOError",
    "FormatError",
    "IngestStats",
    "JsonError",
    "LimitError",
    "NotFoundError",
    "PathSyntaxError",
    "PreparedBatch",
    "QueryError",
    "ResultArrays",
    "SnapshotError",
}


def test_all_exports_the_public_api() -> None:
    """``eventtally.__all__`` lists the engine, its result types and every exception."""
    assert set(eventtally.__all__) >= EXPECTED_ALL
    assert len(eventtally.__all__) == len(set(eventtally.__all__))
    for name in eventtally.__all__:
        assert hasattr(eventtally, name), name


def test_star_import_gives_exactly_all() -> None:
    """``from eventtally import *`` brings in ``__all__`` and nothing private."""
    namespace: dict[str, Any] = {}
    exec("from eventtally import *", namespace)
    names = {k for k in namespace if k != "__builtins__"}
    assert names == set(eventtally.__all__)
    assert not any(n.startswith("_") for n in names)


def test_compiled_module_is_private() -> None:
    """The compiled module is ``eventtally._core``; nothing public comes from it directly."""
    assert _core.__name__ == "eventtally._core"
    for name in eventtally.__all__:
        obj = getattr(eventtally, name)
        assert getattr(obj, "__module__", "").startswith("eventtally.")
        assert obj.__module__ != "eventtally._core", name


COMPILED_CLASSES = [
    name for name, obj in vars(_core).items() if inspect.isclass(obj) and not name.startswith("_")
]


def _instance(name: str) -> Any:
    engine = make_engine()
    if name == "Engine":
        return engine._inner
    if name == "PreparedBatch":
        return engine.prepare(b"[{}]")._inner
    raise AssertionError(f"no factory for compiled class {name}; add one to this test")


def test_compiled_classes_are_known() -> None:
    """The compiled module defines exactly the classes this suite knows how to check."""
    assert sorted(COMPILED_CLASSES) == ["Engine", "PreparedBatch"]


@pytest.mark.parametrize("name", COMPILED_CLASSES)
def test_compiled_classes_are_frozen(name: str) -> None:
    """Setting or deleting any attribute of a compiled object raises; it has no ``__dict__``."""
    obj = _instance(name)
    assert not hasattr(obj, "__dict__")
    for attr in ["anything", "ingest", "stats", "__doc__"]:
        with pytest.raises((AttributeError, TypeError)):
            setattr(obj, attr, 1)
    with pytest.raises((AttributeError, TypeError)):
        delattr(obj, "stats" if name == "PreparedBatch" else "ingest")


@pytest.mark.parametrize("name", COMPILED_CLASSES)
def test_compiled_classes_cannot_be_subclassed(name: str) -> None:
    """Compiled classes are final."""
    with pytest.raises(TypeError):
        type("Sub", (getattr(_core, name),), {})


@pytest.mark.parametrize("name", COMPILED_CLASSES)
def test_compiled_classes_are_wrapped_by_typed_python_classes(name: str) -> None:
    """Each compiled class has a public Python wrapper of the same name with annotated,
    documented methods, holding the compiled object privately."""
    wrapper = getattr(eventtally, name)
    assert wrapper is not getattr(_core, name)
    assert wrapper.__module__ == "eventtally._engine"
    assert wrapper.__doc__
    assert "__slots__" in vars(wrapper)
    public = [m for m, f in vars(wrapper).items() if not m.startswith("_") and callable(f)] + [
        m for m, f in vars(wrapper).items() if isinstance(f, property)
    ]
    assert public
    for method in public:
        member = inspect.getattr_static(wrapper, method)
        func = member.fget if isinstance(member, property) else member
        func = getattr(func, "__func__", func)
        assert func.__doc__, f"{name}.{method} has no docstring"
        hints = func.__annotations__
        assert "return" in hints, f"{name}.{method} has no return annotation"


def test_engine_methods_of_the_documented_api() -> None:
    """Every method of docs/python-api.md exists on ``Engine``."""
    for method in [
        "ingest",
        "prepare",
        "apply",
        "ingest_file",
        "results",
        "results_arrays",
        "results_multi",
        "groupings",
        "filter_definitions",
        "add_filter",
        "remove_filter",
        "add_ingest",
        "remove_ingest",
        "to_bytes",
        "from_bytes",
        "save",
        "load",
        "merge",
        "drop_before",
        "state_bytes",
    ]:
        assert callable(getattr(eventtally.Engine, method)), method


@pytest.mark.parametrize("cls", [eventtally.IngestStats, eventtally.ResultArrays])
def test_result_types_are_frozen_dataclasses(cls: type) -> None:
    """IngestStats and ResultArrays are frozen dataclasses."""
    assert dataclasses.is_dataclass(cls)
    engine = make_engine()
    obj = (
        engine.ingest(b"[{}]") if cls is eventtally.IngestStats else engine.results_arrays(query())
    )
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, 1)


def test_ingest_stats_attributes_and_to_dict() -> None:
    """IngestStats has the documented attributes and ``to_dict()`` returns plain data."""
    stats = make_engine().ingest(b"[{},null]")
    assert (stats.events, stats.accepted, stats.dropped, stats.timestamp_fallback) == (
        2,
        1,
        {"not_object": 1},
        0,
    )
    assert stats.per_filter == {"f": {"matched": 1, "flattened_elements": 0, "dropped": {}}}
    assert stats.to_dict() == {
        "events": 2,
        "accepted": 1,
        "dropped": {"not_object": 1},
        "timestamp_fallback": 0,
        "per_filter": {"f": {"matched": 1, "flattened_elements": 0, "dropped": {}}},
    }


# --------------------------------------------------------------------------------------------
# The exception tree
# --------------------------------------------------------------------------------------------

ATTRIBUTES = {
    "JsonError": ("offset", "reason"),
    "FormatError": ("offset", "reason"),
    "PathSyntaxError": ("field", "expression", "position", "reason"),
    "ConfigError": ("field", "reason"),
    "QueryError": ("field", "reason"),
    "NotFoundError": ("kind", "id"),
    "SnapshotError": ("reason",),
    "LimitError": ("reason",),
    "EventtallyIOError": ("path", "reason"),
}


def test_root_is_a_value_error() -> None:
    """``EventtallyError`` subclasses ``ValueError``."""
    assert issubclass(eventtally.EventtallyError, ValueError)


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_every_error_is_an_eventtally_error(name: str) -> None:
    """Each documented error class derives from ``EventtallyError`` directly."""
    cls = getattr(eventtally, name)
    assert issubclass(cls, eventtally.EventtallyError)
    # The file error is also an OSError, so `except OSError` around file work catches it.
    extra = (OSError,) if name == "EventtallyIOError" else ()
    assert cls.__bases__ == (eventtally.EventtallyError, *extra)
    assert cls.__doc__


def test_io_error_is_an_os_error_with_errno_and_filename() -> None:
    """A missing file raises EventtallyIOError: an OSError with ENOENT and the path."""
    with pytest.raises(OSError) as info:
        _raise_io()
    err = info.value
    assert isinstance(err, eventtally.EventtallyIOError)
    assert err.errno == errno.ENOENT
    assert err.filename == "/nonexistent/eventtally/batch.ndjson"
    assert str(err).startswith("I/O error on /nonexistent/eventtally/batch.ndjson")


def test_no_undocumented_error_classes() -> None:
    """The exceptions module defines exactly the documented classes."""
    exceptions = importlib.import_module("eventtally.exceptions")
    classes = {
        n
        for n, o in vars(exceptions).items()
        if inspect.isclass(o)
        and issubclass(o, BaseException)
        and o.__module__ == exceptions.__name__
    }
    assert classes == set(ATTRIBUTES) | {"EventtallyError"}


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_errors_can_be_built_with_their_attributes(name: str) -> None:
    """Each error carries its documented attributes and its message."""
    cls = getattr(eventtally, name)
    values = {attr: f"v-{attr}" for attr in ATTRIBUTES[name]}
    err = cls("the message", **values)
    assert str(err) == "the message"
    assert err.message == "the message"
    for attr, value in values.items():
        assert getattr(err, attr) == value


def _raise_json() -> None:
    make_engine().ingest(b"[{")


def _raise_format() -> None:
    make_engine().ingest(b"{}")


def _raise_path() -> None:
    make_engine(ingest_def(), [filter_def(filter="@.a ==")])


def _raise_config() -> None:
    make_engine(ingest_def(), [filter_def(aggregations=[agg_def(1, ("SUM",))])])


def _raise_query() -> None:
    make_engine().results(query("SUM"))


def _raise_not_found() -> None:
    make_engine().results(query(filter_id="nope"))


def _raise_snapshot() -> None:
    eventtally.Engine.from_bytes(b"definitely not a snapshot")


def _raise_io() -> None:
    make_engine().ingest_file("/nonexistent/eventtally/batch.ndjson")


RAISERS = {
    "JsonError": _raise_json,
    "FormatError": _raise_format,
    "PathSyntaxError": _raise_path,
    "ConfigError": _raise_config,
    "QueryError": _raise_query,
    "NotFoundError": _raise_not_found,
    "SnapshotError": _raise_snapshot,
    "EventtallyIOError": _raise_io,
}


@pytest.mark.parametrize("name", sorted(RAISERS))
def test_engine_errors_carry_their_attributes(name: str) -> None:
    """Errors raised by the engine are the documented class with every attribute set."""
    cls = getattr(eventtally, name)
    with pytest.raises(cls) as info:
        RAISERS[name]()
    err = info.value
    assert type(err) is cls
    assert isinstance(err, ValueError)
    for attr in ATTRIBUTES[name]:
        value = getattr(err, attr)
        expected = int if attr in ("offset", "position") else str
        assert isinstance(value, expected), (attr, value)
        if expected is str:
            assert value, attr
    assert str(err)


def test_type_errors_for_wrong_python_types() -> None:
    """Inputs of the wrong Python type raise ``TypeError``, not an EventtallyError."""
    engine = make_engine()
    for call in (
        lambda: engine.ingest(123),  # type: ignore[arg-type]
        lambda: engine.apply(b"[]"),  # type: ignore[arg-type]
        lambda: engine.merge("engine"),  # type: ignore[arg-type]
        lambda: eventtally.Engine(42, []),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError):
            call()


# --------------------------------------------------------------------------------------------
# The stub matches the compiled module
# --------------------------------------------------------------------------------------------


def test_stub_file_ships() -> None:
    """``_core.pyi`` and ``py.typed`` ship next to the package."""
    package = Path(eventtally.__file__).parent
    assert (package / "_core.pyi").is_file()
    assert (package / "py.typed").is_file()


def test_stubtest_passes() -> None:
    """``python -m mypy.stubtest eventtally._core`` finds no difference between stub and
    module."""
    pytest.importorskip("mypy")
    if shutil.which(sys.executable) is None:  # pragma: no cover - defensive
        pytest.skip("no Python executable")
    cmd = [sys.executable, "-m", "mypy.stubtest", "eventtally._core"]
    allowlist = ROOT / ".stubtest-allowlist"
    if allowlist.is_file():
        cmd += ["--allowlist", str(allowlist)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
