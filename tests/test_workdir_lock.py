"""One run per workdir: a second run stops at once with one sentence naming the holder."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gammaface import config
from gammaface.commands import pipeline
from gammaface.storage import lock as workdir_lock
from gammaface.common.errors import UserError
from gammaface.storage.store import Store

REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\n"
        "from gammaface.storage import lock as workdir_lock\n"
        "from gammaface.storage.store import Store\n"
        "with workdir_lock.hold(Store(sys.argv[1]), 'gammaface run train_ddpm'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n")


@pytest.fixture
def held(tmp_path):
    """A workdir whose lock another process holds."""
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    yield work, proc
    proc.kill()
    proc.wait()


def test_a_second_run_on_a_locked_workdir_names_the_holder(held, ray_local):
    work, proc = held
    cfg = config.load(REPO / "jobs" / "smoke.yaml", {"workdir": str(work)})
    with pytest.raises(UserError) as err:
        pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    msg = str(err.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in msg
    assert "gammaface run train_ddpm" in msg and "\n" not in msg
    assert not (work / "data").exists()  # it touched nothing

    # from the command line: the same sentence and a non-zero exit
    cli = subprocess.run([sys.executable, "-m", "gammaface", "run", str(REPO / "jobs" / "smoke.yaml"),
                          "--workdir", str(work), "--stages", "prepare"],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode != 0
    assert f"pid {proc.pid}" in cli.stderr and "Traceback" not in cli.stderr

    # the kernel frees the lock of a process that dies, so a killed run leaves nothing stale
    proc.kill()
    proc.wait()
    assert [r.stage for r in pipeline.run(cfg, ["prepare"], echo=lambda s: None)] == ["prepare"]


def test_the_lock_is_held_only_for_the_block(tmp_path):
    work = Store(str(tmp_path / "w"))
    with workdir_lock.hold(work, "first"):
        with pytest.raises(UserError, match="is in use by pid"):
            with workdir_lock.hold(work, "second"):
                pass
        assert workdir_lock.holder(work)["what"] == "first"
    with workdir_lock.hold(work, "third"):
        assert workdir_lock.holder(work)["what"] == "third"
