"""Every code block of the README and of ``docs/*.md`` runs, and prints what it says it prints.

Conventions of the pages (a reader sees none of them but the comments):

- A ```python block runs in a fresh namespace with the working directory a scratch folder of its
  page (blocks of one page share it, in page order, so a block may read what an earlier block
  of the page wrote). What it prints is stated either by trailing comment lines, one per
  printed line (``# [-9.89 -9.63]``), or by a comment on each ``print(`` line naming the
  figures it prints (``print(err)  # 1.6e-4``). The printed words must be the stated ones and
  the numbers must agree to within one unit of their last stated digit or 5 % (float32 networks
  on other machines), see :func:`agrees`.
- A shell block (```console, ```bash, ```sh or a plain ```) has every ``python -m MODULE``,
  ``python SCRIPT.py``, ``torchrun ... SCRIPT.py`` and ``make TARGET`` line checked: the module
  or script exists and ``--help`` exits 0 (``make -n TARGET`` for make, and the modules its
  recipe runs). A block preceded by ``<!-- doctest: run -->`` is also run, line by line, in its
  page's scratch folder, and each line must exit 0.
- ``<!-- doctest: slow -->`` (or ``run, slow``) before a block marks its test slow.
- ```yaml blocks must agree with the dataset card they show; ```text blocks are output.

The README's first python block and the reconstruct block are checked figure by figure in
``tests/test_readme.py`` and are not run again here.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from test_readme import readme_tested_blocks

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = ("console", "bash", "sh", "shell", "")
KNOWN_LANGS = ("python", "yaml", "text") + SHELL_LANGS
MARKERS = {"run", "slow", "run, slow"}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    index: int  # position among the page's code blocks
    lang: str
    code: str
    marker: str  # "" or one of MARKERS

    @property
    def id(self) -> str:
        return f"{self.page}:{self.index}:{self.lang or 'plain'}"


def pages() -> list[Path]:
    return [REPO_ROOT / "README.md"] + sorted((REPO_ROOT / "docs").glob("*.md"))


FENCE = re.compile(r"^(?:<!-- doctest: (?P<marker>[^>]*?) -->\n)?```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$", re.M | re.S)


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    page = str(path.relative_to(REPO_ROOT))
    return [Block(page, k, m["lang"], m["code"], (m["marker"] or "").strip()) for k, m in enumerate(FENCE.finditer(text))]


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks_of(p)]


# ---------------------------------------------------------------------------------------------
# Stated figures


TOKEN = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[A-Za-z_]+", re.I)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?$", re.I)


def agrees(value: float, stated: str, rtol: float = 0.05) -> bool:
    """``value`` agrees with the figure ``stated`` (as written on the page): within one unit of
    its last digit (its own rounding) or within ``rtol`` of it. Integers must be equal."""
    if re.fullmatch(r"-?\d+", stated):
        return value == int(stated)
    mantissa, _, exponent = stated.lower().partition("e")
    unit = 10.0 ** ((int(exponent) if exponent else 0) - len(mantissa.partition(".")[2]))
    return abs(value - float(stated)) <= max(unit, rtol * abs(float(stated)))


def tokens(line: str) -> list[str]:
    return TOKEN.findall(line)


def compare(printed: str, stated: str, numbers_only: bool) -> str | None:
    """Why the printed line does not say what the stated one says (None if it does): its tokens
    against the stated line's first as many tokens (the stated line may go on in prose)."""
    got = tokens(printed)
    want = tokens(stated)
    if numbers_only:
        got, want = [t for t in got if NUMBER.match(t)], [t for t in want if NUMBER.match(t)]
    if len(want) < len(got):
        return f"printed {printed!r} has more figures than stated {stated!r}"
    for g, w in zip(got, want):
        if NUMBER.match(w) and NUMBER.match(g):
            if not agrees(float(g), w):
                return f"printed {g} where the page states {w} ({printed!r} against {stated!r})"
        elif g != w:
            return f"printed {g!r} where the page states {w!r} ({printed!r} against {stated!r})"
    return None


def stated_output(code: str) -> tuple[list[str], bool]:
    """The lines a block says it prints, and whether only their numbers count: trailing comment
    lines, or else the comments of its ``print(`` lines that state figures."""
    lines = code.rstrip("\n").split("\n")
    trailing = []
    while lines and lines[-1].startswith("# "):
        trailing.insert(0, lines.pop()[2:])
    if trailing:
        return trailing, False
    inline = [line.split("#", 1)[1] for line in lines if line.lstrip().startswith("print(") and "#" in line]
    return [c for c in inline if re.search(r"\d", c)], True


def check_output(printed: str, code: str) -> None:
    stated, numbers_only = stated_output(code)
    if not stated:
        return
    out = [line for line in printed.strip("\n").split("\n") if line.strip()]
    assert len(out) == len(stated), f"printed {len(out)} lines, the page states {len(stated)}: {out} / {stated}"
    for p, s in zip(out, stated):
        problem = compare(p, s, numbers_only)
        assert problem is None, problem


def test_the_checker_can_fail():
    assert agrees(0.0001589, "1.6e-4") and agrees(-9.42, "-9.4") and agrees(3, "3")
    assert not agrees(0.0002, "1.6e-4") and not agrees(4, "3") and not agrees(-8.9, "-9.42")
    assert compare("diffusion 0.45% 14.4% 0.91", "diffusion 0.45% 14.4% 0.91  prose 16", False) is None
    assert compare("gaussian 0.45%", "diffusion 0.45%", False)
    assert compare("[0.61 2.72]", "[0.61 2.9]", False)
    assert compare("phi off by 0.5%, std 0.0054", " 0.5 %, 0.0054", True) is None
    assert compare("phi off by 0.9%, std 0.0054", " 0.5 %, 0.0054", True)
    with pytest.raises(AssertionError):
        check_output("1\n2\n", "print(1)\nprint(2)\n# 1\n")
    with pytest.raises(AssertionError):
        check_output("x 1\n", "print('x', 1)\n# x 2\n")


# ---------------------------------------------------------------------------------------------
# Scratch folders, one per page


_SCRATCH: dict[str, Path] = {}
_RAN: set[str] = set()


@pytest.fixture
def scratch(tmp_path_factory):
    def folder(page: str) -> Path:
        if page not in _SCRATCH:
            path = tmp_path_factory.mktemp(Path(page).stem)
            (path / "configs").symlink_to(REPO_ROOT / "configs")  # configs read by path, as from the repository root
            _SCRATCH[page] = path
        return _SCRATCH[page]

    return folder


def command_lines(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, prompts and comments dropped,
    ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.split("\n"):
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        words = shlex.split(line, comments=True)
        if not words:
            continue
        for part in " ".join(shlex.quote(w) if w != "&&" else w for w in words).split(" && "):
            out.append(part)
    return out


PYTHON = re.compile(r"^python(?:3(?:\.\d+)?)?$")


def target_of(command: str) -> tuple[str, str] | None:
    """What a command line runs that the docs vouch for: ("module", NAME), ("script", PATH),
    ("make", TARGET), or None (cp, pip, ...)."""
    words = shlex.split(command)
    if PYTHON.match(words[0]):
        if len(words) > 2 and words[1] == "-m":
            if words[2] == "benchmarks" and len(words) > 3 and re.fullmatch(r"[a-z_0-9]+", words[3]):
                return ("module", f"benchmarks {words[3]}")  # a block of python -m benchmarks: its own --help
            return ("module", words[2])
        if len(words) > 1 and words[1].endswith(".py"):
            return ("script", words[1])
    if words[0] == "torchrun":
        script = next(w for w in words if w.endswith(".py"))
        return ("script", script)
    if words[0] == "make":
        return ("make", words[1] if len(words) > 1 else "")
    return None


def run_shell_block(block: Block, folder: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    for command in command_lines(block.code):
        words = shlex.split(command)
        if PYTHON.match(words[0]):
            words[0] = sys.executable
            if words[1].endswith(".py"):
                words[1] = str(REPO_ROOT / words[1])
        done = subprocess.run(words, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.id}: {command!r} exited {done.returncode}:\n{done.stderr[-3000:]}"


def run_python_block(block: Block, folder: Path) -> str:
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            exec(compile(block.code, block.id, "exec"), {"__name__": "__doc_block__"})
    finally:
        os.chdir(cwd)
    return out.getvalue()


def prepare(block: Block, folder: Path) -> None:
    """Run the shell blocks marked ``run`` that come before ``block`` on its page (once)."""
    for earlier in blocks_of(REPO_ROOT / block.page)[: block.index]:
        if earlier.lang in SHELL_LANGS and "run" in earlier.marker and earlier.id not in _RAN:
            run_shell_block(earlier, folder)
            _RAN.add(earlier.id)


def _param(block: Block):
    marks = [pytest.mark.slow] if "slow" in block.marker else []
    return pytest.param(block, id=block.id, marks=marks)


PYTHON_BLOCKS = [b for b in all_blocks() if b.lang == "python" and b.code not in readme_tested_blocks(REPO_ROOT)]
SHELL_BLOCKS = [b for b in all_blocks() if b.lang in SHELL_LANGS]


@pytest.mark.parametrize("block", [_param(b) for b in PYTHON_BLOCKS])
def test_python_block_runs_and_prints_what_it_says(block, scratch):
    folder = scratch(block.page)
    prepare(block, folder)
    printed = run_python_block(block, folder)
    check_output(printed, block.code)


@pytest.mark.parametrize("block", [_param(b) for b in SHELL_BLOCKS if "run" in b.marker])
def test_shell_block_runs(block, scratch):
    folder = scratch(block.page)
    prepare(block, folder)
    if block.id not in _RAN:
        run_shell_block(block, folder)
        _RAN.add(block.id)


# ---------------------------------------------------------------------------------------------
# Every command the docs name exists and answers --help


HELP_RUNNER = textwrap.dedent(
    """
    import io, json, runpy, sys, contextlib
    results = {}
    for kind, target in json.loads(sys.argv[1]):
        name, *extra = target.split(" ")
        sys.argv = [name, *extra, "--help"]
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                if kind == "module":
                    runpy.run_module(name, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(name, run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException as error:
            code, out = 1, io.StringIO(repr(error))
        results[kind + ":" + target] = [code, out.getvalue()[:2000]]
    print(json.dumps(results))
    """
)


def named_targets() -> dict[tuple[str, str], list[str]]:
    """Each module, script and make target the shell blocks run -> the blocks that run it."""
    found: dict[tuple[str, str], list[str]] = {}
    for block in SHELL_BLOCKS:
        for command in command_lines(block.code):
            target = target_of(command)
            if target:
                found.setdefault(target, []).append(block.id)
    return found


def make_recipe_modules(target: str) -> tuple[int, list[str]]:
    done = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    return done.returncode, re.findall(r"python -m ([\w.]+)", done.stdout)


@pytest.fixture(scope="module")
def helps():
    """``--help`` of every module and script the docs name (and the modules of their make
    targets), in one interpreter: {"module:NAME" or "script:PATH": [exit code, output]}."""
    import json

    wanted = set()
    for kind, name in named_targets():
        if kind == "make":
            wanted.update(("module", m) for m in make_recipe_modules(name)[1] if m != "pip")
        else:
            wanted.add((kind, name if kind == "module" else str(REPO_ROOT / name)))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", HELP_RUNNER, json.dumps(sorted(wanted))], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().split("\n")[-1])


@pytest.mark.parametrize("target", sorted(named_targets()), ids=lambda t: f"{t[0]}:{t[1]}")
def test_named_command_exists_and_answers_help(target, helps):
    kind, name = target
    if kind == "make":
        code, modules = make_recipe_modules(name)
        assert code == 0, f"make has no target {name!r}"
        for module in modules:
            if module != "pip":
                assert helps[f"module:{module}"][0] == 0, (module, helps[f"module:{module}"][1])
        return
    if kind == "script":
        assert (REPO_ROOT / name).is_file(), f"{name} does not exist"
        key = f"script:{REPO_ROOT / name}"
    else:
        key = f"module:{name}"
    code, output = helps[key]
    assert code == 0, f"{name} --help exited {code}: {output}"
    assert "usage" in output.lower(), output


def test_every_shell_command_is_checked():
    """A python, make or torchrun line that the parser does not recognise would go unchecked."""
    for block in SHELL_BLOCKS:
        for command in command_lines(block.code):
            first = shlex.split(command)[0]
            if PYTHON.match(first) or first in ("make", "torchrun"):
                assert target_of(command), (block.id, command)


# ---------------------------------------------------------------------------------------------
# The rest of the pages


def test_every_block_is_tested():
    """Each block is a language these tests know, each marker sits on a block and is known, and
    every python block is run here or by tests/test_readme.py."""
    tested = readme_tested_blocks(REPO_ROOT)
    assert len(tested) == 2, "tests/test_readme.py no longer finds its two blocks"
    for path in pages():
        text = path.read_text()
        for marker in re.findall(r"<!-- doctest: ([^>]*?) -->", text):
            assert marker.strip() in MARKERS, (path.name, marker)
        assert text.count("<!-- doctest:") == sum(1 for b in blocks_of(path) if b.marker), f"{path.name}: a marker not on a block"
        assert text.count("```") == 2 * len(blocks_of(path)), f"{path.name}: a code fence the parser does not see"
        for block in blocks_of(path):
            assert block.lang in KNOWN_LANGS, block.id
            if block.lang == "python":
                assert block in PYTHON_BLOCKS or block.code in tested, block.id


def test_yaml_blocks_say_what_the_shipped_card_says():
    card = yaml.safe_load((REPO_ROOT / "datasets/cards/pdebench-darcy.yaml").read_text())
    shown = [b for b in all_blocks() if b.lang == "yaml"]
    assert shown
    for block in shown:
        data = yaml.safe_load(block.code)
        assert data == {k: card[k] for k in data}, block.id


PATH = re.compile(r"(?<![\w/.])((?:benchmarks/results|configs|pdediff/models|datasets/cards|docs|tests)/[\w.*/<>-]*[\w*/])")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def mentioned_paths() -> list[tuple[str, str]]:
    out = []
    for path in pages():
        text = path.read_text()
        for m in PATH.finditer(text):
            out.append((path.name, m.group(1)))
        for m in LINK.finditer(text):
            target = m.group(1).split("#")[0]
            if target and not re.match(r"\w+:", target):
                out.append((path.name, str((path.parent / target).resolve().relative_to(REPO_ROOT))))
    return out


def test_files_the_docs_name_exist():
    """Every file or folder of the repository that a page names by path or links to exists
    (placeholders in capitals, NAME or BLOCK, and run outputs under runs/ are not files)."""
    missing = []
    for page, name in mentioned_paths():
        if re.search(r"[A-Z]{4,}|<", name):
            continue
        if not glob.glob(str(REPO_ROOT / name)):
            missing.append(f"{page}: {name}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_readme_is_a_short_guide():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    order = ["make demo", "make test", "pip install -c constraints.txt -e '.[dev]'", "![",
             "python -m benchmarks --list", "pdebench-darcy.yaml", "| `darcy-joint` |", "docs/architecture.md"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions), list(zip(order, positions))
    for name in __import__("pdediff.models", fromlist=["MODELS"]).MODELS:
        assert f"(pdediff/models/{name}.md)" in text, name
