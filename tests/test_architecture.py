"""The package's layers hold: no import runs upward, docs/architecture.md matches the code, and
no module grows past its size without a reason."""

import ast

from pdediff.tools import architecture


def test_no_lower_layer_imports_a_higher_one():
    assert architecture.upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a maths module that imports the solver is reported."""
    fake = tmp_path / "pdediff"
    (fake / "maths").mkdir(parents=True)
    (fake / "solver").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "maths" / "__init__.py").write_text("")
    (fake / "solver" / "__init__.py").write_text("from pdediff.maths import x\n")
    (fake / "maths" / "x.py").write_text("def f():\n    from pdediff.solver import Solver\n")
    monkeypatch.setattr(architecture, "PACKAGE", fake)
    assert architecture.upward_imports() == ["pdediff.maths.x -> pdediff.solver"]


def test_every_module_is_in_a_layer():
    outside = [m for m in architecture.modules() if m != "pdediff" and architecture.layer_of(m) not in architecture.LAYERS]
    assert outside == [], f"modules outside the layers {list(architecture.LAYERS)}: {outside}"


def test_the_architecture_document_matches_the_code():
    text = architecture.DOCUMENT.read_text()
    part = architecture.generated_part(text)
    assert part is not None, "docs/architecture.md lost its generated part"
    assert part == architecture.report(), "docs/architecture.md is stale: run python -m pdediff.tools.architecture --write"


def test_module_sizes():
    long = {}
    for name, path in architecture.modules().items():
        rel = path.relative_to(architecture.PACKAGE).as_posix()
        n = len(path.read_text().splitlines())
        if n > architecture.SHORT_MAX:
            long[rel] = n
    assert set(long) <= set(architecture.LONG), f"past {architecture.SHORT_MAX} lines without a reason: {long}"
    assert all(n <= architecture.LONG_MAX for n in long.values()), long


def test_every_public_name_of_the_solver_package_is_a_stage_or_the_facade():
    """Solver's methods are the stage functions themselves (one place for each)."""
    from pdediff.solver import Solver, energy, likelihood, reconstruct, solve

    assert Solver.solve is solve.solve and Solver.reconstruct is reconstruct.reconstruct
    assert Solver.log_likelihood is likelihood.log_likelihood and Solver.energy is energy.energy
    source = ast.parse((architecture.PACKAGE / "solver" / "__init__.py").read_text())
    assert len(source.body) < 20, "pdediff/solver/__init__.py should stay a thin facade"


def test_the_old_flat_names_import_the_same_modules():
    """Earlier versions' ``pdediff.samplers`` etc. are the modules at their new places; the
    public short names import silently, the others with a DeprecationWarning naming the place."""
    import importlib
    import sys
    import warnings

    import pdediff

    for old, new in pdediff.MOVED.items():
        sys.modules.pop(f"pdediff.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"pdediff.{old}")
        assert module is importlib.import_module(f"pdediff.{new}"), old
        moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and f"pdediff.{new}" in str(w.message)]
        assert bool(moved) == (old not in pdediff.PUBLIC), (old, [str(w.message) for w in caught])
    from pdediff.physics.problems.poisson import Poisson
    from pdediff.problems.poisson import Poisson as Same

    assert Same is Poisson
