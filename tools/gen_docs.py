"""Regenerate the generated docs: docs/configuration.md and docs/cli.md."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cli_markdown() -> str:
    from typer.testing import CliRunner

    from duolabel.cli import app, command_paths

    runner = CliRunner()
    commands = command_paths()
    parts = ["# CLI reference", "", "Generated from `--help` by `python tools/gen_docs.py`.", ""]
    for args in commands:
        result = runner.invoke(
            app,
            [*args, "--help"],
            prog_name="duolabel",
            terminal_width=100,
            env={"NO_COLOR": "1", "COLUMNS": "100"},
        )
        text = "\n".join(line.rstrip() for line in result.output.strip().splitlines())
        parts += [f"## duolabel {' '.join(args)}".rstrip(), "", "```", text, "```", ""]
    return "\n".join(parts)


def generated() -> dict[Path, str]:
    from duolabel.config import settings_markdown

    return {DOCS / "configuration.md": settings_markdown(), DOCS / "cli.md": cli_markdown()}


if __name__ == "__main__":
    for path, text in generated().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
