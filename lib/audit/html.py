"""``report.html``: the summary, the heatmap and the explanation plots in one self-contained
page (inline CSS, images as ``data:`` URIs, no JavaScript, no network).

The summary's Markdown is converted by a small converter of exactly the subset
:mod:`otaudit.audit.summary` writes (headings, pipe tables, ``-`` lists two levels deep,
paragraphs, ``**bold**``, `` `code` ``, images); everything else is escaped text.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

__all__ = ["markdown_to_html", "render_html", "data_uri"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:70em;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #eee}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:#f3f3f3}
code{background:#f5f5f5;padding:0 .2em;border-radius:3px}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}
"""


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_IMG = re.compile(r"!\[([^\]]*)\]\((data:image/png;base64,[A-Za-z0-9+/=]+)\)")


def _inline(text: str) -> str:
    """Escape ``text`` and apply the inline markup (code, bold, data-URI images)."""
    images: list[str] = []

    def keep(m: re.Match[str]) -> str:
        images.append(f'<img alt="{html.escape(m.group(1))}" src="{m.group(2)}">')
        return f"\x00{len(images) - 1}\x00"

    text = _IMG.sub(keep, text)
    parts = text.split("`")
    out = []
    for k, part in enumerate(parts):
        esc = html.escape(part, quote=False)
        if k % 2 == 1 and k < len(parts) - 1:
            out.append(f"<code>{esc}</code>")
        else:  # text (an unmatched last backtick stays a backtick)
            lead = "`" if k % 2 == 1 else ""
            out.append(lead + re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc))
    joined = "".join(out)
    return re.sub(r"\x00(\d+)\x00", lambda m: images[int(m.group(1))], joined)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str) -> str:
    """HTML (a fragment) of the summary's Markdown subset."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif m := re.match(r"^(#{1,6}) (.*)$", line):
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, rest = _cells(block[0]), block[1:]
            if rest and set(rest[0].replace("|", "").strip()) <= set("-: "):
                rest = rest[1:]
            out.append("<table><thead><tr>")
            out += [f"<th>{_inline(c)}</th>" for c in head]
            out.append("</tr></thead><tbody>")
            for r in rest:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>")
            out.append("</tbody></table>")
        elif re.match(r"^ *- ", line):
            flush()
            out.append("<ul>")
            open_sub = False
            while i < len(lines) and re.match(r"^ *- ", lines[i]):
                item = lines[i]
                nested = item.startswith("  ")
                text = _inline(item.lstrip()[2:])
                if nested and not open_sub:
                    out[-1] = out[-1].removesuffix("</li>")
                    out.append("<ul>")
                    open_sub = True
                elif not nested and open_sub:
                    out.append("</ul></li>")
                    open_sub = False
                out.append(f"<li>{text}</li>")
                i += 1
            if open_sub:
                out.append("</ul></li>")
            out.append("</ul>")
        else:
            para.append(line.strip())
            i += 1
    flush()
    return "\n".join(out)


def render_html(
    *,
    title: str,
    summary: str,
    heatmap_png: bytes | None,
    plots: Mapping[str, bytes] | None = None,
) -> str:
    """The self-contained ``report.html``: heatmap first, then the summary, then plots."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if heatmap_png is not None:
        body.append(
            '<figure><img alt="distance heatmap" src="' + data_uri(heatmap_png) + '">'
            "<figcaption>Distances (sqrt of the squared cost) per measure; × = not "
            "computed.</figcaption></figure>"
        )
    summary_md = summary.split("\n", 1)[1] if summary.startswith("# ") else summary
    body.append(markdown_to_html(summary_md))
    for name, png in (plots or {}).items():
        body.append(
            f'<figure><img alt="{html.escape(name)}" src="{data_uri(png)}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
