"""Actors and trainer workers never ask for more than one node holds."""

from gammaface.distributed.runtime import actor_resources
from gammaface.distributed.train import node_cpus
from gammaface.distributed.train import cpus_per_worker


def test_node_cpus_are_the_local_heads(ray_local):
    assert node_cpus() == [2.0]  # the session's local Ray, started with 2 CPUs


def test_threads_and_cpus_per_actor_fit_on_one_node():
    # three 4-CPU nodes: one actor shares out 12 CPUs but runs on one node of 4
    assert actor_resources(1, 0, nodes=[4, 4, 4]) == (1.0, 4)
    assert actor_resources(6, 0, nodes=[4, 4, 4]) == (1.0, 2)
    # a single 2-CPU machine keeps one CPU free for Ray Data's read tasks
    cpus, threads = actor_resources(2, 0, nodes=[2])
    assert cpus == 0.5 and threads == 1
    assert actor_resources(2, 1, nodes=[8, 8]) == (1.0, 8)


def test_a_trainer_worker_gets_the_same_share_while_other_work_holds_cpus(ray_local):
    """Each worker's share (its torch threads, which decide the floating-point sums) is of the
    cluster's CPUs, so the same config trains the same weights whatever was running before."""
    import ray

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    free = cpus_per_worker(None, False, 1)
    holder = Holder.remote()
    try:
        ray.get(holder.ready.remote())
        assert ray.available_resources().get("CPU", 0) <= 1
        assert cpus_per_worker(None, False, 1) == free == 2
    finally:
        ray.kill(holder)


def test_trainer_workers_never_ask_for_more_cpus_than_the_largest_node():
    # 2 workers on three 4-CPU nodes: 6 each by the cluster's total, but no node has 6
    assert cpus_per_worker(None, False, 2, nodes=[4, 4, 4], total=12) == 4
    assert cpus_per_worker(None, False, 4, nodes=[4, 4, 4], total=12) == 3
    assert cpus_per_worker(None, False, 4, nodes=[2], total=1) == 1
    assert cpus_per_worker(None, True, 4, nodes=[32], total=32) == 1
    assert cpus_per_worker(6, False, 2, nodes=[4], total=4) == 6  # a configured value is kept
