"""The README's Python example runs as written and prints what its comments say."""

import re

import numpy as np

from pdediff.cases import CASES
from pdediff.problems import DEFAULT_PROBLEM

NUMBER = r"(\d(?:\.\d+)?e-?\d+)"


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
    text = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    block = blocks[0]
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
