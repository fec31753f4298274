"""Outputs: the store's numbers shown to people and to other tools.

It holds the HTML report (:mod:`.htmlreport`, its page in ``templates/report.html``),
the Prometheus metrics text (:mod:`.prometheus`), the Datasette metadata
(:mod:`.datasette`), a notebook's rich display of a run (:mod:`.display`) and the two
views drawn as text: a run's waterfall (:mod:`.waterfall`) and the live numbers
(:mod:`.watch`, whose snapshot the HTML report shows too).

It may import the store, the reports, plots, alerting, the demo's marker table, the
errors and the small leaves. The command line imports it, and tracking only inside a
notebook's ``_repr_html_``; the store, the reports, alerting, exchange, otel and plots
must never.
"""
