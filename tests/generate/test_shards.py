import numpy as np

from gammaface.generate import shards
from gammaface.generate.plan import make_plan


def _images(n, value=0):
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)


def test_a_written_shard_is_complete_and_listed_in_the_manifest(tmp_path):
    plan = make_plan("gmm", 0, np.array([3, 2]), [0, 1], shard_size=2, seed=1)
    for s in plan:
        shards.write(tmp_path, s, _images(s.count, s.shard), "h1")
    assert shards.sweep(tmp_path, plan, "h1") == []
    df = shards.manifest_rows(tmp_path, plan)
    assert list(df["path"]) == ["shard-00000/00000.png", "shard-00000/00001.png",
                                "shard-00001/00000.png", "shard-00002/00000.png",
                                "shard-00002/00001.png"]
    assert list(df["component"]) == [0, 0, 0, 1, 1]
    assert df["seed"].is_unique
    assert not any(p.name.startswith(shards.TMP_PREFIX) for p in tmp_path.iterdir())


def test_partial_corrupt_stale_and_temporary_folders_are_redone_never_counted(tmp_path):
    plan = make_plan("gmm", 0, np.array([10]), [0], shard_size=2, seed=1)
    for s in plan:
        shards.write(tmp_path, s, _images(s.count), "h1")
    (tmp_path / "shard-00000" / "00001.png").unlink()  # a file missing
    with open(tmp_path / "shard-00001" / "00000.png", "ab") as f:  # a file of another size
        f.write(b"x")
    (tmp_path / "shard-00002" / shards.SHARD_FILE).write_text("{not json")
    png = tmp_path / "shard-00003" / "00001.png"
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged in place, its size unchanged
    png.write_bytes(bytes(data))
    (tmp_path / f"{shards.TMP_PREFIX}shard-00004-abcd").mkdir()  # a crash mid-write
    stale = make_plan("gmm", 0, np.array([12]), [0], shard_size=2, seed=1)[5]
    shards.write(tmp_path, stale, _images(2), "h1")  # from a bigger earlier plan
    pending = shards.sweep(tmp_path, plan, "h1")
    assert [s.shard for s in pending] == [0, 1, 2, 3]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["shard-00004"]


def test_a_shard_written_for_another_config_is_redone(tmp_path):
    plan = make_plan("gmm", 0, np.array([2]), [0], shard_size=2, seed=1)
    shards.write(tmp_path, plan[0], _images(2), "old-hash")
    assert shards.sweep(tmp_path, plan, "new-hash") == plan
    assert not (tmp_path / plan[0].name).exists()
