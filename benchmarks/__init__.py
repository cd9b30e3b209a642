"""Benchmarks of pdediff: ``python -m benchmarks`` and the modules named in the README.

Each module is a block of :data:`benchmarks.blocks.BLOCKS` (``python -m benchmarks --list``). A
block writes its results into its own folder, ``benchmarks/results/<block>/`` (:func:`results_dir`),
and records there, in the file ``COMMAND``, the command that made them (:func:`record_command`).
"""

from __future__ import annotations

import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

#: Where the blocks' folders live (read at call time: a test may point it elsewhere).
RESULTS = Path(__file__).parent / "results"
#: The name of the file, in a block's folder, that holds the commands that made its results.
COMMAND = "COMMAND"
_HEADER = ("# The commands that made the files in this folder, written by benchmarks.record_command:\n"
           "# one entry a run, oldest first; each file is named by the last run that wrote it.\n")


def results_dir(block: str) -> Path:
    """``benchmarks/results/<block>``: the default folder of a block's results."""
    return RESULTS / block


def write_report(out, name: str, lines: list[str], results: dict, draw, caption: str) -> None:
    """Write ``out/name.md`` (``lines`` then the figure), ``out/name.json`` (``results``) and the
    figure ``out/name.png`` (``draw(path)``), each atomically, and print the markdown."""
    from pdediff.data.atomic import write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw(out / f"{name}.png")
    write_text(out / f"{name}.md", "\n".join(lines + [f"![{caption}]({name}.png)", ""]))
    write_text(out / f"{name}.json", json.dumps(results, indent=1))
    print("\n".join(lines))


def load_models(parser, spec: str, problem: str, n: int | None = None) -> dict:
    """The solvers of ``--models`` (a comma list of shipped names or checkpoint paths), by name,
    each of ``problem`` (and trained at N = ``n`` if given), with no fallback: each model alone.
    Anything else exits through ``parser.error`` (exit 2) naming the argument and the value."""
    import pdediff

    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        parser.error(f"--models={spec!r} names no model; expected a comma list of {problem} models")
    try:
        solvers = {name: pdediff.load_solver(name) for name in names}
    except ValueError as exc:
        parser.error(f"--models={spec!r}: {exc}")
    for name, solver in solvers.items():
        if solver.problem.name != problem or (n is not None and solver.grid_size != n):
            parser.error(f"--models: {name!r} is a {solver.problem.name!r} model at N = {solver.grid_size}; "
                         f"expected {problem} models" + (f" trained at N = {n}" if n is not None else ""))
        solver.fallback = None
    return solvers


def write_table(out, block: str, argv, lines: list[str]) -> None:
    """Write the markdown ``lines`` to ``out`` atomically and record the command of ``block`` beside it."""
    from pdediff.data.atomic import write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines) + "\n")
    record_command(out.parent, block, argv, [out])


def git_commit() -> str:
    """The commit of the checkout pdediff is imported from, with ``(uncommitted changes)`` when
    tracked files outside ``benchmarks/results`` differ from it; ``unknown`` without git."""
    import pdediff

    root = Path(pdediff.__file__).resolve().parent
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                                  check=True).stdout.strip()

        sha = git("rev-parse", "HEAD")
        top = git("rev-parse", "--show-toplevel")
        dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], capture_output=True, text=True, timeout=20,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout, or no git)"
    return sha + (" (uncommitted changes)" if dirty else "")


def _entries(text: str) -> list[dict]:
    """The entries of a ``COMMAND`` file: ``{"lines": [...], "files": [...]}`` each."""
    out = []
    for chunk in text.split("\n\n"):
        lines = [line for line in chunk.splitlines() if line.strip()]
        files = [line for line in lines if line.startswith("# files: ")]
        if files:
            try:
                names = json.loads(files[0][len("# files: "):])
            except ValueError:
                names = files[0][len("# files: "):].split()
            out.append({"lines": lines, "files": list(names)})
    return out


def _render(entry: dict) -> str:
    return "\n".join(f"# files: {json.dumps(entry['files'])}" if line.startswith("# files: ") else line
                     for line in entry["lines"])


def record_command(folder, block: str, argv, files) -> Path:
    """Record in ``folder/COMMAND``, atomically, the run of block ``block`` (module
    ``benchmarks.<block>``) with options ``argv`` (``None``: ``sys.argv[1:]``) that has just written
    ``files`` (names in ``folder``): the command to run it again, the exact argv, the process's
    own argv, the date (UTC) and the pdediff commit (:func:`git_commit`).

    Earlier entries stay for the files this run did not write (a folder may hold several runs'
    results, e.g. ``problems/darcy.md`` and ``problems/helmholtz.md``); an entry left with no file
    is dropped. Runs of one block into one folder at the same time may lose an entry."""
    from pdediff.data.atomic import write_text

    folder = Path(folder)
    argv = list(sys.argv[1:] if argv is None else argv)
    files = [Path(f).name for f in files]
    path = folder / COMMAND
    old = _entries(path.read_text(encoding="utf-8")) if path.is_file() else []
    kept = []
    for entry in old:
        entry["files"] = [f for f in entry["files"] if f not in files]
        if entry["files"]:
            kept.append(entry)
    new = {"files": files, "lines": [
        shlex.join(["python", "-m", f"benchmarks.{block}", *argv]),
        "# files: ",
        f"# argv: {json.dumps(argv)}",
        f"# process: {json.dumps(sys.argv)}",
        f"# date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"# commit: {git_commit()}",
    ]}
    folder.mkdir(parents=True, exist_ok=True)
    return write_text(path, _HEADER + "\n" + "\n\n".join(_render(e) for e in kept + [new]) + "\n")
