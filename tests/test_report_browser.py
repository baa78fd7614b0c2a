"""The rendered report in a real headless Chromium, driven over the DevTools protocol (stdlib only).

Checks: no console errors, no CSP violations, no network request other than the
report file itself, hostile labels show as text with no injected elements, the
screenshot is not blank, and the page prints to PDF.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_report_data import XSS_IMG, XSS_SCRIPT, full_report, xss_report

from faceaudit.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_S = 25.0


class _Cdp:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, user_data: Path) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def _fds() -> None:  # in the child: move the pipe ends to fds 3 and 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
            f"--user-data-dir={user_data}", "--remote-debugging-pipe", "--window-size=1280,2000", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_fds, close_fds=False,
        )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.deadline = time.monotonic() + TIMEOUT_S

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read_message()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict[str, Any]:
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._read_message()
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self) -> None:
        try:
            self._id += 1
            os.write(self._w, json.dumps({"id": self._id, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def _open_report(tmp_path: Path, report: dict[str, Any]) -> tuple[_Cdp, str, str, Path]:
    html_path, _ = write_report(report, tmp_path / "report")
    url = html_path.resolve().as_uri()
    cdp = _Cdp(tmp_path / "profile")
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    cdp.events.clear()
    cdp.send("Page.navigate", {"url": url}, session=session)
    cdp.wait_event("Page.loadEventFired")
    return cdp, session, url, html_path


def _problems(cdp: _Cdp, url: str) -> list[str]:
    bad = []
    for m in cdp.events:
        method, p = m.get("method"), m.get("params", {})
        if method == "Network.requestWillBeSent":
            req = p.get("request", {}).get("url", "")
            if req != url and not req.startswith("data:"):
                bad.append(f"network request: {req}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            bad.append(f"console {p.get('type')}: {p.get('args')}")
        elif method == "Runtime.exceptionThrown":
            bad.append(f"exception: {p.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            bad.append(f"log: {p['entry'].get('source')}: {p['entry'].get('text')}")
    return bad


@pytest.fixture()
def _chromium() -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not on PATH (install Debian's `chromium` package to run the browser test)")


@pytest.mark.usefixtures("_chromium")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    cdp, session, url, _ = _open_report(tmp_path / "full", full_report())
    try:
        shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        pdf = cdp.send("Page.printToPDF", {"printBackground": False}, session=session)["data"]
        info = cdp.send(
            "Runtime.evaluate",
            {"expression": "JSON.stringify([document.querySelectorAll('svg').length, document.title, "
                           "document.querySelectorAll('section').length])", "returnByValue": True},
            session=session,
        )["result"]["value"]  # fmt: skip
        problems = _problems(cdp, url)
    finally:
        cdp.close()
    assert problems == []
    n_svg, title, n_sections = json.loads(info)
    assert n_svg == 10 and n_sections == 8
    assert title == "faceaudit report: mobilefacenet.onnx"
    img = Image.open(io.BytesIO(base64.b64decode(shot))).convert("L")
    assert img.size == (1280, 2000)
    stat = ImageStat.Stat(img)
    assert stat.stddev[0] > 15, "screenshot looks blank"
    assert len(img.getcolors(1 << 16) or ()) > 50
    assert base64.b64decode(pdf).startswith(b"%PDF")


@pytest.mark.usefixtures("_chromium")
def test_hostile_labels_stay_text_in_chromium(tmp_path: Path) -> None:
    cdp, session, url, _ = _open_report(tmp_path / "xss", xss_report())
    try:
        res = cdp.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify({scripts: document.querySelectorAll('script').length, "
                "imgs: document.querySelectorAll('img').length, "
                "handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                ".some(a => a.name.startsWith('on'))).length, text: document.body.textContent})",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        problems = _problems(cdp, url)
    finally:
        cdp.close()
    got = json.loads(res)
    assert got["scripts"] == 0 and got["imgs"] == 0 and got["handlers"] == 0
    assert XSS_SCRIPT in got["text"] and XSS_IMG in got["text"]
    assert problems == []


@pytest.mark.usefixtures("_chromium")
def test_run_metadata_wraps_long_values_inside_their_column(tmp_path: Path) -> None:
    """A 64-character SHA-256 wraps inside the Model table instead of running over the Data column."""
    report = full_report()
    report["model"]["sha256"] = "f" * 64
    report["model"]["path"] = "/models/" + "very_long_directory_name_" * 4 + "mobilefacenet.onnx"
    cdp, session, url, _ = _open_report(tmp_path / "meta", report)
    try:
        res = cdp.send(
            "Runtime.evaluate",
            {"expression": "JSON.stringify([...document.querySelectorAll('#metadata .grid.meta > div')].map(d => {"
                           "const box = d.getBoundingClientRect(); const t = d.querySelector('table');"
                           "const cells = [...d.querySelectorAll('td')];"
                           "return {title: d.querySelector('h3').textContent, right: box.right,"
                           " table_right: t.getBoundingClientRect().right,"
                           " cell_right: Math.max(...cells.map(c => c.getBoundingClientRect().right)),"
                           " spill: cells.filter(c => c.scrollWidth > c.clientWidth + 1).length};}))",
             "returnByValue": True},
            session=session,
        )["result"]["value"]  # fmt: skip
    finally:
        cdp.close()
    boxes = json.loads(res)
    assert [b["title"] for b in boxes][:2] == ["Model", "Data"]
    for b in boxes:
        assert b["table_right"] <= b["right"] + 1 and b["cell_right"] <= b["right"] + 1, b
        assert b["spill"] == 0, b
