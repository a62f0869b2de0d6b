"""One Ray task per job, for grids of independent jobs (the downstream classifiers: no gradient
is shared between two of them, so a training group would only tie their fates together).

Jobs are handed out as the cluster frees up, at most `concurrency` at a time, each with its own
CPUs, its share of a GPU (a fraction lets several small jobs share one) and any custom
resources. A job whose task fails, by an exception or by its worker dying (a node lost, the
out-of-memory killer), is retried alone, up to `max_retries` times, while the others carry on;
a job that still fails is named, with its reason, once every other job has finished, so that a
rerun has only the failed ones left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from gammaface.common.errors import UserError, explain

T = TypeVar("T")


@dataclass(frozen=True)
class Slot:
    """What one job's task asks the cluster for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] | None = None  # custom resources: a node group, a GPU type


def _reason(exc: BaseException) -> str:
    """One line for a job that failed: our own sentence where there is one, else the exception's
    type and the last line of its text (Ray's wrapper puts the traceback before the message)."""
    sentence = explain(exc)
    if sentence:
        return sentence
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")


def run_each(fn: Callable[..., Any], items: Sequence[T], *, shared: Any, name: Callable[[T], str],
             slot: Slot, max_retries: int, concurrency: int,
             on_done: Callable[[T, Any], None] | None = None) -> list[Any]:
    """`fn(item, shared)` for every item, each as its own Ray task; `shared` is put in the
    object store once for all of them. Returns the results in the order of `items`; calls
    `on_done(item, result)` in the driver as each finishes. Raises one UserError naming every
    job that failed `max_retries + 1` times."""
    import ray

    if not items:
        return []
    task = ray.remote(fn)
    options = dict(num_cpus=slot.num_cpus, num_gpus=slot.num_gpus, resources=slot.resources or {},
                   # a worker that dies is retried by Ray itself; an exception only with
                   # retry_exceptions
                   max_retries=max_retries, retry_exceptions=True)
    ref_shared = ray.put(shared)
    waiting = list(range(len(items)))
    running: dict[Any, int] = {}
    results: list[Any] = [None] * len(items)
    failed: list[tuple[T, BaseException]] = []
    while waiting or running:
        while waiting and len(running) < max(1, concurrency):
            i = waiting.pop(0)
            ref = task.options(name=name(items[i]), **options).remote(items[i], ref_shared)
            running[ref] = i
        [ready], _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ready)
        try:
            results[i] = ray.get(ready)
        except Exception as exc:  # noqa: BLE001 - reported below, once the others are done
            failed.append((items[i], exc))
            continue
        if on_done is not None:
            on_done(items[i], results[i])
    if failed:
        lines = "; ".join(f"{name(item)}: {_reason(exc)}" for item, exc in failed)
        raise UserError(f"{len(failed)} of {len(items)} jobs failed after {max_retries + 1} "
                        f"attempt(s) each ({lines}); the others are done, and a rerun trains "
                        "only these.")
    return results
