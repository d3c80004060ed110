"""A decoder of Metrics API answers as strict as the Grafana plugin's Go backend.

The plugin (aggregations-io/grafana-plugin, ``pkg/plugin``) reads every answer with Go's
``encoding/json`` into typed structs, so one value of the wrong JSON type fails the whole panel.
This module holds the test suites to that, in its own words (nothing is copied from the plugin):

- The JSON layer refuses what Go refuses: ``NaN``/``Infinity`` (``parse_constant``), numbers
  beyond ``float64``, invalid UTF-8, anything but one JSON value.
- Each field is checked against the Go type it lands in: ``string`` and ``bool`` take their JSON
  type (or ``null``, which Go leaves as the zero value); ``int64``/``int32`` take only an integer
  *literal* in range (Go refuses ``1.0`` and ``1e3``); ``float64`` any finite number;
  ``null.Time`` an RFC 3339 string with an offset; ``map[string]string`` an object of strings.
- On top, the rules eventtally promises for every answer (``docs/queries.md``), which are
  stricter than Go where a looser answer would decode but show wrong or empty panels:
  ``dtSecLater`` an integer literal, ``dt`` with an offset, grouping values strings (never
  ``null``), separators without ``queryId`` and with a non-null ``groupings`` object, one key
  set for all separators of a query, every value row naming its query (also in a one-query
  batch), and ``/filter-definitions`` carrying ``groupings`` (the grouping paths, which the
  query editor reads) with integer aggregation ids.

Every function raises :class:`StrictDecodeError` (an ``AssertionError``, so a failing rule fails
the test that made the request) naming the row and the rule.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
CALCULATIONS = frozenset(
    {"COUNT", "SUM", "AVG", "MAX", "MIN", "APPROX_COUNT_DISTINCT", "PERCENTILES"}
)
# time.RFC3339 as Go parses it: fraction optional, the offset required ("Z" or ±hh:mm).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})\Z")


class StrictDecodeError(AssertionError):
    """An answer the plugin's Go backend would refuse, or decode into a wrong panel."""


class _FloatLiteral(float):
    """A JSON number written with a fraction or exponent: Go refuses it for integer fields."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise StrictDecodeError(f"{name} is not JSON: Go's encoding/json refuses it")


def _float_literal(text: str) -> _FloatLiteral:
    value = float(text)
    if not math.isfinite(value):
        raise StrictDecodeError(f"number {text} is out of float64 range")
    return _FloatLiteral(value)


def loads(body: bytes | str) -> Any:
    """Parse one JSON document as Go would, keeping integer and float literals apart."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictDecodeError(f"answer is not UTF-8: {exc}") from None
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_float_literal)
    except json.JSONDecodeError as exc:
        raise StrictDecodeError(f"answer is not JSON: {exc}") from None


def _fail(where: str, rule: str, value: Any) -> StrictDecodeError:
    return StrictDecodeError(f"{where}: {rule} (got {value!r})")


def go_string(v: Any, where: str, *, nullable: bool = True) -> str | None:
    if v is None and nullable:
        return None
    if not isinstance(v, str):
        raise _fail(where, "must be a JSON string (Go string)", v)
    return v


def go_bool(v: Any, where: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise _fail(where, "must be true, false or null (Go bool)", v)


def go_int(v: Any, where: str, bounds: tuple[int, int] = INT64) -> int:
    """An integer literal in range; ``1.0``, ``1e3``, strings and booleans are refused."""
    if isinstance(v, bool) or not isinstance(v, int) or isinstance(v, _FloatLiteral):
        raise _fail(where, "must be an integer literal (Go int)", v)
    if not bounds[0] <= v <= bounds[1]:
        raise _fail(where, f"is out of range for a Go integer {bounds}", v)
    return v


def go_float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _fail(where, "must be a finite JSON number (Go float64)", v)
    return float(v)


def go_time(v: Any, where: str) -> datetime:
    """``time.Time``'s JSON form: RFC 3339 with an offset."""
    if not isinstance(v, str) or not _RFC3339.match(v):
        raise _fail(where, "must be an RFC 3339 time with an offset", v)
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(where, "must be a valid RFC 3339 time", v) from None


def go_string_map(v: Any, where: str) -> dict[str, str]:
    """``map[string]string``, held to the rule that grouping values are strings (not null)."""
    if not isinstance(v, dict):
        raise _fail(where, "must be a JSON object of strings", v)
    for k, s in v.items():
        go_string(s, f"{where}.{k}", nullable=False)
    return dict(v)


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(where, "must be a JSON array", v)
    return v


def _object(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, "must be a JSON object", v)
    return v


# ---------------------------------------------------------------------------------------------
# ?multi=true: []MetricResult


@dataclass
class MultiAnswer:
    """A ``?multi=true`` answer decoded as the plugin's ``queryMulti`` loop reads it."""

    #: queryId -> [(time, groupings, value)] in answer order.
    points: dict[str, list[tuple[datetime, dict[str, str], float]]] = field(default_factory=dict)
    #: queryId -> the grouping key set of its separators.
    keys: dict[str, frozenset[str]] = field(default_factory=dict)
    separators: int = 0


def decode_multi(body: bytes | str, query_ids: list[str]) -> MultiAnswer:
    """Decode a ``?multi=true`` answer for a batch of queries with these ``queryId`` values."""
    rows = _list(loads(body), "answer")
    answer = MultiAnswer(points={q: [] for q in query_ids})
    base: datetime | None = None
    groupings: dict[str, str] | None = None
    pending_keys: frozenset[str] | None = None
    for i, raw in enumerate(rows):
        where = f"row {i}"
        row = _object(raw, where)
        sep = go_bool(row.get("isSeperator"), f"{where}.isSeperator")
        if sep:
            if "queryId" in row:
                raise _fail(where, "a separator never carries queryId", row)
            if row.get("groupings") is None:
                raise _fail(where, "a separator needs a non-null groupings object", row)
            base = go_time(row.get("dt"), f"{where}.dt")
            groupings = go_string_map(row["groupings"], f"{where}.groupings")
            pending_keys = frozenset(groupings)
            answer.separators += 1
            for extra in ("dtSecLater", "val"):
                if extra in row:
                    raise _fail(where, f"a separator carries no {extra}", row)
            continue
        if "isSeperator" in row:
            # `isSeperator: false` makes null.Bool valid, and then the plugin never fills in the
            # queryId of a one-query batch.
            raise _fail(where, "a value row carries no isSeperator", row)
        if base is None or groupings is None:
            raise _fail(where, "a value row must follow a separator", row)
        qid = go_string(row.get("queryId"), f"{where}.queryId")
        if not qid:
            raise _fail(where, "every value row names its query (queryId)", row)
        if qid not in answer.points:
            raise _fail(where, f"queryId is not one of the batch's {query_ids}", qid)
        if "dt" in row or "groupings" in row:
            raise _fail(where, "a value row carries neither dt nor groupings", row)
        later = go_int(row.get("dtSecLater", 0), f"{where}.dtSecLater")
        val = go_float(row.get("val", 0), f"{where}.val")
        if pending_keys is not None:
            seen = answer.keys.setdefault(qid, pending_keys)
            if seen != pending_keys:
                raise _fail(
                    where,
                    f"all separators of query {qid} use one key set ({sorted(seen)})",
                    sorted(pending_keys),
                )
            pending_keys = None
        answer.points[qid].append((base + timedelta(seconds=later), groupings, val))
    if pending_keys is not None:
        raise _fail("answer", "a separator must be followed by a value row", rows[-1])
    return answer


# ---------------------------------------------------------------------------------------------
# Plain /metrics/results: [{dt, groupings, value}]


def decode_results(body: bytes | str) -> list[tuple[datetime, dict[str, str], float]]:
    """A plain ``/metrics/results`` answer under the same rules (no NaN, offsets, strings)."""
    out = []
    for i, raw in enumerate(_list(loads(body), "answer")):
        where = f"row {i}"
        row = _object(raw, where)
        # A filter without groupings answers `groupings: null` here (spec 7.2), which Go reads
        # as an empty map; only the compact multi encoding's separators must carry an object.
        groupings = row.get("groupings")
        out.append(
            (
                go_time(row.get("dt"), f"{where}.dt"),
                {} if groupings is None else go_string_map(groupings, f"{where}.groupings"),
                go_float(row.get("value"), f"{where}.value"),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# /filter-definitions: []FilterDefinition; /metrics/groupings: []GroupingResult


def decode_filter_definitions(body: bytes | str) -> list[dict[str, Any]]:
    """``[]FilterDefinition``; ``groupings`` must list the grouping paths the editor shows."""
    defs = _list(loads(body), "answer")
    for i, raw in enumerate(defs):
        where = f"filter {i}"
        d = _object(raw, where)
        go_string(d.get("id"), f"{where}.id", nullable=False)
        go_string(d.get("name"), f"{where}.name")
        go_string(d.get("filter"), f"{where}.filter")
        items = d.get("groupingItems")
        paths: list[str] = []
        if items is not None:
            for j, item in enumerate(_list(items, f"{where}.groupingItems")):
                gi = _object(item, f"{where}.groupingItems[{j}]")
                path = go_string(gi.get("grouping"), f"{where}.groupingItems[{j}].grouping")
                go_string(gi.get("alias"), f"{where}.groupingItems[{j}].alias")
                paths.append(path or "")
        groupings = d.get("groupings")
        if groupings is None:
            raise _fail(where, "groupings (the paths the query editor reads) must be present", d)
        glist = [
            go_string(g, f"{where}.groupings[{j}]", nullable=False)
            for j, g in enumerate(_list(groupings, f"{where}.groupings"))
        ]
        if glist != paths:
            raise _fail(where, f"groupings must equal the groupingItems paths {paths}", glist)
        for j, agg in enumerate(_list(d.get("aggregations"), f"{where}.aggregations")):
            aw = f"{where}.aggregations[{j}]"
            a = _object(agg, aw)
            go_int(a.get("id"), f"{aw}.id", INT32)
            go_string(a.get("name"), f"{aw}.name")
            go_string(a.get("subFilter"), f"{aw}.subFilter")
            go_string(a.get("calculationField"), f"{aw}.calculationField")
            for k, c in enumerate(_list(a.get("calculations"), f"{aw}.calculations")):
                if go_string(c, f"{aw}.calculations[{k}]", nullable=False) not in CALCULATIONS:
                    raise _fail(f"{aw}.calculations[{k}]", "must be a known calculation", c)
    return defs


def decode_groupings(body: bytes | str) -> list[str]:
    """``[]GroupingResult``: objects with a string ``value``."""
    out = []
    for i, raw in enumerate(_list(loads(body), "answer")):
        row = _object(raw, f"row {i}")
        value = go_string(row.get("value"), f"row {i}.value", nullable=False)
        out.append(value or "")
    return out
