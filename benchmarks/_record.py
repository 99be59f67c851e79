"""Write one section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
INTRO = (
    "# Benchmarks\n\n"
    "Figures measured by the scripts in benchmarks/; each section names the command that produced it.\n"
)


def record_section(heading: str, body: str) -> None:
    """Replace the section ``## heading`` (or append it) with ``body``."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else INTRO
    marker = f"## {heading}\n"
    new = f"{marker}\n{body.strip()}\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + new + (text[end:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    DOC.write_text(text, encoding="utf-8")
