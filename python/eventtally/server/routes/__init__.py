"""The WSGI app's routes: one module per API, each a layer of
:class:`~eventtally.server.app.EventtallyApp`.

============ ================================================================================
``base``      response helpers, the app's fields, authentication, request bodies
``ingest``    ``POST /{ingest_id}``
``metrics``   the Metrics API under ``/api/v1``
``jobs``      ``/admin/v1/backfill`` (jobs on the bounded runner of ``server/jobs.py``)
``admin``     the rest of ``/admin/v1``: organizations, ingests, filters, keys, compaction
============ ================================================================================

Guarantees: a route raises; it never builds an error response itself.  The app turns what it
raises into the answer through the one table of ``server/errors.py``.
"""
