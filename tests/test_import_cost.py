"""What ``import eventtally`` loads: the compiled core and the typed wrappers, not numpy nor
``importlib.metadata`` (each costs more than the rest of the import); both come when asked for
(``results_arrays``, ``__version__``), and the typed surface is unchanged meanwhile."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import typing

import numpy as np

import eventtally
from tests.support import ROOT, agg_def, filter_def, ingest_def, query


def _fresh(code: str) -> typing.Any:
    """Runs ``code`` in a new interpreter (nothing imported yet) and returns what it prints as
    JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout)


def test_import_eventtally_loads_neither_numpy_nor_importlib_metadata() -> None:
    """A fresh ``import eventtally`` leaves numpy and ``importlib.metadata`` unimported."""
    loaded = _fresh(
        "import json, sys, eventtally; "
        "print(json.dumps([m for m in ('numpy', 'importlib.metadata') if m in sys.modules]))"
    )
    assert loaded == []


def test_results_arrays_imports_numpy_when_it_makes_arrays() -> None:
    """The first ``results_arrays`` call imports numpy and returns numpy columns."""
    setup = (
        "import json, sys, eventtally; "
        f"e = eventtally.Engine({ingest_def()!r}, [{filter_def(aggregations=[agg_def()])!r}]); "
        'e.ingest(b\'[{"timestamp": "2024-05-14T00:00:00Z"}]\'); '
        "before = 'numpy' in sys.modules; "
        f"r = e.results_arrays({query()!r}); "
        "print(json.dumps([before, 'numpy' in sys.modules, type(r.values).__module__, "
        "r.values.tolist()]))"
    )
    before, after, module, values = _fresh(setup)
    assert (before, after, module) == (False, True, "numpy")
    assert values == [1.0]


def test_version_is_the_distributions_read_on_first_access() -> None:
    """``__version__`` equals the installed distribution's version, also in a fresh process
    where it is the first thing read."""
    assert eventtally.__version__ == importlib.metadata.version("eventtally")
    fresh = _fresh("import json, eventtally; print(json.dumps(eventtally.__version__))")
    assert fresh == eventtally.__version__


def test_unknown_package_attributes_still_raise_attribute_error() -> None:
    """The lazy ``__version__`` does not make other missing names resolve."""
    try:
        eventtally.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("eventtally.no_such_name resolved")


def test_type_hints_of_result_arrays_resolve_to_numpy_types() -> None:
    """``typing.get_type_hints`` resolves the numpy annotations as before the lazy import."""
    hints = typing.get_type_hints(eventtally.ResultArrays)
    assert hints["values"] == np.typing.NDArray[np.float64]
    assert hints["groupings"] == dict[str, np.typing.NDArray[np.object_]]
    assert typing.get_type_hints(eventtally.Engine.results_arrays)["return"] is (
        eventtally.ResultArrays
    )


def test_cli_parser_reads_the_version_only_for_version_flag() -> None:
    """Building the CLI's parser (every command does) does not import ``importlib.metadata``;
    ``--version`` still prints the installed version."""
    loaded = _fresh(
        "import json, sys; from eventtally.cli import build_parser; build_parser(); "
        "print(json.dumps('importlib.metadata' in sys.modules))"
    )
    assert loaded is False
    done = subprocess.run(
        [sys.executable, "-m", "eventtally", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert done.stdout == f"eventtally {importlib.metadata.version('eventtally')}\n"
