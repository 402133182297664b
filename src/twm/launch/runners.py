"""Where a sweep's runs execute: on this machine (``run_local``) or as Ray tasks (``run_ray``).

Locally, ``parallel`` threads each wait on one run's subprocess. On Ray, each run is a task
(``num_cpus``/``num_gpus`` per run) that does the same on whichever node Ray picks. Ray is imported
only by ``run_ray`` (and ``import_ray``, which run_sweep calls early to fail before anything starts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from twm.launch.attempt import execute_run, last_log_line, request_stop, stop_requested
from twm.launch.plan import RunResult, RunSpec, Status, SweepError, SweepOptions, conclude
from twm.run_dir import RunDir

if TYPE_CHECKING:
    from twm.launch.progress import Progress

RAY_HINT = "pip install 'twm[cluster]' (or pip install 'ray>=2.9')"
STOPPING = "stopping: the running runs write a checkpoint and exit (Ctrl-C again: now)"


# --------------------------------------------------------------------------------------- locally


def run_local(specs: Sequence[RunSpec], parallel: int, progress: Progress) -> list[RunResult]:
    """Run the specs on this machine, ``parallel`` at a time; Ctrl-C/SIGTERM stops them resumably."""
    results: list[RunResult] = []
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="twm-sweep") as pool:
        futures = {pool.submit(execute_run, s, progress.line): s for s in specs}
        pending: set[Future[RunResult]] = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if not stop_requested.is_set():
                    progress.line(STOPPING)
                request_stop()
                continue
            for future in done:
                results.append(_local_result(future, futures[future]))
                progress.finished(results[-1])
    return results


def _local_result(future: Future[RunResult], spec: RunSpec) -> RunResult:
    try:
        return future.result()
    except Exception as exc:  # e.g. the log could not be written (disk full): this run fails, not the sweep
        message = f"{type(exc).__name__}: {exc}"[:300]
        return conclude(RunResult(spec.game, spec.seed, spec.run_dir), Status.FAILED, None, message)


# --------------------------------------------------------------------------------------- on Ray


def import_ray() -> Any:
    """The ``ray`` module, or a ``SweepError`` with the install hint."""
    try:
        import ray
    except ImportError:
        raise SweepError(f"--ray-address needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def _ray_task(spec: RunSpec) -> RunResult:
    """One run inside a Ray worker; its event lines reach the driver through Ray's log forwarding."""
    return execute_run(spec, lambda text: print(f"twm sweep: {text}", flush=True))


def run_ray(specs: Sequence[RunSpec], opts: SweepOptions, progress: Progress) -> list[RunResult]:
    """Run the specs as Ray tasks on the cluster at ``opts.ray_address`` (``local``: a new local instance)."""
    ray = import_ray()
    try:
        if opts.ray_address == "local":
            cpus = None if opts.parallel is None else math.ceil(opts.parallel * max(opts.cpus_per_run, 1))
            ray.init(num_cpus=cpus, include_dashboard=False)
        else:
            ray.init(address=opts.ray_address)
    except Exception as exc:  # connection refused, bad address, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot start or reach Ray at {opts.ray_address!r}: {first}") from None
    progress.line(f"Ray: {_ray_resources(ray)}")
    task = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run, max_retries=opts.retries)(
        _ray_task
    )
    try:
        return _drive_ray(ray, task, specs, opts.parallel or len(specs), progress)
    finally:
        ray.shutdown()


def _ray_resources(ray: Any) -> str:
    res = ray.cluster_resources()
    return ", ".join(f"{res.get(k, 0):g} {k}" for k in ("CPU", "GPU")) + f", {len(ray.nodes())} node(s)"


def _drive_ray(
    ray: Any, task: Any, specs: Sequence[RunSpec], in_flight: int, progress: Progress
) -> list[RunResult]:
    queue, results = list(specs), []
    refs: dict[Any, RunSpec] = {}
    stopping = False
    while queue or refs:
        while queue and len(refs) < in_flight and not stopping:
            spec = queue.pop(0)
            refs[task.remote(spec)] = spec
        while stopping and queue:
            spec = queue.pop(0)
            result = RunResult(spec.game, spec.seed, spec.run_dir)
            results.append(conclude(result, Status.INTERRUPTED, None, "not started"))
            progress.finished(results[-1])
        if not refs:
            break
        try:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
        except KeyboardInterrupt:
            if stopping:  # the second one: leave now (the runs' last complete checkpoints stay valid)
                raise
            progress.line(STOPPING)
            stopping = True
            for ref in refs:
                ray.cancel(ref)  # a KeyboardInterrupt in the task, which forwards SIGTERM to its run
            continue
        for ref in done:
            spec = refs.pop(ref)
            results.append(_ray_result(ray, ref, spec, stopping))
            progress.finished(results[-1])
    return results


def _ray_result(ray: Any, ref: Any, spec: RunSpec, stopping: bool) -> RunResult:
    try:
        return ray.get(ref)
    except Exception as exc:  # the task died (node lost, cancelled) beyond Ray's own retries
        result = RunResult(spec.game, spec.seed, spec.run_dir)
        if RunDir(spec.run_dir).is_finished():  # it ended just as it was cancelled
            return conclude(result, Status.FINISHED, None, "")
        if not stopping:
            return conclude(result, Status.FAILED, None, _exception_line(exc))
        why = last_log_line(spec.log_path) if spec.log_path.is_file() else ""
        return conclude(result, Status.INTERRUPTED, None, f"cancelled; {why}" if why else "cancelled")


def _exception_line(exc: BaseException) -> str:
    """``TaskCancelledError: <last line>`` without Ray's colour codes and tracebacks."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    name = type(exc).__name__
    return (last if last.startswith(name) else f"{name}: {last}" if last else name)[:300]
