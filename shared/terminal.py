"""Hostile text made safe to show: model answers, provider errors and anything derived from them
reach report.md, the cost dashboard and the CLI's lines, and whoever `cat`s a report or reads a
terminal must not get its control sequences (ESC c resets the terminal, ESC P starts a DCS,
SO/SI switch character sets). The one rule, used by every text renderer (shared.report.markdown's
`md`, the producer's lines that print such text): each C0 control but tab, line feed and
carriage return (which the renderers turn into spaces or leave to the terminal), DEL and each C1
control is shown as its escape, `\\x1b`, so it stays visible and does nothing."""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def without_controls(text: str) -> str:
    """`text` with each control character (see above) written as `\\xNN`."""
    if text.isprintable() or _CONTROLS.search(text) is None:  # the usual case: no copy (isprintable: C speed)
        return text
    return _CONTROLS.sub(lambda found: f"\\x{ord(found[0]):02x}", text)
