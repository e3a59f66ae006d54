"""Headless Chromium for the UI tests: a page's DOM after its scripts ran, a screenshot, and what a
reader sees of a DOM."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from d3ke_assets.errors import D3keError
from d3ke_assets.processes import find_program, stop_group


def _chromium_argv(chromium: str, profile: str, window: tuple[int, int], budget_ms: int) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}"]


def _run_chromium(extra: list[str], url: str, window: tuple[int, int], budget_ms: int, timeout_s: float,
                  chromium: str | None) -> subprocess.CompletedProcess:
    program = chromium or find_program("chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
                                       install_hint="apt-get install chromium (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="d3ke-chromium-") as profile:
        argv = _chromium_argv(program, profile, window, budget_ms) + extra + [url]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_group(process, timeout_s=5)
            raise D3keError(f"chromium did not finish rendering {url} within {timeout_s:.0f} s") from None
        finally:
            stop_group(process, timeout_s=5)  # its helper processes, if any outlived it
    if process.returncode != 0:
        last = (stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise D3keError(f"chromium exited with code {process.returncode} on {url}: {last}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def chromium_screenshot(url: str, png_path: Path, window: tuple[int, int] = (1600, 1000),
                        budget_ms: int = 20000, timeout_s: float = 120.0, chromium: str | None = None) -> Path:
    """A PNG of `url` rendered by headless Chromium after `budget_ms` of virtual time (the React app's
    requests and renders run in it), in a fresh profile."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    _run_chromium([f"--screenshot={png_path}"], url, window, budget_ms, timeout_s, chromium)
    if not png_path.is_file():
        raise D3keError(f"chromium wrote no screenshot of {url} to {png_path}")
    return png_path


def chromium_dom(url: str, window: tuple[int, int] = (1600, 1000), budget_ms: int = 20000,
                 timeout_s: float = 120.0, chromium: str | None = None) -> str:
    """The DOM of `url` after the page's scripts ran for `budget_ms` of virtual time (--dump-dom)."""
    done = _run_chromium(["--dump-dom"], url, window, budget_ms, timeout_s, chromium)
    return done.stdout.decode(errors="replace")


def visible_text(dom: str) -> str:
    """The text of a dumped DOM without scripts, styles and tags (what a reader sees, roughly)."""
    import html
    import re

    dom = re.sub(r"(?is)<(script|style|noscript|template)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"(?s)<[^>]+>", " ", dom)).split())


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; an error if the file is not a PNG."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise D3keError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def copy_screenshot(png: Path, env_var: str = "D3KE_SCREENSHOT_DIR") -> Path | None:
    """Copy a screenshot into the folder named by `env_var`, when it is set (e.g. to keep it from CI)."""
    folder = os.environ.get(env_var)
    if not folder:
        return None
    target = Path(folder).expanduser().resolve()
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(png, target / Path(png).name))
