"""Render HTML files in headless Chromium: screenshot, DOM after load, console messages.

Plain command-line flags rather than a DevTools Protocol client: ``--dump-dom`` prints
the DOM once the page has loaded, ``--screenshot`` writes a PNG of the window, and
``--enable-logging=stderr --v=0`` logs every console message (errors, warnings, logs
and uncaught exceptions alike) as an ``INFO:CONSOLE`` line on stderr, which is all a
page without scripts should never produce. ``--proxy-server`` points at a closed port so
a page that tried to fetch anything over the network would fail loudly.

Run ``python tests/browser.py`` to regenerate ``docs/report.png`` from the demo database.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9",
    "--enable-logging=stderr",
    "--v=0",
]


def find_chromium() -> str | None:
    """The path of a Chromium or Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(binary: str, page: Path, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *_FLAGS, f"--user-data-dir={profile}", *flags, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def dump_dom(binary: str, page: Path) -> tuple[str, list[str]]:
    """The DOM after load, and the console messages the page logged."""
    result = _run(binary, page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, CONSOLE_LINE.findall(result.stderr)


def screenshot(
    binary: str, page: Path, png: Path, width: int = 1280, height: int = 2000
) -> list[str]:
    """Write a PNG of the page in a ``width`` x ``height`` window; return console messages."""
    result = _run(binary, page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    assert result.returncode == 0 and png.exists(), result.stderr[-2000:]
    return CONSOLE_LINE.findall(result.stderr)


def trim_bottom(png: Path, margin: int = 24) -> None:
    """Cut the blank space below the page's content (the window is taller than it)."""
    from PIL import Image, ImageChops

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box:
        rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + margin))).save(png, optimize=True)


def main() -> None:
    import agentmetrics.demo
    from agentmetrics.outputs.htmlreport import write_report

    binary = find_chromium()
    if binary is None:
        raise SystemExit("No Chromium binary found")
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        agentmetrics.demo.build_demo(db, now="2026-03-01T12:00:00Z")
        page = write_report(
            db,
            Path(tmp) / "report.html",
            until="2026-03-01T12:00:00Z",
            config={"costs": {"default_hourly_rate": 6.0}},
        )
        png = root / "docs" / "report.png"
        png.parent.mkdir(exist_ok=True)
        messages = screenshot(binary, page, png, height=9000)
        assert not messages, messages
        trim_bottom(png)
        print(f"Wrote {png}")


if __name__ == "__main__":
    main()
