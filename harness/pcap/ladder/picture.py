"""The ladder diagram as a picture: hand-written SVG, and an HTML page with the SVG and a frame table.

Why hand-written SVG: reports (and the runner's failing cells) need a picture that opens in any
browser with no plotting library to install; a ladder is only lines and text. The events are the
same as the text ladder's (rows.events), so the three renderings never disagree.

    from harness.pcap.ladder import write_ladder
    paths = write_ladder("run.pcap", "results/cell-3", keylog="run.keys", smb_keys="run.smbkeys")
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..capture import Capture
from .rows import Event, events

CHAR_W = 6.7  # average advance of an 11 px monospace glyph, to size lanes and truncate labels
ROW_H = 22
LEFT = 150  # frame number and time column
TOP = 64  # lane titles
MAX_EVENTS = 3000  # a picture of more rows is unreadable; the table and text ladder have the rest

COLOURS = [("MALFORMED", "#c62828"), ("retransmission", "#c62828"), ("status=0x", "#e65100"),
           ("SMB3[enc]", "#6a1b9a"), ("SMB3 encrypted", "#6a1b9a"), ("SMBD", "#00838f"), ("RoCE", "#00838f"), ("SMB2", "#1565c0"),
           ("QUIC", "#2e7d32"), ("TCP", "#757575")]


def colour(label: str) -> str:
    label = label.replace("status=0xc0000016", "")  # MORE_PROCESSING_REQUIRED is a normal leg, not an error
    for key, col in COLOURS:
        if key in label:
            return col
    return "#424242"


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _fit(text: str, width: float) -> str:
    n = max(4, int(width / CHAR_W))
    return text if len(text) <= n else text[:n - 1] + "…"


def lane_gap(evs: Sequence[Event]) -> float:
    """Distance between lanes: wide enough for the labels of adjacent-lane arrows (most of them),
    bounded so that a three-lane capture still fits a screen."""
    longest = max((len(e[4]) for e in evs if abs(e[2] - e[3]) == 1), default=20)
    return float(min(460, max(220, longest * CHAR_W + 40)))


def svg(lanes: Sequence[str], evs: Sequence[Event], title: str = "", notices: Iterable[str] = ()) -> str:
    """An SVG document: one vertical line per endpoint, one labelled arrow per event, frame number
    and relative time on the left. Labels longer than their arrow are shortened (full text in the
    tooltip)."""
    shown = list(evs[:MAX_EVENTS])
    gap = lane_gap(shown)
    nl = max(len(lanes), 2)
    width = int(LEFT + gap * (nl - 1) + 120)
    notes = list(notices)
    height = TOP + ROW_H * (len(shown) + 1) + 20 + 16 * (len(notes) + (len(evs) > len(shown)))
    x = [LEFT + 60 + i * gap for i in range(nl)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">',
           "<defs>" + "".join(
               f'<marker id="a{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
               f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
               for k, c in enumerate(dict.fromkeys(c for _, c in COLOURS + [("", "#424242")]))) + "</defs>",
           # a white halo behind every label keeps it readable where it crosses a lane line
           "<style>text.l { paint-order: stroke; stroke: white; stroke-width: 3px; }</style>",
           f'<rect width="{width}" height="{height}" fill="white"/>']
    marker = {c: f"a{k}" for k, c in enumerate(dict.fromkeys(c for _, c in COLOURS + [("", "#424242")]))}
    if title:
        out.append(f'<text x="10" y="18" font-size="13" font-weight="bold">{_esc(title)}</text>')
    out.append(f'<text x="10" y="{TOP - 8}" fill="#555" xml:space="preserve"> frame   time (s)</text>')
    bottom = TOP + ROW_H * (len(shown) + 1)
    for i, name in enumerate(lanes):
        out.append(f'<text x="{x[i]:.0f}" y="{TOP - 24 + (i % 2) * 12}" text-anchor="middle" font-weight="bold">'
                   f'{_esc(name)}</text>')
        out.append(f'<line x1="{x[i]:.0f}" y1="{TOP - 4}" x2="{x[i]:.0f}" y2="{bottom}" stroke="#9e9e9e" '
                   'stroke-width="1.5"/>')
    for row, (num, t, a, b, label) in enumerate(shown):
        y = TOP + ROW_H * (row + 1)
        col = colour(label)
        out.append(f'<g><title>{_esc(f"frame {num}  {t:.6f} s  {lanes[a]} → {lanes[b]}  {label}")}</title>')
        out.append(f'<text x="10" y="{y + 4}" fill="#555" xml:space="preserve">{num:>6} {t:10.6f}</text>')
        if a == b:
            out.append(f'<path d="M{x[a]:.0f},{y - 6} h30 v10 h-30" fill="none" stroke="{col}" stroke-width="1.4" '
                       f'marker-end="url(#{marker[col]})"/>')
            out.append(f'<text x="{x[a] + 36:.0f}" y="{y}" fill="{col}" class="l">{_esc(_fit(label, gap - 40))}</text>')
        else:
            x1, x2 = x[a], x[b]
            out.append(f'<line x1="{x1:.0f}" y1="{y}" x2="{x2:.0f}" y2="{y}" stroke="{col}" stroke-width="1.4" '
                       f'marker-end="url(#{marker[col]})"/>')
            span = abs(x2 - x1) - 12
            out.append(f'<text x="{(x1 + x2) / 2:.0f}" y="{y - 4}" text-anchor="middle" fill="{col}" class="l">'
                       f'{_esc(_fit(label, span))}</text>')
        out.append("</g>")
    y = bottom + 18
    if len(evs) > len(shown):
        out.append(f'<text x="10" y="{y}" fill="#c62828">… {len(evs) - len(shown)} more events not drawn '
                   "(see the table or `wirecheck pcap show`)</text>")
        y += 16
    for n in notes:
        out.append(f'<text x="10" y="{y}" fill="#e65100">notice: {_esc(_fit(n, width - 80))}</text>')
        y += 16
    out.append("</svg>")
    return "\n".join(out)


def html_page(lanes: Sequence[str], evs: Sequence[Event], title: str, svg_text: str,
              notices: Iterable[str] = ()) -> str:
    """A standalone HTML page: the SVG inline, the notices, then a table of every event."""
    rows = "\n".join(
        f'<tr><td>{num}</td><td>{t:.6f}</td><td>{_esc(lanes[a])}</td><td>{_esc(lanes[b])}</td>'
        f'<td style="color:{colour(label)}">{_esc(label)}</td></tr>' for num, t, a, b, label in evs)
    notes = "".join(f"<p class=notice>notice: {_esc(n)}</p>" for n in notices)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.ladder {{ overflow-x: auto; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-family: monospace; font-size: 12px; }}
td, th {{ border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; white-space: nowrap; }}
th {{ background: #f5f5f5; position: sticky; top: 0; }}
.notice {{ color: #e65100; }}
</style></head><body>
<h1>{_esc(title)}</h1>
{notes}
<div class="ladder">
{svg_text}
</div>
<h2>Frames ({len(evs)} events)</h2>
<table><tr><th>frame</th><th>time (s)</th><th>from</th><th>to</th><th>event</th></tr>
{rows}
</table>
</body></html>
"""


def render(cap: Capture, *, all_tcp: bool = False, title: str | None = None) -> tuple[str, str]:
    """(svg text, html text) of a capture."""
    lanes, evs = events(cap, all_tcp)
    notes = cap.notices()
    title = title or f"{cap.path.name}: {len(evs)} events"
    s = svg(lanes, evs, title, notes)
    return s, html_page(lanes, evs, title, s, notes)


def write_ladder(capture_path: str | os.PathLike, out_dir: str | os.PathLike, keylog=None, smb_keys=None, *,
                 smb_ports: Iterable[int] = (), all_tcp: bool = False, stem: str | None = None) -> list[Path]:
    """Write `<stem>.ladder.svg` and `<stem>.ladder.html` for a capture into `out_dir` and return
    their paths: what the scenario runner attaches to a failing cell. Raises PcapError on bad input."""
    cap = Capture(capture_path, keylog=keylog, smb_keys=smb_keys, smb_ports=smb_ports)
    s, h = render(cap, all_tcp=all_tcp)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or Path(capture_path).stem
    paths = [out / f"{stem}.ladder.svg", out / f"{stem}.ladder.html"]
    paths[0].write_text(s)
    paths[1].write_text(h)
    return paths
