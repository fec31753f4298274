"""Files written on request (``-o``) and what reaches stdout (issue 9, "Files and secrets").

Outputs are written whole or not at all, through a temporary file created exclusively,
and never through a symlink; machine output (JSON, CSV, metrics) is exact; tables
escape control characters.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest
from click.testing import CliRunner
from conftest import fill
from dashboard_data import build

import agentmetrics
from agentmetrics.atomic import atomic_file
from agentmetrics.cli import cli
from agentmetrics.errors import AgentMetricsError
from agentmetrics.formatting import printable

PRECIOUS = "precious: must never be overwritten\n"
WINDOW = ["--since", "2026-03-01", "--until", "2026-03-03"]

# (-o file name, the command line writing it)
OUTPUTS = {
    "report": ("report.html", ["report", *WINDOW]),
    "export": ("all.json", ["export"]),
    "export-otlp": ("traces.jsonl", ["export", "--format", "otlp"]),
    "table-csv": ("executions.csv", ["export", "--format", "csv", "--table", "executions"]),
    "table-parquet": ("e.parquet", ["export", "--format", "parquet", "--table", "executions"]),
    "metrics": ("agentmetrics.prom", ["metrics"]),
    "plot": ("trends.png", ["plot", "trends", *WINDOW]),
}


@pytest.fixture
def data_path(db_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    build(db_path)
    return db_path


def run(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), *map(str, args)])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("output", OUTPUTS)
def test_symlinks_at_the_old_temporary_names_are_not_followed(data_path, tmp_path, output):
    """report and export wrote NAME.partial, metrics NAME.<pid>.tmp: a link planted
    there had its target overwritten. (CliRunner runs in this process: same pid.)"""
    name, args = OUTPUTS[output]
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    planted = [out / f"{name}.partial", out / f"{name}.{os.getpid()}.tmp"]
    for link in planted:
        link.symlink_to(victim)
    result = run(data_path, *args, "-o", out / name)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == PRECIOUS
    assert all(link.is_symlink() for link in planted)
    assert (out / name).is_file() and not (out / name).is_symlink()
    assert (out / name).stat().st_size > 0
    assert listing(out) == sorted([name, *(link.name for link in planted)])


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_symlink_target_is_replaced_not_followed(data_path, tmp_path, output):
    """plot wrote through a symlink at the target; every output now replaces the link."""
    name, args = OUTPUTS[output]
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    target = tmp_path / name
    target.symlink_to(victim)
    result = run(data_path, *args, "-o", target)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == PRECIOUS
    assert not target.is_symlink() and target.stat().st_size > 0


def test_a_link_at_the_random_name_is_skipped(tmp_path, monkeypatch):
    """The temporary file is created with O_EXCL: a link already at the name drawn is
    never opened; the next name is tried."""
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    link = tmp_path / f".out.txt.{os.getpid()}-planted0.agentmetrics-tmp"
    link.symlink_to(victim)
    names = iter(["planted0", "fresh000"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    with atomic_file(tmp_path / "out.txt") as out:
        out.write("new\n")
    assert victim.read_text() == PRECIOUS
    assert (tmp_path / "out.txt").read_text() == "new\n"
    assert listing(tmp_path) == [link.name, "out.txt", "victim.txt"]


# -- temporary files of writers killed outright ---------------------------------------

KILLED_EXPORT = """
import sys, time
import agentmetrics.exchange
from agentmetrics.cli import cli

real = agentmetrics.exchange.export

def export_then_hang(db, out, *args, **kwargs):
    counts = real(db, out, *args, **kwargs)
    out.flush()
    print("written", flush=True)  # everything is in the temporary file, not yet renamed
    time.sleep(60)
    return counts

agentmetrics.exchange.export = export_then_hang
cli(sys.argv[1:])
"""


def temporaries(folder, name):
    return sorted(p.name for p in folder.glob(f".{name}.*-*.agentmetrics-tmp"))


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_export_killed_mid_write_leaves_no_temporary_file_after_the_next_run(data_path, tmp_path):
    """SIGKILL during `export -o` left .NAME.xxxxxxxx (2 MB) beside the target, and a
    run again kept it. The next write of the target removes it; others' files stay."""
    import signal

    out = tmp_path / "out"
    out.mkdir()
    target = out / "all.json"
    target.write_text("yesterday\n")
    # Named like temporary files, but not ours: another tool's, the old naming.
    foreign = [out / ".all.json.abcdefgh", out / ".all.json.tmp"]
    for path in foreign:
        path.write_text(PRECIOUS)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXPORT, "--db", str(data_path), "export", "-o", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "written\n"  # bounded: the child ends in 60 s
        [left] = temporaries(out, "all.json")
        assert f".{proc.pid}-" in left and (out / left).stat().st_size > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert temporaries(out, "all.json") == [left]  # a SIGKILL cannot be cleaned up after
    assert target.read_text() == "yesterday\n"

    result = run(data_path, "export", "-o", target)
    assert result.exit_code == 0, result.output
    assert listing(out) == sorted(["all.json", *(p.name for p in foreign)])
    assert all(p.read_text() == PRECIOUS for p in foreign)
    exported = json.loads(target.read_text())
    assert len(exported) == len(json.loads(run(data_path, "export").stdout))


@pytest.mark.parametrize("output", OUTPUTS)
def test_every_output_removes_stale_temporary_files_of_its_target(data_path, tmp_path, output):
    name, args = OUTPUTS[output]
    stale = tmp_path / f".{name}.{dead_pid()}-abcdefgh.agentmetrics-tmp"
    stale.write_text("half")
    result = run(data_path, *args, "-o", tmp_path / name)
    assert result.exit_code == 0, result.output
    assert listing(tmp_path) == sorted([name, "test.db"])


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    """Another process still writing the same target keeps its file and finishes."""
    target = tmp_path / "m.prom"
    code = (
        "import sys\nfrom agentmetrics.atomic import atomic_file\n"
        "with atomic_file(sys.argv[1]) as out:\n"
        "    out.write('live\\n'); print('ready', flush=True); sys.stdin.readline()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "ready\n"
        [live] = temporaries(tmp_path, "m.prom")
        with atomic_file(target) as out:
            out.write("mine\n")
        assert temporaries(tmp_path, "m.prom") == [live]
        assert target.read_text() == "mine\n"
    finally:
        writer.communicate("go\n", timeout=30)
    assert writer.returncode == 0
    assert listing(tmp_path) == ["m.prom"] and target.read_text() == "live\n"


def test_which_stale_temporary_files_are_removed(tmp_path, monkeypatch):
    from agentmetrics.atomic import STALE_SECONDS, remove_stale

    target = tmp_path / "m.prom"
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    gone, alive = dead_pid(), os.getpid()
    files = {
        "dead writer": f".m.prom.{gone}-abcdefgh.agentmetrics-tmp",
        "old, pid reused": f".m.prom.{alive}-ijklmnop.agentmetrics-tmp",
        "young, pid alive": f".m.prom.{alive}-qrstuvwx.agentmetrics-tmp",
        "other target": f".m.prom2.{gone}-abcdefgh.agentmetrics-tmp",
        "not our name": f".m.prom.{gone}-abcdefgh.tmp",
    }
    for name in files.values():
        (tmp_path / name).write_text("x")
    old = os.stat(tmp_path / files["old, pid reused"]).st_mtime - STALE_SECONDS - 60
    os.utime(tmp_path / files["old, pid reused"], (old, old))
    link = tmp_path / f".m.prom.{gone}-symlink0.agentmetrics-tmp"
    link.symlink_to(victim)
    kept = [files["young, pid alive"], files["other target"], files["not our name"], link.name]
    assert sorted(remove_stale(target)) == sorted([files["dead writer"], files["old, pid reused"]])
    assert listing(tmp_path) == sorted([*kept, "victim.txt"])
    assert victim.read_text() == PRECIOUS
    # Another user's file is never removed, even with its writer gone.
    (tmp_path / files["dead writer"]).write_text("x")
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    assert remove_stale(target) == []
    assert (tmp_path / files["dead writer"]).exists()


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt])
def test_a_failed_write_changes_nothing(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("yesterday\n")
    raised = AgentMetricsError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(raised) as caught, atomic_file(target) as out:
        out.write("half of today")
        raise error
    if raised is AgentMetricsError:
        assert str(caught.value) == f"Cannot write {target}: No space left on device"
    assert target.read_text() == "yesterday\n"
    assert listing(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_fifo_or_device_target_is_refused(data_path, tmp_path, through_a_link):
    """Renaming over /dev/null or a FIFO would replace it (plot used to hang on a FIFO)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "link" if through_a_link else fifo
    if through_a_link:
        target.symlink_to(fifo)
    with pytest.raises(AgentMetricsError) as caught, atomic_file(target):
        pass
    message = f"Cannot write {target}: not a regular file (a device or FIFO)"
    assert str(caught.value) == message
    result = run(data_path, "metrics", "-o", target)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert fifo.is_fifo() and target.is_symlink() == through_a_link
    assert listing(tmp_path) == sorted(["fifo", "test.db", *(["link"] if through_a_link else [])])


def test_new_files_get_the_usual_mode(tmp_path):
    """mkstemp makes 0600 files; node_exporter (another user) must still read metrics."""
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "m.prom") as out:
            out.write("x 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "m.prom").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("output", ["export", "table-csv", "plot"])
def test_a_failure_mid_write_leaves_the_old_file(data_path, tmp_path, output, monkeypatch):
    import matplotlib.figure

    import agentmetrics.exchange

    def half(*args, **kwargs):
        out = next(a for a in [*args, *kwargs.values()] if hasattr(a, "write"))
        out.write(b"half" if "b" in out.mode else "half")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(agentmetrics.exchange, "export", half)
    monkeypatch.setitem(
        agentmetrics.exchange.EXPORT_FORMATS,
        "csv",
        agentmetrics.exchange.ExportFormat(write_table=half),
    )
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half)
    name, args = OUTPUTS[output]
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("yesterday\n")
    result = run(data_path, *args, "-o", out / name)
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot write {out / name}: Input/output error\n"
    assert (out / name).read_text() == "yesterday\n"
    assert listing(out) == [name]


@pytest.mark.parametrize("output", OUTPUTS)
def test_full_disk_leaves_no_temporary_file(data_path, small_disk, output):
    """report left NAME.partial behind on a full disk."""
    name, args = OUTPUTS[output]
    target = small_disk / name
    target.write_text("yesterday\n")
    fill(small_disk)
    before = listing(small_disk)
    result = run(data_path, *args, "-o", target)
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot write {target}: No space left on device\n"
    assert target.read_text() == "yesterday\n"
    assert listing(small_disk) == before


def test_missing_folder_is_one_line(data_path, tmp_path):
    target = tmp_path / "nowhere" / "m.prom"
    result = run(data_path, "metrics", "-o", target)
    assert result.exit_code == 1
    assert result.output == f"Error: Cannot write {target}: No such file or directory\n"
    assert listing(tmp_path) == ["test.db"]


@pytest.mark.parametrize("name", ["chart", "chart.nope"])
def test_plot_format_checked_before_writing(data_path, tmp_path, name):
    result = run(data_path, "plot", "trends", *WINDOW, "-o", tmp_path / name)
    assert result.exit_code == 2  # a bad -o value is a usage error
    given = "No file extension" if name == "chart" else "Format 'nope' is not supported"
    assert result.output.startswith(f"Error: {given}: use one of ")
    assert "png" in result.output and "svg" in result.output
    assert listing(tmp_path) == ["test.db"]


# -- export --format csv|parquet -o DIRECTORY ---------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_both_tables_refuse_a_file_name(data_path, tmp_path, fmt):
    """-o out.csv created a directory named out.csv."""
    result = run(data_path, "export", "--format", fmt, "-o", tmp_path / f"out.{fmt}")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path / f'out.{fmt}'} looks like a file name, but both tables need a"
        f" directory: give -o DIRECTORY (for DIRECTORY/orchestrations.{fmt} and"
        f" DIRECTORY/executions.{fmt}), or --table for one table\n"
    )
    assert listing(tmp_path) == ["test.db"]


def test_both_tables_into_an_existing_directory_named_like_a_file(data_path, tmp_path):
    (tmp_path / "tables.csv").mkdir()
    result = run(data_path, "export", "--format", "csv", "-o", tmp_path / "tables.csv")
    assert result.exit_code == 0, result.output
    assert listing(tmp_path / "tables.csv") == ["executions.csv", "orchestrations.csv"]


@pytest.mark.parametrize("existing", [True, False])
def test_both_tables_are_replaced_together(data_path, tmp_path, monkeypatch, existing):
    """The executions table fails after orchestrations was written: neither file
    changes, and a folder made for them is removed."""
    from agentmetrics.exchange import EXPORT_FORMATS, ExportFormat, write_csv

    real = write_csv

    def fails_on_executions(db, table, out, *args, **kwargs):
        if table == "executions":
            out.write("half")
            raise OSError(28, "No space left on device")
        return real(db, table, out, *args, **kwargs)

    monkeypatch.setitem(EXPORT_FORMATS, "csv", ExportFormat(write_table=fails_on_executions))
    folder = tmp_path / "tables"
    if existing:
        folder.mkdir()
        for name in ("orchestrations.csv", "executions.csv"):
            (folder / name).write_text("yesterday\n")
    result = run(data_path, "export", "--format", "csv", "-o", folder)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: Cannot write {folder / 'executions.csv'}: No space left on device\n"
    )
    if existing:
        assert listing(folder) == ["executions.csv", "orchestrations.csv"]
        assert {p.read_text() for p in folder.iterdir()} == {"yesterday\n"}
    else:
        assert not folder.exists()


# -- exact machine output, escaped tables ---------------------------------------------------

EVIL = "\x1b[2Jevil\x1b]0;pwned\x07"
EVIL_SHOWN = "\\x1b[2Jevil\\x1b]0;pwned\\x07"


@pytest.fixture
def evil_db(db_path):
    monitor = agentmetrics.Monitor(db_path)
    orchestration = monitor.start_orchestration("s-1", f"task {EVIL}")
    monitor.start_agent_execution("a-1", EVIL, orchestration_id=orchestration)
    monitor.complete_agent_execution("a-1", "failed", error_message=f"boom\n{EVIL}")
    monitor.close()
    return db_path


def test_printable():
    assert printable(EVIL) == EVIL_SHOWN
    assert printable("a\tb\r\nc\x7f\x9b\u202e\u2028") == "a\\tb\\r\\nc\\x7f\\x9b\\u202e\\u2028"
    assert printable("plain é 日本 \\ ok") == "plain é 日本 \\ ok"


@pytest.mark.parametrize(
    "args",
    [
        ["performance"],
        ["agent", EVIL, "--list"],
        ["executions", "s-1"],
        ["list"],
        ["show", "s-1"],
        ["agent", EVIL],
    ],
)
def test_tables_escape_control_characters(evil_db, args):
    result = run(evil_db, *args)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J" in result.output


def test_watch_escapes_control_characters(evil_db):
    from agentmetrics.outputs.watch import render, snapshot

    text = render(snapshot(evil_db), width=200)
    assert "\x1b" not in text and "\x07" not in text
    assert f"  {EVIL_SHOWN}: boom {EVIL_SHOWN}" in text


def piped(db_path, *args):
    """Run the CLI in a subprocess with stdout a pipe, as in ``agentmetrics ... | tool``."""
    return subprocess.run(
        [sys.executable, "-m", "agentmetrics", "--db", str(db_path), *args],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode("utf-8")


def test_machine_output_to_a_pipe_is_exact(evil_db):
    """click.echo strips ANSI sequences when stdout is not a terminal: metrics labels
    and CSV values lost them."""
    metrics = piped(evil_db, "metrics")
    assert f'agentmetrics_executions_total{{agent="{EVIL}",status="failed"}} 1' in metrics
    rows = piped(evil_db, "performance", "--csv").splitlines()
    assert rows[1].startswith(f"{EVIL},")
    (record,) = json.loads(piped(evil_db, "performance", "--json"))
    assert record["agent_name"] == EVIL
    shown = json.loads(piped(evil_db, "show", "s-1", "--json"))
    assert shown["task_description"] == f"task {EVIL}"
    table = piped(evil_db, "export", "--format", "csv", "--table", "executions")
    assert f",{EVIL}," in table
    lines = piped(evil_db, "export", "--format", "jsonl").splitlines()
    exported = [json.loads(line) for line in lines]
    assert [r["agent_name"] for r in exported if r["type"] == "execution"] == [EVIL]
