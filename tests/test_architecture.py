"""The package's layering, as executable rules: import-linter's contracts in pyproject.toml, and
what a contract cannot say (who may import the pipeline, one public entry per stage)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from gammaface import config
from gammaface.common.errors import UserError

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
    seeds = copy / "gammaface" / "common" / "seeds.py"
    seeds.write_text(seeds.read_text() + "\n\ndef _late():\n    from gammaface.commands import pipeline\n")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "gammaface.common.seeds -> gammaface.commands.pipeline" in done.stdout


def test_only_the_entry_points_sit_loose_in_the_package():
    """Every other module belongs to a package of its layer (pyproject.toml's contracts)."""
    loose = sorted(p.name for p in (REPO / "gammaface").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py", "sampling.py"]


def test_only_the_cli_imports_the_pipeline():
    graph = grimp.build_graph("gammaface", cache_dir=None)
    importers = {m for m in graph.find_modules_that_directly_import("gammaface.commands.pipeline")}
    assert importers == {"gammaface.cli"}


@pytest.mark.parametrize("path", sorted(STAGES.glob("*/work.py")), ids=lambda p: p.parent.name)
def test_every_stages_work_is_one_module_with_one_public_run(path):
    # run(ctx), and where the stage reads inputs from outside the workdir, check(cfg): the
    # pipeline calls it before any stage is marked incomplete
    tree = ast.parse(path.read_text())
    public = [n.name for n in tree.body
              if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    assert public in (["run"], ["check", "run"]), f"{path} exposes {public}"
    args = {n.name: [a.arg for a in n.args.args] for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name in public}
    assert args == {"run": ["ctx"], **({"check": ["cfg"]} if "check" in public else {})}


@pytest.mark.parametrize("path", sorted(STAGES.glob("*/work.py")), ids=lambda p: p.parent.name)
def test_every_stages_run_is_at_most_sixty_lines(path):
    """A stage's run reads, calls libraries, writes and logs; longer work belongs below it
    (or in a named step of its own)."""
    run = next(n for n in ast.parse(path.read_text()).body
               if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= 60, f"{path}: run is {run.end_lineno - run.lineno + 1} lines"


def test_the_pipeline_runs_the_stages_the_stages_folder_declares():
    from gammaface import stages
    from gammaface.commands import pipeline

    packages = {p.parent.name for p in STAGES.glob("*/__init__.py")}
    assert packages == set(stages.ORDER) == set(pipeline.STAGE_NAMES)
    assert pipeline.STAGE_NAMES == stages.ORDER
    for s in pipeline.STAGES:
        assert (STAGES / s.name / "work.py").is_file()
        # a stage comes after every stage it can need
        for cfg in (config.from_dict({}), config.from_dict({"gmm": {"space": "features"},
                                                             "generate": {"draw": "resample"}})):
            assert all(stages.ORDER.index(n) < stages.ORDER.index(s.name) for n in s.needs(cfg))
    folders = stages.folders(config.from_dict({}))
    assert len(set(folders.values())) == len(folders)  # no two stages share a folder


def test_the_declarations_load_without_the_work():
    """What the pipeline reads of every stage (and the command line, to check a config) costs
    no torch, Ray, diffusers or MLflow import."""
    code = ("import sys; from gammaface import stages; stages.declared(); "
            "print(sorted(m for m in ('torch', 'ray', 'diffusers', 'mlflow', 'sklearn') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_ray_resources_may_name_only_a_stage_that_places_work(tmp_path):
    from gammaface import stages

    assert stages.placed() == tuple(s.name for s in stages.declared() if s.placed)
    cfg = config.from_dict({"ray": {"resources": {"audit": {"a100": 1}}}})
    with pytest.raises(UserError, match="key 'ray.resources.audit' names no stage with work to "
                                        "place; name one of train_ddpm, "):
        stages.check_placement(cfg)
    stages.check_placement(config.from_dict({"ray": {"resources": {"generate": {"a100": 1}}}}))
    # and the command line says so before anything runs
    job = tmp_path / "job.yaml"
    job.write_text(f"workdir: {tmp_path / 'work'}\nray:\n  resources:\n    report: {{x: 1}}\n")
    done = subprocess.run([sys.executable, "-m", "gammaface", "config", "show", str(job)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{job}: key 'ray.resources.report' names no stage" in done.stderr


# the libraries: they know what a key or a loop reads (a DDPM, a labeller, a mixture), never
# which stage makes it; the stages and the layers above them map one onto the other
LIBRARIES = ("data", "diffusion", "latents", "gmm", "classifiers", "generate", "downstream",
             "metrics", "report", "distributed", "storage", "common")


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
    from gammaface.commands.pipeline import STAGE_NAMES

    names = set(STAGE_NAMES)
    found = []
    for entry in LIBRARIES:
        root = REPO / "gammaface" / entry
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            found += _stage_names_in(path, names)
    assert found == []
    # and the check bites: a stage's name in a library is found
    assert _stage_names_in(REPO / "gammaface" / "run" / "stage.py", names)
