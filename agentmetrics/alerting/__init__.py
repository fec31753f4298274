"""Alerting: rules checked against the reports, and who is told when one fires.

It holds the alert rules (:mod:`.rules`), the lookup of ``agentmetrics.toml`` or
``[tool.agentmetrics]`` in ``pyproject.toml`` that the rules and the cost rates share
(:mod:`.config`) and the webhook (:mod:`.notify`).

It may import the store, the reports, the errors and the small leaves (formatting,
timestamps, window). The outputs (the HTML report's alerts) and the command line import
it; the store, tracking, the reports, plots, exchange and otel must never.
"""
