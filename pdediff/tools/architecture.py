"""``python -m pdediff.tools.architecture``: the size of every module and the imports between
the layers, as ``docs/architecture.md`` holds them (a test checks that it still does).

    python -m pdediff.tools.architecture            # print the generated part of the document
    python -m pdediff.tools.architecture --write    # rewrite it in docs/architecture.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

import pdediff
from pdediff.data.atomic import write_text

PACKAGE = Path(pdediff.__file__).parent
DOCUMENT = PACKAGE.parent / "docs" / "architecture.md"

#: The layers, lowest first: a module may import its own layer and those below it, never above.
#: ``pdediff`` itself (``AccuracyWarning``, ``__version__``) sits below them all.
LAYERS: dict[str, int] = {"maths": 0, "physics": 1, "data": 2, "learning": 3, "solver": 4, "models": 4, "tools": 5}

#: Modules allowed past about 500 lines, each one concept: why it is one file.
LONG: dict[str, str] = {
    "maths/samplers.py": "the sampler family (SAMPLERS): Euler, Heun, adaptive RK, Euler-Maruyama, PC, ALD",
    "data/generate.py": "the dataset generator: blocks, shards, workers, resume",
    "data/cards.py": "dataset cards: their fields, validation and rendering",
    "physics/sources.py": "the source and boundary families (SOURCES)",
    "tools/training.py": "the training loop: run folder, resume, DDP, validation",
    "data/dataset.py": "reading datasets: files, shards, external cards, xarray and torch views",
    "physics/problems/base.py": "the Problem contract: fields, operator, residual, estimate, polish to tolerance, guess",
}
LONG_MAX = 800
SHORT_MAX = 500

BEGIN, END = "<!-- generated: python -m pdediff.tools.architecture -->", "<!-- end generated -->"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str | None:
    """The layer (a top-level subpackage) of a dotted module name; None for ``pdediff`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path, known: set[str] | dict) -> list[str]:
    """The pdediff modules a file imports, anywhere in it (function-level imports included);
    ``known``: the package's module names (:func:`modules`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "pdediff"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pdediff":  # from pdediff import x: x a module or a root name
                out += [f"pdediff.{pdediff.MOVED.get(a.name, a.name)}" if a.name in pdediff.MOVED
                        or f"pdediff.{a.name}" in known else "pdediff" for a in node.names]
            elif node.module.split(".")[0] == "pdediff":
                out.append(node.module)
    return out


def edges() -> Counter:
    """(importing layer, imported layer) -> number of imports, between different layers."""
    count: Counter = Counter()
    mods = modules()
    for name, path in mods.items():
        src = layer_of(name)
        for target in imports(path, mods):
            dst = layer_of(target)
            if src is not None and dst is not None and src != dst:
                count[src, dst] += 1
    return count


def upward_imports() -> list[str]:
    """Every import of a higher layer by a lower one, as ``module -> imported``."""
    bad = []
    mods = modules()
    for name, path in mods.items():
        src = layer_of(name)
        for target in imports(path, mods):
            dst = layer_of(target)
            if src is None and dst is not None and name == "pdediff":
                continue  # the root's lazy load_solver and the aliases of the old flat names
            if src is not None and dst is not None and LAYERS[dst] > LAYERS[src]:
                bad.append(f"{name} -> {target}")
    return bad


def report() -> str:
    """The generated part of docs/architecture.md: module sizes, layer by layer, and the graph."""
    lines = ["### Imports between the layers", "", "| importer | imports | count |", "|---|---|---|"]
    for (src, dst), k in sorted(edges().items(), key=lambda e: (-LAYERS[e[0][0]], -LAYERS[e[0][1]], e[0])):
        lines.append(f"| {src} | {dst} | {k} |")
    lines += ["", "### Modules and their sizes", "", "| layer | module | lines |", "|---|---|---|"]
    mods = modules()
    by_layer = sorted(mods, key=lambda m: (LAYERS.get(layer_of(m), -1), m))
    total = 0
    for name in by_layer:
        n = len(mods[name].read_text().splitlines())
        total += n
        lines.append(f"| {layer_of(name) or '(root)'} | `{name}` | {n} |")
    lines += ["", f"{len(mods)} modules, {total} lines."]
    return "\n".join(lines) + "\n"


def generated_part(text: str) -> str | None:
    """The part of a document between the markers, or None if it has none."""
    head, sep, rest = text.partition(BEGIN + "\n")
    body, sep2, _ = rest.partition(END)
    return body if sep and sep2 else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help=f"rewrite the generated part of {DOCUMENT}")
    args = p.parse_args(argv)
    text = report()
    if not args.write:
        sys.stdout.write(text)
        return 0
    doc = DOCUMENT.read_text()
    if generated_part(doc) is None:
        p.exit(2, f"architecture: error: {DOCUMENT} has no '{BEGIN}' ... '{END}' part to rewrite\n")
    head, _, rest = doc.partition(BEGIN + "\n")
    _, _, tail = rest.partition(END)
    write_text(DOCUMENT, head + BEGIN + "\n" + text + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
