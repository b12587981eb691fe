"""How a run's tasks execute: one after another in this process (``local``), or as a graph of Ray tasks (``ray``).

A :class:`Task` names the tasks it needs (``needs``); the plan lists every task after those it needs, so the local
executor simply runs them in order. The Ray executor submits every task at once with its prerequisites as
dependencies, so independent chains (one adapter's train -> generate -> score) run side by side wherever the
cluster has the resources the stage asks for (``executor.resources``), and nothing waits on an unrelated K.

The run directory is the only state: every task reads and writes files under ``RUN_DIR``, so every node must see it;
a node that mounts it (or the data directory) at another path says so in ``$SAFEMIX_PATH_MAP`` (:func:`node_path`),
and the node plans the run again there to find its task. Every task is idempotent and resumable, which is what
makes retries safe. A worker that
dies (``kill -9``, a lost node) is retried by Ray up to ``executor.max_retries`` times and continues where the
files say it stopped (training from its last checkpoint); a task that raises (bad input) fails the run at once, with
that task's own error. Ctrl-C cancels every task still queued or running. Each task's log is
``RUN_DIR/logs/<stage>-<target>.log`` on the node that ran it; the driver shows one progress bar for the whole
graph.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]
STAGES = ("data", "train", "generate", "score", "metrics", "capability", "winrate", "report")
PATH_MAP_ENV = "SAFEMIX_PATH_MAP"


@dataclass(frozen=True)
class Task:
    """One unit of work of a run: a stage applied to one model (or to the whole run).

    ``status`` is what the run directory holds for it when it is first read (``check`` works it out, once):
    ``done``, ``pending``, ``resume`` (half done) or ``redo`` (done with other settings or inputs). The action is
    idempotent: it does only what is missing, so it is safe to call whatever the status (and to call again after a
    crash). ``needs`` holds the keys of the tasks that must finish first.
    """

    stage: str
    target: str
    check: Callable[[], str]
    action: Callable[[], Any]
    needs: tuple[str, ...] = ()

    @functools.cached_property
    def status(self) -> str:
        """What the run directory holds for this task (worked out when first read)."""
        return self.check()

    @property
    def key(self) -> str:
        """The task's name in the plan, in ``needs`` and in its log file: ``<stage> <target>``."""
        return f"{self.stage} {self.target}"


class StageResources(BaseModel):
    """What one task of a stage asks the Ray cluster for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)


class ExecutorConfig(BaseModel):
    """The ``executor`` section: where a run's tasks execute. It decides how a run is computed, never what, so it
    is not part of the config hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ExecutorKind = Field(default="local", description="local: one task after another here; ray: a Ray cluster")
    address: str | None = Field(
        default=None, description="ray: the cluster ('auto', 'ray://host:10001'); default: a local Ray instance")
    max_retries: int = Field(default=3, ge=0, description="ray: retries of a task whose worker died")
    resources: dict[str, StageResources] = Field(
        default_factory=dict, description="ray: CPUs and GPUs per task of a stage (default 1 CPU, no GPU)")

    @field_validator("resources")
    @classmethod
    def _known_stages(cls, resources: dict[str, StageResources]) -> dict[str, StageResources]:
        unknown = sorted(set(resources) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
        return resources

    def resources_for(self, stage: str) -> StageResources:
        """The resources a task of ``stage`` asks for."""
        return self.resources.get(stage, StageResources())


def run_local(tasks: Sequence[Task], on_start: Callable[[Task], None], on_done: Callable[[Task], None]) -> None:
    """Run the tasks one after another, in plan order."""
    for task in tasks:
        on_start(task)
        task.action()
        on_done(task)


def run_on_ray(tasks: Sequence[Task], config: ExecutorConfig, logs_dir: Path, on_done: Callable[[Task], None],
               on_node: Callable[[Task], Callable[[], Any]]) -> None:
    """Submit every task to Ray with its prerequisites as dependencies; return when all are done.

    ``on_node(task)`` is the callable a node runs for ``task``; the pipeline's plans the run again where that node
    sees the run directory, then runs the task.

    Raises:
        the first failed task's own exception (an ``InputError`` stays one), after cancelling the rest;
        KeyboardInterrupt, after cancelling every task still queued or running.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=config.address, logging_level=logging.WARNING, log_to_driver=False)
    remote_task = ray.remote(_run_task)
    refs: dict[str, Any] = {}
    by_ref: dict[Any, Task] = {}
    for task in tasks:
        resources = config.resources_for(task.stage)
        ref = remote_task.options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, name=task.key,
                                  max_retries=config.max_retries, retry_exceptions=False).remote(
            on_node(task), str(logs_dir / task_log_name(task)), *(refs[key] for key in task.needs))
        refs[task.key] = ref
        by_ref[ref] = task
    pending = list(refs.values())
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(finished[0])
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, Exception) else err) from None
            on_done(by_ref[finished[0]])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True, recursive=True)
        raise


def node_path(path: Path) -> Path:
    """``path`` (as the driver names it) as this node sees it.

    ``$SAFEMIX_PATH_MAP`` on a node holds ``DRIVER_PREFIX=NODE_PREFIX`` pairs separated by ``:``
    (``/home/me/shared=/mnt/shared``) for the shared folders this node mounts elsewhere; the first pair whose driver
    prefix holds ``path`` applies. Without one, the path is the same on every node.
    """
    for pair in filter(None, os.environ.get(PATH_MAP_ENV, "").split(os.pathsep)):
        driver_prefix, sep, node_prefix = pair.partition("=")
        if sep and path.is_relative_to(driver_prefix):
            return Path(node_prefix) / path.relative_to(driver_prefix)
    return path


def task_log_name(task: Task) -> str:
    """``<stage>-<target>.log`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", task.key) + ".log"


def _run_task(action: Callable[[], Any], log_path: str, *needed: Any) -> None:
    """On a Ray worker: run one task's action with the safemix log also written to ``log_path``. ``needed`` are the
    finished prerequisites' results (None), there only so that Ray waits for them."""
    local_log = node_path(Path(log_path))
    local_log.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(local_log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("safemix")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("task started in process %d on %s", os.getpid(), os.uname().nodename)
        action()
        logger.info("task done")
    except BaseException:
        logger.exception("task failed")
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
