"""The runtime's Prometheus metrics: counters the other parts increment, gauges read at scrape.

Guarantees:
- Collecting never takes an organization's gate: the gauges read sizes the engines keep
  up to date, so a scrape never waits for a snapshot or a batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from ..metrics import Family, histogram_family
from .base import RuntimeBase

log = logging.getLogger("eventtally.server")


class RuntimeTelemetry(RuntimeBase):
    """Registers and collects the runtime's metrics."""

    def _init_metrics(self) -> None:
        r = self.registry
        self.m_events = r.counter(
            "eventtally_events_received_total",
            "Events in batches accepted by the ingest endpoint (after deduplication)",
            ["org"],
        )
        self.m_accepted = r.counter(
            "eventtally_events_accepted_total", "Events accepted by the engine", ["org"]
        )
        self.m_dropped = r.counter(
            "eventtally_events_dropped_total",
            "Events of accepted batches dropped by the engine, by reason",
            ["org", "reason"],
        )
        self.m_refused = r.counter(
            "eventtally_ingest_refused_total",
            "Batches refused after authentication, by reason (state_limit, wal_error, ...)",
            ["org", "reason"],
        )
        self.m_snapshots = r.counter(
            "eventtally_snapshots_total", "Snapshots written, by outcome", ["result"]
        )
        self.m_dedup = r.counter(
            "eventtally_dedup_dropped_total",
            "Events dropped as duplicates of a messageId seen in the window",
            ["org"],
        )
        self.m_compactions = r.counter(
            "eventtally_compactions_total", "Compaction runs per organization, by outcome",
            ["org", "result"],
        )  # fmt: skip
        self.m_compacted = r.counter(
            "eventtally_compaction_cells_total",
            "Cells merged into coarser tiers or dropped past the last tier",
            ["org", "action"],
        )
        self.m_compaction_seconds = r.histogram(
            "eventtally_compaction_duration_seconds", "Time to compact one organization's state"
        )
        self.m_snapshot_seconds = r.histogram(
            "eventtally_snapshot_duration_seconds",
            "Time to serialize and durably write one organization's snapshot",
        )
        r.collector(self._collect)

    def _collect(self) -> Iterable[Family]:
        now = time.time()
        ready = Family("eventtally_ready", "gauge", "1 once recovery has finished")
        yield ready.add(1 if self.ready else 0)
        state = Family(
            "eventtally_state_bytes", "gauge", "Aggregate state per organization (approximate)"
        )
        age = Family(
            "eventtally_snapshot_age_seconds",
            "gauge",
            "Seconds since the organization's newest snapshot was written",
        )
        seq = Family(
            "eventtally_snapshot_wal_seq", "gauge", "WAL sequence number of the newest snapshot"
        )
        tiers = Family(
            "eventtally_state_tier_bytes",
            "gauge",
            "Aggregate state per organization and retention tier (approximate)",
        )
        last = Family(
            "eventtally_last_compaction_timestamp_seconds",
            "gauge",
            "Unix time of the organization's last compaction",
        )
        for org_id, st in sorted(self._orgs.items()):
            labels = (("org", org_id),)
            state.add(st.engine.state_bytes(), labels)
            per_tier: dict[str, int] = {}
            for usage in st.engine.tier_usage().values():
                for t in usage:
                    name = f"{t['intervalCount']}x{t['intervalType']}"
                    per_tier[name] = per_tier.get(name, 0) + int(t["bytes"])
            for name, n in sorted(per_tier.items()):
                tiers.add(n, (("org", org_id), ("tier", name)))
            if org_id in self.last_compaction:
                last.add(self.last_compaction[org_id], labels)
            if st.snapshot_time is not None:
                age.add(max(0.0, now - st.snapshot_time), labels)
            if st.snapshot_seq is not None:
                seq.add(st.snapshot_seq, labels)
        yield state
        yield tiers
        yield last
        yield age
        yield seq
        wal = self.storage.wal
        if wal is not None:
            s = wal.stats()
            yield Family(
                "eventtally_wal_bytes_written_total",
                "counter",
                "Bytes appended to the write-ahead log by this process",
            ).add(s.bytes_written)
            yield Family(
                "eventtally_wal_records_total", "counter", "Records appended by this process"
            ).add(s.records)
            yield Family("eventtally_wal_fsyncs_total", "counter", "fsync calls on the log").add(
                s.fsyncs
            )
            yield histogram_family(
                "eventtally_wal_fsync_duration_seconds",
                "fsync latency of the write-ahead log",
                s.fsync_buckets,
                s.fsync_seconds,
                s.fsyncs,
            )
            disk = sum(seg.size for seg in wal.segments())
            yield Family("eventtally_wal_disk_bytes", "gauge", "Bytes of log segments on disk").add(
                disk
            )
            yield Family("eventtally_wal_segments", "gauge", "Log segment files on disk").add(
                s.segments
            )
            yield Family("eventtally_wal_last_seq", "gauge", "Newest record's number").add(
                s.last_seq
            )
        dedup = self.storage.dedup
        if dedup is not None:
            d = dedup.stats()
            yield Family("eventtally_dedup_ids", "gauge", "messageIds remembered").add(d.ids)
            yield Family(
                "eventtally_dedup_checked_total", "counter", "Events checked for duplicates"
            ).add(d.checked)
            yield Family(
                "eventtally_dedup_evicted_total",
                "counter",
                "messageIds forgotten early to stay under dedup_max_ids",
            ).add(d.evicted)
        rep = self.recovery
        if rep is not None:
            yield Family(
                "eventtally_recovery_seconds", "gauge", "Duration of the last startup recovery"
            ).add(rep.seconds)
            yield Family(
                "eventtally_recovery_records", "gauge", "WAL records replayed at startup"
            ).add(rep.records_replayed)
            yield Family("eventtally_recovery_events", "gauge", "Events replayed at startup").add(
                rep.events
            )
            yield Family(
                "eventtally_recovery_torn_tail", "gauge", "1 if startup cut a torn WAL tail"
            ).add(1 if rep.torn_tail_cut else 0)
