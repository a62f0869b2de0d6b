"""One Ray task per job on a real local Ray: jobs that fail are retried alone, a worker that dies
counts as a failure too, and a job that keeps failing is named once the others are done."""

import pytest

from gammaface.common.errors import UserError
from gammaface.distributed.tasks import Slot, run_each


def _attempts(root, item):
    return (root / item).read_text().count("\n") if (root / item).exists() else 0


def test_a_failed_job_is_retried_alone_and_a_dead_worker_counts_as_a_failure(tmp_path, ray_local):
    root = tmp_path

    def job(item, shared):
        import os

        from gammaface.common.errors import UserError

        seen = (shared / item).read_text().count("\n") if (shared / item).exists() else 0
        with open(shared / item, "a") as f:
            f.write("attempt\n")
        if item == "dies-once" and seen == 0:
            os._exit(1)  # the worker process ends, as under the out-of-memory killer
        if item == "raises-once" and seen == 0:
            raise RuntimeError("a transient failure")
        if item == "always-bad":
            raise UserError("image x.png of always-bad is not a PNG.")
        return item.upper()

    done = []
    items = ["a", "dies-once", "b", "raises-once", "c", "always-bad"]
    with pytest.raises(UserError) as err:
        run_each(job, items, shared=root, name=str, slot=Slot(num_cpus=1), max_retries=1,
                 concurrency=2, on_done=lambda item, result: done.append((item, result)))
    message = str(err.value)
    assert message.startswith("1 of 6 jobs failed after 2 attempt(s) each")
    assert "always-bad: image x.png of always-bad is not a PNG." in message
    assert sorted(done) == [("a", "A"), ("b", "B"), ("c", "C"), ("dies-once", "DIES-ONCE"),
                            ("raises-once", "RAISES-ONCE")]
    assert {i: _attempts(root, i) for i in items} == {
        "a": 1, "b": 1, "c": 1, "dies-once": 2, "raises-once": 2, "always-bad": 2}


def test_results_come_back_in_the_order_of_the_jobs_and_none_are_retried_without_failing(tmp_path, ray_local):
    def job(item, shared):
        import time

        time.sleep(0.3 if item % 2 else 0.0)  # finish out of order
        with open(shared / str(item), "a") as f:
            f.write("attempt\n")
        return item * shared.name.count("")  # uses the shared value

    items = list(range(6))
    out = run_each(job, items, shared=tmp_path, name=lambda i: f"job{i}", slot=Slot(num_cpus=0.5),
                   max_retries=3, concurrency=3)
    assert out == [i * tmp_path.name.count("") for i in items]
    assert all(_attempts(tmp_path, str(i)) == 1 for i in items)
    assert run_each(job, [], shared=None, name=str, slot=Slot(), max_retries=0, concurrency=1) == []
