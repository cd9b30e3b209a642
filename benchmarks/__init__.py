"""Benchmarks of pdediff: ``python -m benchmarks`` and the modules named in the README."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out, name: str, lines: list[str], results: dict, draw, caption: str) -> None:
    """Write ``out/name.md`` (``lines`` then the figure), ``out/name.json`` (``results``) and the
    figure ``out/name.png`` (``draw(path)``), each atomically, and print the markdown."""
    from pdediff.atomic import write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw(out / f"{name}.png")
    write_text(out / f"{name}.md", "\n".join(lines + [f"![{caption}]({name}.png)", ""]))
    write_text(out / f"{name}.json", json.dumps(results, indent=1))
    print("\n".join(lines))
