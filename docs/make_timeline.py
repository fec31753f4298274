"""Draw ``docs/timeline.png``, the reports page's picture of one run:
``python docs/make_timeline.py``.

The run is :func:`agentmetrics.demo.build_one_run` (the same rows every time), written
into a temporary file.
"""

import tempfile
from pathlib import Path

from agentmetrics import plots, reports
from agentmetrics.demo import build_one_run

OUT = Path(__file__).parent / "timeline.png"

with tempfile.TemporaryDirectory() as folder:
    db = Path(folder) / "one-run.db"
    session = build_one_run(db)
    frame = reports.timeline(db, session, spans=True)
    plots.plot_timeline(frame).savefig(OUT, dpi=100)
print(f"wrote {OUT}")
