"""Headless Chromium, to open a report as a reader would: chart sizes measured in the page,
console errors, a screenshot, and whether the screenshot shows anything drawn."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]
WINDOW = "1280,1800"  # the probe's viewport and the screenshot's size
# Appended to a copy of the page: measures every chart and records script errors in the DOM,
# where --dump-dom shows them (the report itself has no script).
_PROBE = """<pre id="probe"></pre><script>
(function () {
  var charts = Array.prototype.map.call(document.querySelectorAll("svg.chart"), function (svg) {
    var box = svg.getBoundingClientRect();
    return {name: svg.getAttribute("data-chart"), width: box.width, height: box.height,
            marks: svg.querySelectorAll("rect, circle, line").length};
  });
  // Layout: how wide the page scrolls against the viewport (a table wider than the page must
  // scroll in its own box), and whether the first chart comes before the rule's text.
  var rule = Array.prototype.find.call(document.querySelectorAll("p"), function (p) {
    return p.textContent.indexOf("Rule: ") === 0;
  });
  var chart = document.querySelector("svg.chart");
  var layout = {scrollWidth: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth,
                chartBeforeRule: !!(rule && chart && (chart.compareDocumentPosition(rule) & Node.DOCUMENT_POSITION_FOLLOWING))};
  document.getElementById("probe").textContent = JSON.stringify({charts: charts, layout: layout,
                                                    scripts: document.scripts.length});
})();
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


def console_errors(log: str) -> list[str]:
    """Chromium's stderr lines for console messages, script errors and failed loads."""
    markers = ("CONSOLE", "Uncaught", "Failed to load resource", "net::ERR_")
    return [line for line in log.splitlines() if any(m in line for m in markers)]


def open_in_chromium(page: Path, workdir: Path) -> dict:
    """Opens `page` in headless Chromium twice (a fresh profile each time): once with a probe
    for chart sizes and layout (--dump-dom), once for a screenshot. Returns the probe ({"charts": [...],
    "layout": {"scrollWidth", "viewport", "chartBeforeRule"}, "scripts": n}), console lines, PNG path."""
    workdir.mkdir(parents=True, exist_ok=True)
    probed = workdir / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dumped = _run_chromium([f"--window-size={WINDOW}", "--dump-dom", probed.as_uri()], workdir / "profile-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    probe = json.loads(html.unescape(found.group(1))) if found and found.group(1) else None
    screenshot = workdir / "report.png"
    shot = _run_chromium([f"--screenshot={screenshot}", f"--window-size={WINDOW}", "--hide-scrollbars",
                          page.as_uri()], workdir / "profile-shot")
    return {"probe": probe, "dom_log": dumped.stderr, "errors": console_errors(dumped.stderr + shot.stderr),
            "screenshot": screenshot if screenshot.exists() else None}


def png_varied_rows(path: Path) -> tuple[int, int, float]:
    """(width, height, share of rows that are not one flat colour) of an 8-bit RGB(A) PNG,
    read by hand (zlib only). A flat row stays constant per channel under every PNG scanline
    filter (None keeps the colour, Sub/Up/Average/Paeth leave zeros past the first pixel), so
    a row whose filtered bytes vary per channel holds something drawn: text, a line, a bar."""

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + length])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), f"unsupported PNG (depth {depth}, colour type {colour})"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    varied = 0
    for row in range(1, height):  # row 0 varies under the Average filter even when flat
        line = raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)]
        varied += any(len(set(line[channels + c::channels])) > 1 for c in range(channels))
    return width, height, varied / (height - 1)
