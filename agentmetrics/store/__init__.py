"""The store: everything about the SQLite file itself, and nothing about what its rows mean.

It holds opening a database and its pragmas (:mod:`.db`), the migrations and indexes
(:mod:`.migrations`), each column's rules (:mod:`.schema`), the rollup tables
(:mod:`.rollups`), the pending-writes journal (:mod:`.pending`), the SQL that recounts an
orchestration's tasks (:mod:`.tasks`), the deletes in bounded batches (:mod:`.batching`)
and cleanup and vacuum (:mod:`.cleanup`).

It may import only the errors and the small leaves (timestamps, window). Every other part
may import it; it must never import tracking (``monitor``), the reports, plots, alerting,
outputs, exchange, otel or the command line (``tests/test_layering.py`` checks).
"""
