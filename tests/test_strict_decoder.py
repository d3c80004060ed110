"""Every Metrics API answer shape decodes as strictly as the Grafana plugin's Go backend.

Two halves:

- the decoder itself (``strict_decoder.py``): one test per rule of issue 11, each feeding it an
  answer that breaks the rule and showing it refuses, so the server tests below cannot pass by a
  decoder that checks nothing;
- the server: one test per answer shape (plain, ``?multi=true`` with one and with several
  queries, ``$__agg``, ``returnGroupingValues: false``, Top/Bottom limits, rollups including
  ``frequency: 0``, groupings, ``/filter-definitions``), every answer through the decoder (the
  :class:`Client` of ``server_support.py`` also decodes each 200 answer on its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import strict_decoder as sd
from tests.server_support import BASE_TOML, Client, Reply, query, running_server, strict_check

TWO_GROUPINGS: dict[str, Any] = {
    "id": "by-type-plan",
    "name": "By type and plan",
    "filter": "",
    "groupingItems": [
        {"grouping": "@.type", "alias": "Type"},
        {"grouping": "@.properties.plan", "alias": None},
    ],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 7,
            "name": "Seats",
            "calculations": ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES"],
            "calculationField": "@.properties.seats",
            "subFilter": None,
        },
        {
            "id": 8,
            "name": "Users",
            "calculations": ["APPROX_COUNT_DISTINCT"],
            "calculationField": "@.userId",
            "subFilter": "@.type == 'track'",
        },
    ],
}
ORGS = BASE_TOML.replace(
    'file = "filters/all.json"\n',
    'file = "filters/all.json"\n\n[[organizations.filters]]\nfile = "filters/two.json"\n',
    1,
)
PLANS = ["free", "pro", "team", None]


def events() -> list[dict[str, Any]]:
    """Three minutes of track/page events with plans (one missing), seats and huge numbers."""
    out = []
    for minute in range(3):
        for i in range(12):
            plan = PLANS[i % 4]
            props: dict[str, Any] = {"seats": (i * 7) % 11 + 0.5, "revenue": 1e308}
            if plan is not None:
                props["plan"] = plan
            out.append(
                {
                    "type": "track" if i % 3 else "page",
                    "userId": f"u{i % 5}",
                    "properties": props,
                    "receivedAt": f"2024-05-14T09:2{minute}:{i:02d}.500Z",
                }
            )
    return out


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[Client]:
    with running_server(tmp_path, orgs=ORGS, filters={"two.json": TWO_GROUPINGS}) as srv:
        c = Client(srv)
        assert c.ingest(json.dumps(events()).encode()).status == 200
        yield c
        c.close()


def multi(c: Client, *queries: dict[str, Any]) -> sd.MultiAnswer:
    reply = c.multi(list(queries))
    assert reply.status == 200, reply.body
    return sd.decode_multi(reply.body, [q["queryId"] for q in queries])


def plain(c: Client, q: dict[str, Any]) -> list[Any]:
    reply = c.results(q)
    assert reply.status == 200, reply.body
    return sd.decode_results(reply.body)


def as_set(points: list[Any]) -> set[Any]:
    return {(t, tuple(sorted(g.items())), v) for t, g, v in points}


# Grafana's full QueryOptions, as the plugin marshals it (many fields null).
def grafana(qid: str, **fields: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "filterId": "by-type-plan",
        "startTime": "2024-05-14T00:00:00Z",
        "endTime": "2024-05-15T00:00:00Z",
        "groupingFilters": None,
        "aggregationId": 7,
        "calculation": "SUM",
        "limit": None,
        "limitType": None,
        "alias": "",
        "excludeEmptyGroupings": False,
        "hide": None,
        "filterDefinitionName": "By type and plan",
        "longResult": None,
        "includeGroupingLabels": False,
        "groupingName": "",
        "mode": "",
        "includeAggregateOption": False,
        "includeIncompleteIntervals": True,
        "percentile": None,
        "optimized": True,
        "queryId": qid,
        "fast_mode": True,
        "shouldRecalculate": False,
        "recalculatedInterval": None,
    }
    q.update(fields)
    return q


# =============================================================================================
# The decoder refuses each broken rule


SEP = {"isSeperator": True, "dt": "2024-05-14T09:20:00Z", "groupings": {"Type": "track"}}
VAL = {"dtSecLater": 60, "val": 1.5, "queryId": "A"}


def _text(rows: list[Any]) -> str:
    return json.dumps(rows)


def test_decoder_accepts_a_well_formed_answer() -> None:
    """The baseline: a separator and two value rows decode to two points."""
    got = sd.decode_multi(_text([SEP, VAL, {**VAL, "dtSecLater": 0}]), ["A"])
    assert [(t.isoformat(), v) for t, _, v in got.points["A"]] == [
        ("2024-05-14T09:21:00+00:00", 1.5),
        ("2024-05-14T09:20:00+00:00", 1.5),
    ]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_rule_no_nan_or_infinity(constant: str) -> None:
    """No NaN/Infinity anywhere: Go's encoding/json refuses them (and 1e400)."""
    text = _text([SEP, VAL]).replace("1.5", constant)
    with pytest.raises(sd.StrictDecodeError, match="not JSON"):
        sd.decode_multi(text, ["A"])
    with pytest.raises(sd.StrictDecodeError, match="float64 range"):
        sd.decode_multi(_text([SEP, VAL]).replace("1.5", "1e400"), ["A"])


@pytest.mark.parametrize("later", ["60.0", "6e1", '"60"', "true", "9223372036854775808"])
def test_rule_dt_sec_later_is_an_integer_literal(later: str) -> None:
    """``dtSecLater`` is Go int64: 60.0, 6e1, strings, booleans and overflow are refused."""
    text = _text([SEP, VAL]).replace('"dtSecLater": 60', f'"dtSecLater": {later}')
    with pytest.raises(sd.StrictDecodeError, match="dtSecLater"):
        sd.decode_multi(text, ["A"])


@pytest.mark.parametrize(
    "dt", ["2024-05-14T09:20:00", "2024-05-14 09:20:00Z", "1715678400", None, "2024-05-14"]
)
def test_rule_dt_is_rfc3339_with_an_offset(dt: Any) -> None:
    """``dt`` is RFC 3339 with ``Z`` or ±hh:mm; naive, spaced, numeric or null are refused."""
    with pytest.raises(sd.StrictDecodeError, match="dt"):
        sd.decode_multi(_text([{**SEP, "dt": dt}, VAL]), ["A"])
    assert sd.decode_multi(_text([{**SEP, "dt": "2024-05-14T11:20:00+02:00"}, VAL]), ["A"])


@pytest.mark.parametrize("value", [None, 1, True, ["a"], {"a": "b"}])
def test_rule_grouping_values_are_strings(value: Any) -> None:
    """Grouping values are strings, never null, numbers, booleans or containers."""
    with pytest.raises(sd.StrictDecodeError, match=r"groupings\.Type"):
        sd.decode_multi(_text([{**SEP, "groupings": {"Type": value}}, VAL]), ["A"])


def test_rule_separators_carry_no_query_id_and_non_null_groupings() -> None:
    """A separator with queryId, or with null/absent groupings (the plugin dereferences it)."""
    for bad in ({**SEP, "queryId": "A"}, {**SEP, "groupings": None}):
        with pytest.raises(sd.StrictDecodeError, match="separator"):
            sd.decode_multi(_text([bad, VAL]), ["A"])
    no_groupings = {k: v for k, v in SEP.items() if k != "groupings"}
    with pytest.raises(sd.StrictDecodeError, match="separator"):
        sd.decode_multi(_text([no_groupings, VAL]), ["A"])


def test_rule_separators_of_one_query_share_a_key_set() -> None:
    """All separators of one query use the same grouping keys (the frame's columns)."""
    other = {**SEP, "groupings": {"Type": "page", "Plan": "pro"}}
    with pytest.raises(sd.StrictDecodeError, match="one key set"):
        sd.decode_multi(_text([SEP, VAL, other, VAL]), ["A"])
    # Different queries may differ.
    sd.decode_multi(_text([SEP, VAL, other, {**VAL, "queryId": "B"}]), ["A", "B"])


def test_rule_value_rows_keep_their_query_id() -> None:
    """Value rows name their query, also in a one-query batch; an unknown id is refused."""
    bare = {k: v for k, v in VAL.items() if k != "queryId"}
    for rows in ([SEP, bare], [SEP, {**VAL, "queryId": "Z"}], [SEP, {**VAL, "queryId": 1}]):
        with pytest.raises(sd.StrictDecodeError, match="queryId"):
            sd.decode_multi(_text(rows), ["A"])
    with pytest.raises(sd.StrictDecodeError, match="isSeperator"):
        sd.decode_multi(_text([SEP, {**VAL, "isSeperator": False}]), ["A"])


def test_rule_filter_definitions_keep_groupings_and_integer_ids() -> None:
    """``groupings`` lists the grouping paths; aggregation ids are Go int32 literals."""
    good = {
        "id": "f",
        "name": "F",
        "filter": "",
        "groupings": ["@.a"],
        "groupingItems": [{"grouping": "@.a", "alias": "A"}],
        "aggregations": [{"id": 1, "name": "n", "calculations": ["COUNT"]}],
    }
    sd.decode_filter_definitions(json.dumps([good]))
    for bad, rule in (
        ({k: v for k, v in good.items() if k != "groupings"}, "groupings"),
        ({**good, "groupings": ["@.b"]}, "groupings"),
        ({**good, "groupings": [{"grouping": "@.a"}]}, "groupings"),
        ({**good, "aggregations": [{"id": 1.0, "calculations": []}]}, "id"),
        ({**good, "aggregations": [{"id": "1", "calculations": []}]}, "id"),
        ({**good, "aggregations": [{"id": 2**31, "calculations": []}]}, "id"),
        ({**good, "aggregations": [{"id": 1, "calculations": ["MEDIAN"]}]}, "calculation"),
    ):
        with pytest.raises(sd.StrictDecodeError, match=rule):
            sd.decode_filter_definitions(json.dumps([bad]))


# =============================================================================================
# Every answer shape of the server


def test_shape_plain(loaded: Client) -> None:
    """Plain ``/metrics/results``: RFC 3339 ``dt``, string groupings, finite values (the 1e308
    revenue sums overflow and are answered as the largest finite double, never Infinity)."""
    rows = plain(loaded, query("by-type-plan", 7, "SUM"))
    assert len(rows) == 3 * 2 * 4  # minutes x types x plans ("" included)
    assert {g["@.properties.plan"] for _, g, _ in rows} == {"free", "pro", "team", ""}
    huge = plain(loaded, query("by-type", 2, "SUM"))
    assert huge and all(v == 1.7976931348623157e308 for _, _, v in huge)


@pytest.mark.parametrize(
    "calc", ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES", "APPROX_COUNT_DISTINCT"]
)
def test_shape_multi_one_query(loaded: Client, calc: str) -> None:
    """A one-query batch: value rows keep their queryId; decodes to the plain answer."""
    agg = 8 if calc == "APPROX_COUNT_DISTINCT" else 7
    q = grafana("A", aggregationId=agg, calculation=calc, percentile=0.9)
    got = multi(loaded, q)
    assert got.separators > 0
    assert as_set(got.points["A"]) == as_set(plain(loaded, q))


def test_shape_multi_several_queries(loaded: Client) -> None:
    """Several queries in one batch, each decoding to its own plain answer."""
    queries = [
        grafana("A"),
        grafana("B", calculation="PERCENTILES", percentile=0.5),
        grafana("C", filterId="by-type", aggregationId=1, calculation="COUNT"),
        grafana("D", filterId="all-events", aggregationId=1, calculation="COUNT"),
    ]
    got = multi(loaded, *queries)
    for q in queries:
        assert got.points[q["queryId"]], q["queryId"]
        assert as_set(got.points[q["queryId"]]) == as_set(plain(loaded, q))
    assert got.keys["C"] == frozenset({"Type"}) and got.keys["D"] == frozenset()


def test_shape_agg_collapse(loaded: Client) -> None:
    """``$__agg`` collapses a grouping: its key keeps the value ``$__agg``, a string."""
    gf = [{"grouping": "@.properties.plan", "filters": ["$__agg"], "returnGroupingValues": True}]
    q = grafana("A", groupingFilters=gf, calculation="COUNT")
    got = multi(loaded, q)
    assert as_set(got.points["A"]) == as_set(plain(loaded, q))
    assert sum(v for _, _, v in got.points["A"]) == len(events())


def test_shape_return_grouping_values_false(loaded: Client) -> None:
    """``returnGroupingValues: false`` drops the key from every separator of the query."""
    gf = [{"grouping": "@.type", "filters": ["track"], "returnGroupingValues": False}]
    q = grafana("A", groupingFilters=gf, calculation="COUNT")
    got = multi(loaded, q)
    assert got.keys["A"] == frozenset({"@.properties.plan"})
    assert as_set(got.points["A"]) == as_set(plain(loaded, q))


def test_shape_all_values_means_no_filter(loaded: Client) -> None:
    """``$__all`` in a grouping filter (Grafana's "All") keeps every value."""
    gf = [{"grouping": "@.type", "filters": ["$__all"], "returnGroupingValues": True}]
    with_all = multi(loaded, grafana("A", groupingFilters=gf, calculation="COUNT"))
    without = multi(loaded, grafana("A", calculation="COUNT"))
    assert as_set(with_all.points["A"]) == as_set(without.points["A"])


@pytest.mark.parametrize("limit_type", ["Top", "Bottom", None])
def test_shape_limit(loaded: Client, limit_type: str | None) -> None:
    """Top/Bottom limits keep whole series; the answer still decodes strictly."""
    q = grafana("A", calculation="SUM", limit=2, limitType=limit_type)
    got = multi(loaded, q)
    series = {tuple(sorted(g.items())) for _, g, _ in got.points["A"]}
    assert len(series) == 2
    assert as_set(got.points["A"]) == as_set(plain(loaded, q))


@pytest.mark.parametrize(
    "rollup",
    [
        {"type": "SECOND", "frequency": 3600},
        {"type": "MINUTE", "frequency": 2},
        {"type": "SECOND", "frequency": 0},  # a sub-second Grafana panel: no rollup
        {"type": "SECOND", "frequency": None},
    ],
)
def test_shape_rollups(loaded: Client, rollup: dict[str, Any]) -> None:
    """Rollups decode with integer ``dtSecLater``; frequency 0 or null answers unrolled."""
    q = grafana("A", calculation="COUNT", recalculatedInterval=rollup, shouldRecalculate=True)
    got = multi(loaded, q)
    assert as_set(got.points["A"]) == as_set(plain(loaded, q))
    if not rollup["frequency"]:
        unrolled = multi(loaded, grafana("A", calculation="COUNT"))
        assert as_set(got.points["A"]) == as_set(unrolled.points["A"])


def test_shape_groupings(loaded: Client) -> None:
    """``/metrics/groupings`` answers string values."""
    reply = loaded.request(
        "POST",
        "/api/v1/metrics/groupings",
        grafana("A", mode="variables", groupingName="@.properties.plan"),
    )
    assert reply.status == 200
    assert set(sd.decode_groupings(reply.body)) == {"free", "pro", "team", ""}


def test_shape_filter_definitions(loaded: Client) -> None:
    """``/filter-definitions`` keeps ``groupings`` (the paths) and integer aggregation ids."""
    reply = loaded.request("GET", "/api/v1/filter-definitions")
    assert reply.status == 200
    defs = {d["id"]: d for d in sd.decode_filter_definitions(reply.body)}
    assert defs["by-type-plan"]["groupings"] == ["@.type", "@.properties.plan"]
    assert [a["id"] for a in defs["by-type-plan"]["aggregations"]] == [7, 8]
    assert defs["all-events"]["groupings"] == []


def test_client_decodes_every_answer() -> None:
    """The shared Client runs the decoder itself: a non-conforming answer fails the request."""
    bad = b'[{"isSeperator":true,"dt":"2024-05-14T09:20:00Z","groupings":null}]'
    with pytest.raises(sd.StrictDecodeError):
        strict_check(
            "/api/v1/metrics/results?multi=true",
            json.dumps([{"queryId": "A"}]).encode(),
            Reply(200, {}, bad),
        )
    with pytest.raises(sd.StrictDecodeError):
        strict_check("/api/v1/metrics/results", None, Reply(200, {}, b'[{"value":NaN}]'))
    strict_check("/api/v1/metrics/results", None, Reply(400, {}, b"NaN"))  # errors: not decoded
