"""The report's two renderings: inline code wherever Markdown would show it, tables that free text cannot break."""
from __future__ import annotations

from resmlp_suite.report import Document, Heading, Paragraph, Table


def test_inline_code_renders_in_headings_text_and_tables_and_no_backtick_is_left_in_html() -> None:
    doc = Document("t").add(Heading("Training (`python vision/train.py`)"), Paragraph("run `a`"),
                            Table(["`col`"], [["`x`"]]))
    page = doc.html()
    assert "<h2>Training (<code>python vision/train.py</code>)</h2>" in page
    assert "<th><code>col</code></th>" in page and "<td><code>x</code></td>" in page and "<p>run <code>a</code></p>" in page
    assert "`" not in page


def test_a_pipe_in_a_cell_stays_in_its_cell() -> None:
    markdown = Document("t").add(Table(["source", "translation"], [["a | b", "c"]])).markdown()
    assert "| a \\| b | c |" in markdown
