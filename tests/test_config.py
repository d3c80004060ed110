"""Definition validation (semantics.md §1, spec 5.2 and 5.4): every invalid ingest or filter is
rejected when the engine is built, with an error naming the offending field."""

from __future__ import annotations

from typing import Any

import pytest

import eventtally
from eventtally import ConfigError, EventtallyError, PathSyntaxError
from tests.support import agg_def, filter_def, ingest_def, make_engine


def with_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A filter with explicit ``groupingItems``."""
    defn = filter_def()
    defn["groupingItems"] = items
    return defn


def with_interval(kind: str, count: Any) -> dict[str, Any]:
    """A filter with the given interval."""
    defn = filter_def()
    defn["intervalType"] = kind
    defn["intervalCount"] = count
    return defn


INVALID_FILTERS = [
    # (case, filters, field named by the error)
    (
        "11 groupings",
        [filter_def(groupings=[f"@.g{i}" for i in range(11)])],
        "filters[0].groupingItems",
    ),
    (
        "duplicate grouping",
        [filter_def(groupings=["@.a", "@.b", "@.a"])],
        "filters[0].groupingItems[2].grouping",
    ),
    (
        "duplicate grouping with different aliases",
        [filter_def(groupings=[("@.a", "A"), ("@.a", "B")])],
        "filters[0].groupingItems[1].grouping",
    ),
    (
        "duplicate alias",
        [filter_def(groupings=[("@.a", "X"), ("@.b", "X")])],
        "filters[0].groupingItems[1].alias",
    ),
    (
        "alias equal to another grouping's path",
        [filter_def(groupings=["@.a", ("@.b", "@.a")])],
        "filters[0].groupingItems[1].alias",
    ),
    (
        "alias of 101 characters",
        [filter_def(groupings=[("@.a", "x" * 101)])],
        "filters[0].groupingItems[0].alias",
    ),
    (
        "11 aggregations",
        [filter_def(aggregations=[agg_def(i) for i in range(1, 12)])],
        "filters[0].aggregations",
    ),
    (
        "duplicate aggregation id",
        [filter_def(aggregations=[agg_def(1), agg_def(2), agg_def(1)])],
        "filters[0].aggregations[2].id",
    ),
    (
        "aggregation id not an integer",
        [filter_def(aggregations=[{**agg_def(), "id": "1"}])],
        "filters[0].aggregations[0].id",
    ),
    (
        "SUM without calculationField",
        [filter_def(aggregations=[agg_def(1, ("SUM",))])],
        "filters[0].aggregations[0].calculationField",
    ),
    (
        "COUNT and AVG without calculationField",
        [filter_def(aggregations=[agg_def(1), agg_def(2, ("COUNT", "AVG"))])],
        "filters[0].aggregations[1].calculationField",
    ),
    (
        "APPROX_COUNT_DISTINCT without calculationField",
        [filter_def(aggregations=[agg_def(1, ("APPROX_COUNT_DISTINCT",), "")])],
        "filters[0].aggregations[0].calculationField",
    ),
    (
        "unknown calculation",
        [filter_def(aggregations=[agg_def(1, ("MEDIAN",), "@.x")])],
        "filters[0].aggregations[0].calculations[0]",
    ),
    (
        "lower-case calculation",
        [filter_def(aggregations=[agg_def(1, ("COUNT", "sum"), "@.x")])],
        "filters[0].aggregations[0].calculations[1]",
    ),
    (
        "empty calculations",
        [filter_def(aggregations=[agg_def(1, (), "@.x")])],
        "filters[0].aggregations[0].calculations",
    ),
    (
        "duplicate calculation",
        [filter_def(aggregations=[agg_def(1, ("SUM", "MIN", "SUM"), "@.x")])],
        "filters[0].aggregations[0].calculations[2]",
    ),
    ("unknown interval type", [with_interval("FORTNIGHT", 1)], "filters[0].intervalType"),
    ("29 seconds", [with_interval("SECOND", 29)], "filters[0].intervalCount"),
    ("1 second", [with_interval("SECOND", 1)], "filters[0].intervalCount"),
    ("0 minutes", [with_interval("MINUTE", 0)], "filters[0].intervalCount"),
    ("negative count", [with_interval("HOUR", -1)], "filters[0].intervalCount"),
    ("36,526 days", [with_interval("DAY", 36526)], "filters[0].intervalCount"),
    ("5,218 weeks", [with_interval("WEEK", 5218)], "filters[0].intervalCount"),
    ("1,201 months", [with_interval("MONTH", 1201)], "filters[0].intervalCount"),
    ("101 years", [with_interval("YEAR", 101)], "filters[0].intervalCount"),
    ("1000 years", [with_interval("YEAR", 1000)], "filters[0].intervalCount"),
    ("count not an integer", [with_interval("MINUTE", "5")], "filters[0].intervalCount"),
    ("fractional count", [with_interval("MINUTE", 1.5)], "filters[0].intervalCount"),
    ("empty filter id", [{**filter_def(), "id": ""}], "filters[0].id"),
    (
        "error in the second filter",
        [filter_def(), filter_def("g", groupings=["@.a", "@.a"])],
        "filters[1].groupingItems[1].grouping",
    ),
]


@pytest.mark.parametrize(
    ("filters", "field"), [c[1:] for c in INVALID_FILTERS], ids=[c[0] for c in INVALID_FILTERS]
)
def test_invalid_filter_names_the_field(filters: list[dict[str, Any]], field: str) -> None:
    """An invalid filter raises ConfigError whose ``field`` names the offending member."""
    with pytest.raises(ConfigError) as info:
        make_engine(ingest_def(), filters)
    err = info.value
    assert isinstance(err, EventtallyError) and isinstance(err, ValueError)
    assert err.field == field
    assert isinstance(err.reason, str) and err.reason
    assert field in str(err)


def test_duplicate_filter_id_names_the_second_filter() -> None:
    """Two filters with the same id: the error names the second one's ``id``."""
    with pytest.raises(ConfigError) as info:
        make_engine(ingest_def(), [filter_def("f"), filter_def("f")])
    assert info.value.field == "filters[1].id"


def test_duplicate_filter_id_is_rejected() -> None:
    """Filter ids are unique within an engine."""
    with pytest.raises(ConfigError) as info:
        make_engine(ingest_def(), [filter_def("f"), filter_def("f")])
    assert info.value.field.endswith("id")


VALID_FILTERS = [
    ("10 groupings", filter_def(groupings=[f"@.g{i}" for i in range(10)])),
    ("alias of 100 characters", filter_def(groupings=[("@.a", "x" * 100)])),
    ("alias of 100 non-ASCII characters", filter_def(groupings=[("@.a", "é" * 100)])),
    ("10 aggregations", filter_def(aggregations=[agg_def(i) for i in range(1, 11)])),
    ("COUNT without a field", filter_def(aggregations=[agg_def(1, ("COUNT",), None)])),
    ("COUNT with a field", filter_def(aggregations=[agg_def(1, ("COUNT",), "@.x")])),
    (
        "every calculation",
        filter_def(
            aggregations=[
                agg_def(
                    1,
                    ("COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "PERCENTILES"),
                    "@.x",
                )
            ]
        ),
    ),
    ("30 seconds", with_interval("SECOND", 30)),
    ("1 minute", with_interval("MINUTE", 1)),
    ("36,525 days (100 years)", with_interval("DAY", 36525)),
    ("5,217 weeks", with_interval("WEEK", 5217)),
    ("1,200 months", with_interval("MONTH", 1200)),
    ("100 years", with_interval("YEAR", 100)),
    ("aggregation ids need not start at 1", filter_def(aggregations=[agg_def(7), agg_def(3)])),
    ("same alias text as its own path", filter_def(groupings=[("@.a", "@.a")])),
    ("unknown members ignored", {**filter_def(), "organizationId": "zzZyx123", "extra": [1]}),
    ("null filter", filter_def(filter=None)),
    ("flatten path", filter_def(flatten="@.items")),
]


@pytest.mark.parametrize("defn", [c[1] for c in VALID_FILTERS], ids=[c[0] for c in VALID_FILTERS])
def test_valid_filters_at_the_limits(defn: dict[str, Any]) -> None:
    """Definitions exactly at each limit are accepted and round-trip through
    ``filter_definitions``."""
    engine = make_engine(ingest_def(), [defn])
    (back,) = engine.filter_definitions()
    assert back["id"] == defn["id"]
    assert [a["id"] for a in back["aggregations"]] == [a["id"] for a in defn["aggregations"]]
    assert back["intervalType"] == defn["intervalType"]
    assert back["intervalCount"] == defn["intervalCount"]


def test_spec_filter_definition_is_accepted() -> None:
    """The filter definition JSON of spec 5.7 builds an engine unchanged."""
    spec = {
        "id": "abc123456",
        "filter": "@.eventName =='AppOpen' && @.environment == 'Production'",
        "groupings": ["@.device.type", "@.app.version"],
        "groupingItems": [
            {"grouping": "@.device.type", "alias": "Device Type"},
            {"grouping": "@.app.version", "alias": None},
        ],
        "intervalType": "MINUTE",
        "intervalCount": 15,
        "name": "App Opens by Version & Device Type",
        "organizationId": "zzZyx123",
        "aggregations": [
            {
                "id": 1,
                "calculations": ["APPROX_COUNT_DISTINCT"],
                "calculationField": "@.userId",
                "subFilter": None,
                "name": "Unique Users",
            },
            {
                "id": 2,
                "calculations": ["SUM", "MAX", "MIN", "AVG", "PERCENTILES"],
                "calculationField": "@.notificationCount",
                "subFilter": "@.notificationCount > 0",
                "name": "Notifications Count (for users with notifications)",
            },
            {
                "id": 3,
                "calculations": ["COUNT"],
                "calculationField": None,
                "subFilter": None,
                "name": "Open Count",
            },
        ],
    }
    engine = make_engine(ingest_def(), [spec])
    (back,) = engine.filter_definitions()
    assert back["groupingItems"] == spec["groupingItems"]
    assert back["groupings"] == spec["groupings"]
    assert back["aggregations"] == spec["aggregations"]


INVALID_INGESTS = [
    ("unknown schema", {**ingest_def(), "schema": "XML"}, "ingests[0].schema"),
    ("arrayPath missing", ingest_def("OBJECT_WITH_ARRAY_PROPERTY"), "ingests[0].arrayPath"),
    (
        "unknown timestamp source",
        {**ingest_def(), "timestamp": {"source": "HEADER"}},
        "ingests[0].timestamp.source",
    ),
    ("unknown format", ingest_def(path="@.t", fmt="RFC_2822"), "ingests[0].timestamp.format"),
    (
        "PROPERTY without a path",
        {**ingest_def(), "timestamp": {"source": "PROPERTY", "format": "ISO_8601"}},
        "ingests[0].timestamp.path",
    ),
    (
        "unknown onInvalid",
        ingest_def(path="@.t", on_invalid="IGNORE"),
        "ingests[0].timestamp.onInvalid",
    ),
]


@pytest.mark.parametrize(
    ("ingest", "field"), [c[1:] for c in INVALID_INGESTS], ids=[c[0] for c in INVALID_INGESTS]
)
def test_invalid_ingest_names_the_field(ingest: dict[str, Any], field: str) -> None:
    """An invalid ingest raises ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        make_engine(ingest, [filter_def()])
    assert info.value.field == field
    assert info.value.reason


BAD_JPATHS = [
    ("filter", filter_def(filter="@.a =="), "filters[0].filter"),
    (
        "subFilter",
        filter_def(aggregations=[agg_def(sub_filter="@.a in")]),
        "filters[0].aggregations[0].subFilter",
    ),
    ("grouping", filter_def(groupings=["@.a b"]), "filters[0].groupingItems[0].grouping"),
    (
        "calculationField",
        filter_def(aggregations=[agg_def(1, ("SUM",), "@.a.")]),
        "filters[0].aggregations[0].calculationField",
    ),
    ("flattenPath", filter_def(flatten="items"), "filters[0].flattenPath"),
]


@pytest.mark.parametrize(
    ("defn", "field"), [c[1:] for c in BAD_JPATHS], ids=[c[0] for c in BAD_JPATHS]
)
def test_bad_jpath_is_rejected_when_built(defn: dict[str, Any], field: str) -> None:
    """Every JPath of a definition compiles when the engine is built; errors name the field."""
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), [defn])
    assert info.value.field == field
    assert isinstance(info.value.position, int)


def test_legacy_groupings_are_validated() -> None:
    """The legacy ``groupings`` list is compiled and checked for duplicates too."""
    legacy = {**filter_def(), "groupingItems": None}
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), [{**legacy, "groupings": ["@.a b"]}])
    assert info.value.field.startswith("filters[0].groupings[0]")
    with pytest.raises(ConfigError) as dup:
        make_engine(ingest_def(), [{**legacy, "groupings": ["@.a", "@.a"]}])
    assert dup.value.field.startswith("filters[0].groupings[1]")
    with pytest.raises(ConfigError):
        make_engine(ingest_def(), [{**legacy, "groupings": [f"@.g{i}" for i in range(11)]}])


@pytest.mark.parametrize(
    "defn",
    [c[1] for c in INVALID_FILTERS if len(c[1]) == 1],
    ids=[c[0] for c in INVALID_FILTERS if len(c[1]) == 1],
)
def test_add_filter_validates_like_the_constructor(defn: list[dict[str, Any]]) -> None:
    """``add_filter`` rejects what the constructor rejects and leaves the engine unchanged."""
    engine = make_engine()
    before = engine.filter_definitions()
    with pytest.raises(ConfigError):
        engine.add_filter({**defn[0], "id": "new"} if defn[0]["id"] else defn[0])
    assert engine.filter_definitions() == before


def test_add_filter_rejects_an_existing_id() -> None:
    """``add_filter`` with an id already in use is a ConfigError."""
    engine = make_engine()
    with pytest.raises(ConfigError):
        engine.add_filter(filter_def("f"))


def test_definitions_must_be_json_serializable() -> None:
    """Definitions that are not JSON (sets, NaN) are a TypeError; a non-dict ingest too."""
    with pytest.raises(TypeError):
        eventtally.Engine(ingest_def(), [{**filter_def(), "name": {1, 2}}])
    with pytest.raises(TypeError):
        eventtally.Engine(ingest_def(), [{**filter_def(), "intervalCount": float("nan")}])
    with pytest.raises(TypeError):
        eventtally.Engine("ARRAY_OF_EVENTS", [filter_def()])  # type: ignore[arg-type]


def test_engine_without_filters_counts_nothing() -> None:
    """An engine with no filters accepts batches and reports empty per-filter stats."""
    engine = make_engine(ingest_def(), [])
    stats = engine.ingest(b"[{},{}]")
    assert (stats.events, stats.accepted, stats.per_filter) == (2, 2, {})
