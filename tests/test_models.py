"""The shipped models' cards: ``load_solver(NAME).card`` is ``pdediff/models/NAME.md``, its
front matter agrees with the checkpoint, and the metrics log of its training run lies beside it."""

import json

import pytest

import pdediff
from pdediff.models import FOLDER, MODELS, ModelCard, split_front_matter


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_shipped_model_has_a_card_that_load_solver_returns(name, repo_root):
    path = FOLDER / f"{name}.md"
    assert path.is_file(), f"the shipped model {name!r} has no model card {path}"
    solver = pdediff.load_solver(name)
    card = solver.card
    assert isinstance(card, ModelCard) and str(card) == path.read_text() and card._repr_markdown_() == card.text
    # indexed, it is still the training dataset's card
    assert card["problem"] == solver.problem.name == solver.dataset_card["problem"]
    meta, body = split_front_matter(path.read_text())
    assert card.metadata == meta and body.strip()
    assert meta.get("model") == name and meta.get("problem") == solver.problem.name, meta
    assert meta.get("checkpoint") in (MODELS[name], f"pdediff/models/{MODELS[name]}"), meta
    config = meta.get("config")
    assert config and (repo_root / config).is_file(), f"{name}: config {config!r} is not in the repository"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_metrics_log_of_each_model_lies_beside_it(name):
    log = FOLDER / f"{name}.metrics.jsonl"
    assert log.is_file(), f"{name}: no training log {log}"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records and all(isinstance(r, dict) for r in records)
    assert max(r.get("step", 0) for r in records) > 0


def test_a_checkpoint_that_is_not_shipped_gets_a_card_from_its_config(tmp_path):
    solver = pdediff.load_solver(FOLDER / MODELS["poisson"])  # by path: not known as shipped
    card = solver.card
    assert "no model card" in str(card) and card["problem"] == "poisson"
    assert card.metadata["network"] == solver.config.model.network


def test_front_matter():
    assert split_front_matter("---\nmodel: x\n---\n# T\n") == ({"model": "x"}, "# T\n")
    assert split_front_matter("# no front matter\n") == ({}, "# no front matter\n")
    with pytest.raises(ValueError, match="front matter is list"):
        split_front_matter("---\n- a\n---\nbody\n")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_cards_python_blocks_run(name, tmp_path, monkeypatch):
    """Each card's example runs as written (in a scratch folder), and what it asserts holds."""
    import re
    import warnings

    blocks = re.findall(r"^```python\n(.*?)^```$", (FOLDER / f"{name}.md").read_text(), flags=re.S | re.M)
    assert blocks, f"the card of {name!r} has no python example"
    monkeypatch.chdir(tmp_path)
    for k, block in enumerate(blocks):
        with warnings.catch_warnings():
            warnings.simplefilter("error", pdediff.AccuracyWarning)  # the examples are on the model's own law
            exec(compile(block, f"pdediff/models/{name}.md:{k}", "exec"), {})
