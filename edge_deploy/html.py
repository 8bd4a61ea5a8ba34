"""Static HTML report pages: one self-contained file beside the JSON it shows, its pictures beside it
(matplotlib PNGs), no script or style from elsewhere, so a CI artifact or a folder opens as is.

Each page counts its pictures once they load (`data-pictures-loaded` on <body>, of
`data-pictures`), so a headless browser can tell a page whose plots are there from one with
broken images.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.ok { color: #2f7d4f; } .failed { color: #b3263a; font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; }
"""
COUNT_PICTURES = """
window.addEventListener("load", function () {
  var loaded = Array.prototype.filter.call(document.images, function (img) {
    return img.complete && img.naturalWidth > 0;
  }).length;
  document.body.setAttribute("data-pictures-loaded", String(loaded));
});
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], classes: Optional[List[str]] = None) -> str:
    """A table; `classes` gives each row's class (ok, failed) where wanted."""
    head = "".join("<th>%s</th>" % esc(cell) for cell in header)
    body = []
    for index, row in enumerate(rows):
        css = ' class="%s"' % esc(classes[index]) if classes and classes[index] else ""
        body.append("<tr%s>%s</tr>" % (css, "".join("<td>%s</td>" % esc(cell) for cell in row)))
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, "".join(body))


def picture(name: str, caption: str) -> str:
    return '<figure><img src="%s" alt="%s"><figcaption class="note">%s</figcaption></figure>' % (
        esc(name),
        esc(caption),
        esc(caption),
    )


def link(href: str, text: str) -> str:
    return '<a href="%s">%s</a>' % (esc(href), esc(text))


def write_page(path: Path, title: str, sections: Sequence[str], pictures: int) -> Path:
    """Write one page: the title, then each section's HTML (already escaped where it needs to be)."""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title>'
        '<style>%s</style><script>%s</script></head>\n<body data-pictures="%d">\n<h1>%s</h1>\n%s\n'
        "</body></html>\n" % (esc(title), STYLE, COUNT_PICTURES, pictures, esc(title), "\n".join(sections))
    )
    path.write_text(page, encoding="utf-8")
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), or None where matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
