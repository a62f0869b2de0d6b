"""What every training loop shares: the training rows reach each worker through Ray Data, in the
driver's order and split by rank, and images are read a batch ahead."""

import json
import threading
import time
from pathlib import Path

import pandas as pd

from gammaface.distributed import train as ray_train


def test_read_ahead_yields_every_step_in_order_and_reads_the_next_while_this_one_is_used():
    started: list[int] = []

    def load(step):
        started.append(step)
        return step * 10, threading.get_ident()

    out = []
    for value, thread in ray_train.read_ahead(load, range(3, 7)):
        out.append(value)
        # while the caller trains on this batch, the next one is read (and no further one)
        following = min(value // 10 + 1, 6)
        deadline = time.monotonic() + 10
        while started[-1] != following and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started == list(range(3, following + 1))
        assert thread != threading.get_ident()
    assert out == [30, 40, 50, 60]
    assert list(ray_train.read_ahead(load, [])) == []


def _share_loop(cfg):
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    share = ray_train.worker_rows(rank, world)
    Path(cfg["out"], f"{rank}.json").write_text(json.dumps(share.drop(columns=ray_train.ROW)
                                                           .to_dict(orient="list")))


def test_each_worker_reads_its_share_of_the_table_in_the_drivers_order(tmp_path, ray_local):
    # rows in an order no sort of the paths or labels would give back
    table = pd.DataFrame({"path": [f"img/{i:03d}.png" for i in (7, 2, 9, 4, 0, 5, 3)],
                          "label/age": [1, 0, 1, 1, 0, 0, 1]}).set_index(pd.Index(range(50, 57)))
    ray_train.fit(_share_loop, {"out": str(tmp_path)}, num_workers=2, use_gpu=False,
                  cpus_per_worker=1, storage_path=str(tmp_path / "storage"), name="share",
                  max_failures=0, what="share", checkpointed=False, table=table)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        want = table.iloc[rank::2]
        assert got == {"path": list(want["path"]), "label/age": list(want["label/age"])}
