"""The README's Python example, and the reconstruct example of docs/observations.md, run as
written and print what their comments say (every other block: tests/test_docs.py)."""

import re
from pathlib import Path

import numpy as np

from pdediff.data.cases import CASES
from pdediff.physics.problems import DEFAULT_PROBLEM

NUMBER = r"(\d(?:\.\d+)?e-?\d+)"
PYTHON_BLOCK = r"```python\n(.*?)```"


def _first_readme_block(repo_root: Path) -> str:
    blocks = re.findall(PYTHON_BLOCK, (repo_root / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks[0]


def _observation_block(repo_root: Path) -> str:
    """The first block that calls ``reconstruct(`` and states the diffusion/gaussian table, in
    the README or else in the docs pages (docs/observations.md)."""
    for page in [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]:
        for block in re.findall(PYTHON_BLOCK, page.read_text(), flags=re.S):
            if "reconstruct(" in block and re.search(r"^# (diffusion|gaussian) ", block, flags=re.M):
                return block
    raise AssertionError("neither the README nor docs/ has the reconstruct example")


def readme_tested_blocks(repo_root: Path) -> list[str]:
    """The blocks this module runs and checks (tests/test_docs.py runs every other one)."""
    return [_first_readme_block(repo_root), _observation_block(repo_root)]


def within_last_digit(value: float, stated: str) -> bool:
    """``value`` agrees with the README's ``stated`` figure (e.g. "3.3e-3") to within one unit of
    its last digit: the figure's own rounding plus float32 differences between machines."""
    mantissa, exponent = stated.lower().split("e")
    decimals = len(mantissa.partition(".")[2])
    return abs(value - float(stated)) <= 10.0 ** (int(exponent) - decimals)


def test_within_last_digit():
    assert within_last_digit(3.27e-3, "3.3e-3") and within_last_digit(3.39e-3, "3.3e-3")
    assert not within_last_digit(3.8e-3, "3.3e-3") and not within_last_digit(1.1e-6, "9.8e-7")


def test_readme_example_prints_what_it_says(repo_root, capsys):
    block = _first_readme_block(repo_root)
    claim = re.search(rf"print\(.*\)\s*#\s*{NUMBER} here; polished {NUMBER}", block)
    assert claim, "the README example's print line no longer states '# X here; polished Y'"
    stated, stated_polished = claim.groups()
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 1, printed
    phi, exact, polished = scope["phi"], scope["exact"], scope["phi_polished"]
    assert phi.shape == (8, 64, 64)  # the comment: (8, 64, 64)
    rel = np.linalg.norm(phi - exact) / np.linalg.norm(exact)
    assert float(printed[0]) == rel
    assert within_last_digit(rel, stated), (rel, stated)
    rel_polished = np.linalg.norm(polished - exact) / np.linalg.norm(exact)
    assert within_last_digit(rel_polished, stated_polished), (rel_polished, stated_polished)
    # the N = 64 U-Net on a 128 x 128 grid meets the shipped model's check on that case
    phi128 = scope["phi128"]
    assert phi128.shape == (2, 128, 128)
    exact128 = scope["solver"].problem.reference_solve(scope["rho128"], scope["g128"])
    bound = CASES[DEFAULT_PROBLEM]["finer grid"].check.max_rel_l2
    assert np.linalg.norm(phi128 - exact128) / np.linalg.norm(exact128) < bound


def test_readme_observation_example_prints_what_it_says(repo_root, capsys):
    """The observations page's block runs and prints the figures of its comments (the
    diffusion's within 10 %: float32 network on another machine; the Gaussian's exactly)."""
    block = _observation_block(repo_root)
    stated = re.findall(r"^# (diffusion|gaussian) ([\d.]+)% ([\d.]+)% ([\d.]+)", block, flags=re.M)
    assert [s[0] for s in stated] == ["diffusion", "gaussian"], stated
    exec(compile(block, "docs/observations.md", "exec"), {})
    printed = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert [p[0] for p in printed] == ["diffusion", "gaussian"]
    for (method, phi, rho, check), line in zip(stated, printed):
        got = [float(line[1].rstrip("%")), float(line[2].rstrip("%")), float(line[3])]
        tol = 0.1 if method == "diffusion" else 0.01
        for value, claim in zip(got, (phi, rho, check)):
            assert abs(value - float(claim)) <= tol * float(claim) + 0.01, (method, got, (phi, rho, check))
