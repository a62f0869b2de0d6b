"""The package's layering, as executable rules: import-linter's contracts in pyproject.toml, and
what a contract cannot say (who may import the pipeline, one public entry per stage)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = REPO / "gammaface" / "stages"


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_broken_layer_is_caught(tmp_path):
    """The contracts bite: a library that imports the pipeline breaks them."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "gammaface", copy / "gammaface",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    seeds = copy / "gammaface" / "seeds.py"
    seeds.write_text(seeds.read_text() + "\n\ndef _late():\n    from gammaface import pipeline\n")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "gammaface.seeds -> gammaface.pipeline" in done.stdout


def test_only_the_cli_imports_the_pipeline():
    graph = grimp.build_graph("gammaface", cache_dir=None)
    importers = {m for m in graph.find_modules_that_directly_import("gammaface.pipeline")}
    assert importers == {"gammaface.cli"}


@pytest.mark.parametrize("path", sorted(p for p in STAGES.glob("*.py") if p.name != "__init__.py"),
                         ids=lambda p: p.stem)
def test_every_stage_is_one_module_with_one_public_run(path):
    # run(ctx), and where the stage reads inputs from outside the workdir, check(cfg): the
    # pipeline calls it before any stage is marked incomplete
    tree = ast.parse(path.read_text())
    public = [n.name for n in tree.body
              if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    assert public in (["run"], ["check", "run"]), f"{path.name} exposes {public}"
    args = {n.name: [a.arg for a in n.args.args] for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name in public}
    assert args == {"run": ["ctx"], **({"check": ["cfg"]} if "check" in public else {})}


def test_every_pipeline_stage_lives_in_the_stages_folder():
    from gammaface import pipeline

    modules = {s.name: s.module for s in pipeline.STAGES}
    assert modules == {name: f"gammaface.stages.{name}" for name in modules}
    assert {p.stem for p in STAGES.glob("*.py")} - {"__init__"} == set(modules)


# the libraries: they know what a key or a loop reads (a DDPM, a labeller, a mixture), never
# which stage makes it; the stages and the layers above them map one onto the other
LIBRARIES = ("data", "diffusion", "latents", "gmm", "classifiers", "generate", "downstream",
             "metrics", "images.py", "figures.py", "tables.py", "seeds.py", "ray_train.py",
             "ray_tasks.py", "ray_runtime.py", "storage.py", "errors.py", "progress.py")


def _stage_names_in(path: Path, names: set[str]) -> list[str]:
    """`file:line name` for every string constant that is a stage's name (docstrings aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path.relative_to(REPO)}:{node.lineno} {node.value}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]


def test_no_library_names_a_stage():
    from gammaface.pipeline import STAGE_NAMES

    names = set(STAGE_NAMES)
    found = []
    for entry in LIBRARIES:
        root = REPO / "gammaface" / entry
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            found += _stage_names_in(path, names)
    assert found == []
    # and the check bites: a stage's name in a library is found
    assert _stage_names_in(REPO / "gammaface" / "stage.py", names)
