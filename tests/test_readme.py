"""The README's Python example runs as written and does what its comments say."""

import re

import numpy as np


def test_readme_example_runs(repo_root):
    text = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    phi, exact, polished = scope["phi"], scope["exact"], scope["phi_polished"]
    rel = np.linalg.norm(phi - exact) / np.linalg.norm(exact)
    assert rel < 1e-2  # the comment: 3.8e-3
    assert np.linalg.norm(polished - exact) / np.linalg.norm(exact) < 1e-5  # the comment: 1.1e-6
    assert scope["phi128"].shape == (2, 128, 128)
