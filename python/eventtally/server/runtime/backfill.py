"""Backfill: apply a filter to batches it never saw, or merge an offline snapshot.

Guarantees:
- Backfill applies a filter to batches it never saw: log records numbered at most the sequence
  number the filter was added at (and in a time range), or archive files, through a temporary
  engine merged into the organization's engine, so other filters are untouched and nothing is
  counted twice.  Each backfill is recorded in the snapshot; an overlapping one is refused.
- A snapshot backfill merges an engine snapshot aggregated offline into an organization's live
  state: validated like any snapshot, refused unless its filter definitions equal the
  organization's, refused when the same bytes (SHA-256) were merged before, and durable (a new
  organization snapshot is written) before the call returns.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import eventtally

from ..errors import (
    BackfillError,
    RepeatedBackfillError,
)
from .maintenance import RuntimeMaintenance
from .state import BackfillResult, OrgState, Progress

log = logging.getLogger("eventtally.server")


class RuntimeBackfill(RuntimeMaintenance):
    """Backfills filters from the log, from archive files, or from engine snapshots."""

    def _backfill_target(self, org_id: str, filter_id: str) -> OrgState:
        try:
            st = self.org(org_id)
        except KeyError:
            raise BackfillError(f"unknown organization {org_id!r}") from None
        if filter_id not in st.filters:
            raise BackfillError(
                f"filter {filter_id!r} is not an enabled filter of organization {org_id!r}"
            )
        return st

    def _temp_engine(self, st: OrgState, filter_id: str) -> eventtally.Engine:
        ingests = [json.loads(t) for t in st.ingests.values()]
        return eventtally.Engine(ingests, [json.loads(st.filters[filter_id])], clock=self.clock)

    def _merge_backfill(
        self,
        st: OrgState,
        filter_id: str,
        temp: eventtally.Engine,
        records: list[dict[str, Any]],
    ) -> None:
        """Merge ``temp`` (state for ``filter_id`` only) into ``st``, record the backfill and
        snapshot it."""
        text = st.filters.get(filter_id)
        since = st.filter_since.get(filter_id)
        with st.save_lock:
            with st.gate.exclusive():
                if st.filters.get(filter_id) != text or st.filter_since.get(filter_id) != since:
                    raise BackfillError(f"filter {filter_id!r} changed during the backfill")
                for fid, other in st.filters.items():
                    if fid != filter_id:
                        temp.add_filter(json.loads(other))
                st.engine.merge(temp)
                st.backfills.extend(records)
                mark, data = self._capture(st)
            self._write_snapshot(st, mark, data)

    def _check_overlap(self, st: OrgState, filter_id: str, record: dict[str, Any]) -> None:
        for b in st.backfills:
            if b.get("filter") != filter_id or b.get("kind") != record["kind"]:
                continue
            if record["kind"] == "wal":
                if b["fromMs"] < record["toMs"] and record["fromMs"] < b["toMs"]:
                    raise BackfillError(
                        f"filter {filter_id!r} was already backfilled from the log for an "
                        f"overlapping time range ({_iso_ms(b['fromMs'])} to {_iso_ms(b['toMs'])})"
                    )
            elif b.get("file") == record.get("file"):
                raise BackfillError(
                    f"filter {filter_id!r} was already backfilled from {record['file']} "
                    "(same path, size and modification time); pass force to do it again"
                )

    def backfill_wal(
        self,
        org_id: str,
        filter_id: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        *,
        progress: Progress | None = None,
    ) -> BackfillResult:
        """Apply ``filter_id`` to the logged batches of ``org_id`` it never saw (those logged
        before it was added) whose ingest time is in ``[start_ms, end_ms)``."""
        st = self._backfill_target(org_id, filter_id)
        wal = self.storage.wal
        if wal is None:
            raise BackfillError("the write-ahead log is off ([durability] wal = false)")
        lo = -(2**62) if start_ms is None else start_ms
        hi = 2**62 if end_ms is None else end_ms
        if lo >= hi:
            raise BackfillError("--from must be before --to")
        since = st.filter_since.get(filter_id, 0)
        record: dict[str, Any] = {
            "filter": filter_id,
            "kind": "wal",
            "fromMs": lo,
            "toMs": hi,
            "sinceSeq": since,
        }
        self._check_overlap(st, filter_id, record)
        result = BackfillResult(org_id, filter_id, "wal", since_seq=since)
        t0 = time.perf_counter()
        temp = self._temp_engine(st, filter_id)
        total = sum(s.size for s in wal.segments()) or 1
        done_bytes = 0
        last_report = 0.0

        def wanted(seq: int, org: str) -> bool:
            return org == org_id and seq <= since

        for rec in wal.replay(0, where=wanted):
            done_bytes += len(rec.payload)
            if result.oldest_retained_ms is None or rec.received_at_ms < result.oldest_retained_ms:
                result.oldest_retained_ms = rec.received_at_ms
            if not lo <= rec.received_at_ms < hi:
                continue
            try:
                stats = temp.ingest(
                    rec.payload, ingest_id=rec.ingest_id, received_ms=rec.received_at_ms
                )
            except eventtally.EventtallyError as exc:
                result.failed += 1
                log.warning("backfill: record %d skipped: %s", rec.seq, exc)
                continue
            result.records += 1
            result.events += stats.events
            result.accepted += stats.accepted
            if progress is not None and time.monotonic() - last_report >= 0.5:
                last_report = time.monotonic()
                progress({**result.to_dict(), "bytesDone": done_bytes, "bytesTotal": total})
        record.update(records=result.records, events=result.events, at=time.time())
        if result.records:
            self._merge_backfill(st, filter_id, temp, [record])
        result.seconds = time.perf_counter() - t0
        if progress is not None:
            progress({**result.to_dict(), "bytesDone": total, "bytesTotal": total})
        log.info(
            "backfill of %s/%s from the log: %d record(s), %d event(s), %d failed",
            org_id, filter_id, result.records, result.events, result.failed,
        )  # fmt: skip
        return result

    def backfill_files(
        self,
        org_id: str,
        filter_id: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        ingest_id: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> BackfillResult:
        """Apply ``filter_id`` to archive files (``.json``/``.ndjson``/``.jsonl``, optionally
        gzipped; other names are read as gzipped or plain NDJSON) through ``ingest_id``'s
        timestamp settings (default: the organization's only ingest)."""
        st = self._backfill_target(org_id, filter_id)
        real_ingests = list(st.ingests)
        if ingest_id is None:
            if len(real_ingests) != 1:
                raise BackfillError(
                    f"organization {org_id!r} has {len(real_ingests)} ingests; name one "
                    "(--ingest) whose timestamp settings apply to the files"
                )
            ingest_id = real_ingests[0]
        elif ingest_id not in st.ingests:
            raise BackfillError(f"unknown ingest {ingest_id!r} in organization {org_id!r}")
        files = [Path(p).resolve() for p in paths]
        records = []
        for f in files:
            try:
                info = f.stat()
            except OSError as exc:
                raise BackfillError(f"cannot read {f}: {exc.strerror}") from exc
            rec: dict[str, Any] = {
                "filter": filter_id,
                "kind": "file",
                "file": f"{f}:{info.st_size}:{info.st_mtime_ns}",
            }
            if not force:
                self._check_overlap(st, filter_id, rec)
            records.append(rec)
        result = BackfillResult(org_id, filter_id, "file", files=[str(f) for f in files])
        t0 = time.perf_counter()
        temp = self._temp_engine(st, filter_id)
        total = sum(f.stat().st_size for f in files) or 1
        base = 0
        with tempfile.TemporaryDirectory(prefix="eventtally-backfill-") as tmp:
            for i, f in enumerate(files):
                size = f.stat().st_size

                def report(done: int, _total: int, base: int = base) -> None:
                    if progress is not None:
                        progress({**result.to_dict(), "bytesDone": base + done,
                                  "bytesTotal": total})  # fmt: skip

                try:
                    stats = temp.ingest_file(
                        _readable_name(f, Path(tmp), i), ingest_id=ingest_id, progress=report
                    )
                except eventtally.EventtallyError as exc:
                    raise BackfillError(f"{f}: {exc}") from exc
                result.records += 1
                result.events += stats.events
                result.accepted += stats.accepted
                base += size
        if result.events:
            # one record per file, so each file is refused as a repeat on its own
            at = time.time()
            self._merge_backfill(st, filter_id, temp, [{**r, "at": at} for r in records])
        result.seconds = time.perf_counter() - t0
        if progress is not None:
            progress({**result.to_dict(), "bytesDone": total, "bytesTotal": total})
        log.info(
            "backfill of %s/%s from %d file(s): %d event(s)",
            org_id, filter_id, len(files), result.events,
        )  # fmt: skip
        return result

    # ------------------------------------------------------------- snapshot backfill

    def backfill_snapshot(
        self, org_id: str, data: bytes, *, source: str = "snapshot"
    ) -> BackfillResult:
        """Merge an engine snapshot (``Engine.to_bytes``/``save``, e.g. from
        ``eventtally.dask.aggregate``) into ``org_id``'s live state.

        The bytes are untrusted: they are decoded and validated like any snapshot. The
        snapshot's filter definitions must equal the organization's enabled filters (same ids,
        same definitions; the error names what differs). A snapshot already merged (same
        SHA-256 of its bytes) is refused. The merge, its record and a new snapshot of the
        organization are written before this returns, so the result survives a crash."""
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        try:
            st = self.org(org_id)
        except KeyError:
            raise BackfillError(f"unknown organization {org_id!r}") from None
        try:
            incoming = eventtally.Engine.from_bytes(data, clock=self.clock)
        except eventtally.SnapshotError as exc:
            raise BackfillError(f"{source}: not a valid engine snapshot: {exc}") from exc
        theirs = {f["id"]: f for f in incoming.filter_definitions()}
        t0 = time.perf_counter()
        result = BackfillResult(org_id, ",".join(sorted(theirs)), "snapshot", files=[source])
        record = {"filter": None, "kind": "snapshot", "sha256": digest, "source": source}
        with st.save_lock:
            with st.gate.exclusive():
                for b in st.backfills:
                    if b.get("kind") == "snapshot" and b.get("sha256") == digest:
                        raise RepeatedBackfillError(
                            f"{source}: this snapshot (sha256 {digest[:16]}...) was already "
                            f"merged into {org_id!r}"
                        )
                mine = {f["id"]: f for f in st.engine.filter_definitions()}
                problem = _definition_difference(mine, theirs, org_id)
                if problem:
                    raise BackfillError(f"{source}: {problem}")
                try:
                    st.engine.merge(incoming)
                except eventtally.EventtallyError as exc:
                    raise BackfillError(f"{source}: {exc}") from exc
                st.backfills.append({**record, "at": time.time()})
                mark, state = self._capture(st)
            self._write_snapshot(st, mark, state)
        result.records = 1
        result.seconds = time.perf_counter() - t0
        log.info("merged snapshot %s (sha256 %s) into %s", source, digest[:16], org_id)
        return result


def _definition_difference(
    mine: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]], org_id: str
) -> str:
    """Why a snapshot with filters ``theirs`` cannot merge into an organization with
    ``mine`` ("" when they are equal): the ids only on one side, and for each shared id the
    definition fields that differ."""
    parts = []
    only_theirs = sorted(set(theirs) - set(mine))
    only_mine = sorted(set(mine) - set(theirs))
    if only_theirs:
        parts.append(f"filters {only_theirs} are in the snapshot but not enabled in {org_id!r}")
    if only_mine:
        parts.append(f"filters {only_mine} of {org_id!r} are not in the snapshot")
    for fid in sorted(set(mine) & set(theirs)):
        a, b = mine[fid], theirs[fid]
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if fields:
            parts.append(f"filter {fid!r} differs in {', '.join(fields)}")
    if parts:
        return "filter definitions differ: " + "; ".join(parts)
    return ""


def parse_time_ms(value: object, what: str = "time") -> int | None:
    """Unix seconds (a number or numeric text) or ISO 8601 text (UTC unless it says otherwise)
    → Unix ms; ``None`` and ``""`` give ``None``; ``ValueError`` names ``what`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        return round(float(value) * 1000)
    try:
        return round(float(value) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what}: not ISO 8601 or Unix seconds: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _iso_ms(ms: int) -> str:
    if abs(ms) >= 2**61:
        return "-inf" if ms < 0 else "+inf"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _readable_name(path: Path, tmp: Path, i: int) -> str:
    """``path``, or a link to it whose name ``Engine.ingest_file`` accepts (Segment archives
    are gzipped NDJSON whatever they are called)."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith((".json", ".ndjson", ".jsonl")):
        return str(path)
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    link = tmp / f"archive-{i}.ndjson{'.gz' if gz else ''}"
    os.symlink(path, link)
    return str(link)
