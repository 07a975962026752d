"""The demo's report: one document rendered twice, as Markdown (``README.md``) and as a self-contained page
(``index.html``, images beside it, opens from disk without a server)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from .files import atomic_write_text

__all__ = ["Heading", "Paragraph", "Table", "Image", "Document"]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass
class Image:
    path: str  # relative to the report directory
    alt: str


Block = Union[Heading, Paragraph, Table, Image]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self

    def markdown(self, title: bool = True, heading_shift: int = 0, image_prefix: str = "") -> str:
        """The document as Markdown; without its title, headings moved ``heading_shift`` levels down and image
        paths prefixed with ``image_prefix``, it fits into a section of another page."""
        out = [f"# {self.title}", ""] if title else []
        for block in self.blocks:
            if isinstance(block, Heading):
                out += ["#" * (block.level + heading_shift) + " " + block.text, ""]
            elif isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Table):
                out.append("| " + " | ".join(block.header) + " |")
                out.append("|" + " --- |" * len(block.header))
                out += ["| " + " | ".join(_cell(c).replace("|", "\\|") for c in row) + " |" for row in block.rows]
                out.append("")
            else:
                out += [f"![{block.alt}]({image_prefix}{block.path})", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = []
        for block in self.blocks:
            if isinstance(block, Heading):
                body.append(f"<h{block.level}>{_inline_code(html.escape(block.text))}</h{block.level}>")
            elif isinstance(block, Paragraph):
                body.append(f"<p>{_inline_code(html.escape(block.text))}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{_inline_code(html.escape(h))}</th>" for h in block.header)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{_inline_code(html.escape(_cell(c)))}</td>" for c in row) + "</tr>"
                    for row in block.rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                body.append(f'<figure><img src="{html.escape(block.path)}" alt="{html.escape(block.alt)}">'
                            f"<figcaption>{html.escape(block.alt)}</figcaption></figure>")
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))

    def images(self) -> list[str]:
        return [block.path for block in self.blocks if isinstance(block, Image)]

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``README.md`` and ``index.html`` into ``directory`` (atomically); returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        md, page = directory / "README.md", directory / "index.html"
        atomic_write_text(md, self.markdown())
        atomic_write_text(page, self.html())
        return md, page


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> (the only inline markup the report uses)."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }} figcaption {{ color: #666; font-size: 90%; }}
code {{ background: #f5f5f5; padding: 0 3px; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
