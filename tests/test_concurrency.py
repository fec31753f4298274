"""Many processes writing one file, and a writer killed mid-stream."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

WRITER = textwrap.dedent(
    """
    import sys
    from agentmetrics import Monitor

    path, worker, lifecycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
    monitor = Monitor(path)
    i = 0
    while lifecycles == 0 or i < lifecycles:
        with monitor.orchestration(f"{worker}-{i}") as orch:
            with orch.agent("builder", f"{worker}-{i}-a"):
                pass
            try:
                with orch.agent("tester", f"{worker}-{i}-b"):
                    raise ValueError(i)
            except ValueError:
                pass
        print(f"{worker}-{i}", flush=True)  # committed: every write above has returned
        i += 1
    """
)


def spawn(path, worker, lifecycles):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), worker, str(lifecycles)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_processes_write_every_row_without_lock_errors(db_path):
    workers, lifecycles = 4, 200
    procs = [spawn(db_path, f"w{n}", lifecycles) for n in range(workers)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr
    conn = sqlite3.connect(db_path)
    orchestrations = conn.execute(
        # One task completed, one failed (caught): each is partial.
        "SELECT count(*), sum(status = 'partial'), sum(completed_tasks), sum(failed_tasks)"
        " FROM orchestrations"
    ).fetchone()
    assert (
        orchestrations == (workers * lifecycles, workers * lifecycles) + (workers * lifecycles,) * 2
    )
    executions = conn.execute(
        "SELECT status, count(*) FROM agent_executions GROUP BY status ORDER BY status"
    ).fetchall()
    assert executions == [("completed", workers * lifecycles), ("failed", workers * lifecycles)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_sigkill_mid_stream_keeps_committed_rows_and_integrity(db_path):
    proc = spawn(db_path, "victim", 0)
    committed = []
    deadline = time.monotonic() + 60
    while len(committed) < 50 and time.monotonic() < deadline:
        committed.append(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) == 50
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = dict(conn.execute("SELECT session_id, status FROM orchestrations"))
    for session in committed:
        assert stored[session] == "partial"  # one task completed, one failed
    finished = conn.execute(
        "SELECT count(*) FROM agent_executions WHERE status != 'in_progress'"
    ).fetchone()[0]
    assert finished >= 2 * len(committed)
