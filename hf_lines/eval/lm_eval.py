"""lm-evaluation-harness tasks as a sweep evaluator: ``type: lm_eval`` in a sweep YAML, ``LmEvalHarness`` in Python.

Each evaluation wraps the in-memory model (a sweep's one loaded model, whose weights change in
place from grid point to grid point) in lm-eval's Hugging Face wrapper,
``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=...)``, and runs the tasks with
``lm_eval.evaluate``, set up as ``lm_eval.simple_evaluate`` sets it up (the same seeds, few-shot
count and few-shot seed, so the numbers are simple_evaluate's). Two differences, both for speed
over many grid points: the tasks and their datasets are loaded once and reused, and
simple_evaluate's environment report (a ``pip list`` and a ``git`` call, about a second) is not
made.

The primary metric and its direction are the task's own: the first entry of its ``metric_list``
(for a group, of its ``aggregate_metric_list``) and that entry's ``higher_is_better``, unless
``metric=`` names another of its metrics. Metrics are reported by name (``acc``), or as
``name,filter`` (``exact_match,strict-match``) for a task whose filters are not lm-eval's
default ``none``.

lm-eval is an optional dependency: ``pip install 'hf-lines[lm-eval]'``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from hf_lines.errors import OptionError
from hf_lines.eval.evaluators import Evaluator

INSTALL = "pip install 'hf-lines[lm-eval]'"
# lm-eval's defaults (lm_eval.defaults): python's random 0; numpy, torch and the few-shot sampler 1234
DEFAULT_SEEDS = (0, 1234, 1234, 1234)


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or an OptionError that names the extra to install."""
    try:
        import lm_eval
    except ImportError as e:
        raise OptionError(f"the lm_eval evaluator needs lm-evaluation-harness, which cannot be imported ({e}); "
                          f"install the extra: {INSTALL}") from None
    return lm_eval


class LmEvalHarness(Evaluator):
    """lm-evaluation-harness tasks on the model, scored by the task's metric in the task's direction.

    Args:
        tasks: an lm-eval task or group name, a list of them, or a mapping ``{sweep task name:
            lm-eval name}``. One name: the sweep task keeps its own name. Several, or a mapping:
            one sweep task per entry (named by the lm-eval name, or by the mapping's key, so that
            validation and test evaluators can name different lm-eval tasks for the same sweep task).
            lm-eval scores a task on its ``test_split`` when it has one, else on its
            ``validation_split``: select on a task whose split is a validation split.
        metric: the primary metric (``acc_norm``, or ``name,filter``); default the task's first.
            Several tasks must share their primary metric and its direction.
        limit: at most this many examples per task (lm-eval's ``limit``).
        num_fewshot: few-shot examples (as simple_evaluate: a task whose config says 0 keeps 0).
        batch_size: HFLM's batch size, a number or ``"auto"``.
        include_path: a folder of task YAMLs besides lm-eval's own.
        seed: one seed for python, numpy, torch and the few-shot sampler; default lm-eval's.
        tokenizer: a tokenizer or its folder/Hub id; default the base model's (``bind``), else
            the model's ``name_or_path``.
    """

    def __init__(self, tasks: str | Sequence[str] | Mapping[str, str], *, metric: str | None = None,
                 limit: int | None = None, num_fewshot: int | None = None, batch_size: int | str = 16,
                 include_path: str | Path | None = None, seed: int | None = None, tokenizer: Any = None):
        require_lm_eval()  # before any model is loaded
        self.task_names = _task_names(tasks)
        self.tasks = list(self.task_names) if isinstance(tasks, Mapping) or len(self.task_names) > 1 else None
        if metric is not None and (not isinstance(metric, str) or not metric.strip(",")):
            raise OptionError(f"lm_eval metric: expected a metric name such as 'acc', got {metric!r}")
        self.metric_option = metric
        self.limit = _count(limit, "limit", 1)
        self.num_fewshot = _count(num_fewshot, "num_fewshot", 0)
        if not (isinstance(batch_size, str) and batch_size.startswith("auto")):
            batch_size = _count(batch_size, "batch_size", 1)
        self.batch_size = batch_size
        if include_path is not None and not Path(include_path).is_dir():
            raise OptionError(f"lm_eval include_path: {include_path} is not a folder (of task YAMLs)")
        self.include_path = str(include_path) if include_path is not None else None
        self.seed = _count(seed, "seed", 0)
        self.tokenizer_spec = tokenizer
        self.source: str | None = None
        self._tokenizer: Any = None
        self._loaded: dict[str, Any] | None = None
        self._primary: tuple[str, bool] | None = None
        self._keys: dict[str, str] = {}  # lm-eval name -> its primary metric's key in lm-eval's results

    # ------------------------------------------------------------------ the task's metric
    @property
    def metric(self) -> str:  # type: ignore[override]
        return self._resolve()[0]

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        return self._resolve()[1]

    def bind(self, source):
        """The base model's folder (its tokenizer); the tasks load now, so a wrong name fails before the grid runs."""
        self.source = str(source) if source is not None else None
        self._resolve()

    def _resolve(self) -> tuple[str, bool]:
        if self._primary is None:
            loaded = self._load()
            found = {name: _primary_metric(name, loaded, self.metric_option)
                     for name in dict.fromkeys(self.task_names.values())}
            if len({(m, up) for m, _, up in found.values()}) > 1:
                listed = ", ".join(f"{n}: {m} ({'higher' if up else 'lower'} is better)"
                                   for n, (m, _, up) in found.items())
                raise OptionError(f"lm_eval tasks with different primary metrics ({listed}): name a metric they share "
                                  f"with metric:, or give each its own sweep task")
            self._keys = {name: key for name, (_, key, _) in found.items()}
            metric, _, up = next(iter(found.values()))
            self._primary = (metric, up)
        return self._primary

    def _load(self) -> dict[str, Any]:
        if self._loaded is None:
            wanted = list(dict.fromkeys(self.task_names.values()))
            manager = self._task_manager(wanted)
            try:
                loaded = manager.load(wanted)
            except (KeyError, ValueError, FileNotFoundError) as e:
                where = f"include_path {self.include_path}" if self.include_path else "custom tasks need include_path"
                raise OptionError(f"lm-eval cannot load {wanted} ({where}): {e}") from None
            for task in loaded["tasks"].values():  # few-shot count as simple_evaluate sets it
                if self.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                    task.set_config(key="num_fewshot", value=self.num_fewshot)
                elif task.get_config("num_fewshot") is None:
                    task.set_config(key="num_fewshot", value=0)
            self._loaded = loaded
        return self._loaded

    def _task_manager(self, wanted: list[str]) -> Any:
        from lm_eval.tasks import TaskManager

        if self.include_path is not None:
            # lm-eval's index of its own ~15k task files takes seconds: skip it when the folder has every task
            own = TaskManager(include_path=self.include_path, include_defaults=False)
            if set(wanted) <= set(own.all_tasks):
                return own
        return TaskManager(include_path=self.include_path)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model):
        import lm_eval
        import numpy as np
        import torch

        self._resolve()
        loaded = self._load()
        lm = self._wrap(model)
        python_seed, numpy_seed, torch_seed, fewshot_seed = DEFAULT_SEEDS if self.seed is None else (self.seed,) * 4
        random.seed(python_seed)  # as simple_evaluate, on every call: each grid point sees the same draws
        np.random.seed(numpy_seed)
        torch.manual_seed(torch_seed)
        for task in loaded["tasks"].values():
            task.set_fewshot_seed(seed=fewshot_seed)  # the sampler's generator is used up by each run
        with _quiet_lm_eval():
            results = lm_eval.evaluate(lm=lm, task_dict=loaded, limit=self.limit, bootstrap_iters=0, log_samples=False)
        out = {sweep_name: self._metrics(results, name) for sweep_name, name in self.task_names.items()}
        return out if self.tasks else next(iter(out.values()))

    def _metrics(self, results: Mapping[str, Any], name: str) -> dict[str, float]:
        raw = results["results"].get(name, {})
        out = {}
        for key, value in raw.items():
            if "," in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                metric, _, filt = key.partition(",")
                out[metric if filt == "none" else key] = float(value)
        if isinstance(raw.get("sample_len"), int):
            out["n"] = float(raw["sample_len"])
        key = self._keys[name]
        if key not in raw:
            found = sorted(k for k in raw if "," in k)
            raise OptionError(f"lm-eval reported {found} for {name}, not its primary metric {key}")
        return out

    def _wrap(self, model: Any) -> Any:
        from lm_eval.models.huggingface import HFLM

        if self._tokenizer is None:
            spec = next((s for s in (self.tokenizer_spec, self.source, getattr(model, "name_or_path", None))
                         if s is not None and s != ""), None)
            if isinstance(spec, (str, Path)):
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(str(spec))
                except (OSError, ValueError) as e:
                    raise OptionError(f"lm_eval needs the model's tokenizer; loading it from {spec} failed ({e}); "
                                      f"pass tokenizer=") from None
            elif spec is None:
                raise OptionError("lm_eval needs the model's tokenizer: pass tokenizer=")
            else:
                self._tokenizer = spec
        hf_logger = logging.getLogger("lm_eval.models.huggingface")
        # HFLM warns that it was given a model object and not a name: expected here, and once per grid point
        quiet = _DropMessage(("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model"))
        hf_logger.addFilter(quiet)
        try:
            return HFLM(pretrained=model, tokenizer=self._tokenizer, batch_size=self.batch_size)
        finally:
            hf_logger.removeFilter(quiet)

    def describe(self):
        import lm_eval

        return {**super().describe(), "tasks": dict(self.task_names), "limit": self.limit, "num_fewshot": self.num_fewshot,
                "batch_size": self.batch_size, "include_path": self.include_path, "seed": self.seed,
                "lm_eval_version": getattr(lm_eval, "__version__", None)}


# --------------------------------------------------------------------------- helpers
def _primary_metric(name: str, loaded: Mapping[str, Any], wanted: str | None) -> tuple[str, str, bool]:
    """(reported name, key in lm-eval's results, higher is better) of a task's or group's primary metric."""
    task, group = loaded["tasks"].get(name), loaded["groups"].get(name)
    if task is not None:
        directions: dict[str, bool | None] = dict(task.higher_is_better())
        filters = {m: _filter_names(task) for m in directions}
    elif group is not None:
        if not group.has_aggregation:
            raise OptionError(f"lm-eval group {name} has no aggregate_metric_list, so no score of its own: "
                              f"name its tasks {group.child_names} instead")
        leaves = group.get_all_tasks()
        directions, filters = {}, {}
        for agg in group.aggregate_metric_list:  # a group's direction is its tasks' direction for the metric
            ups = {t.higher_is_better()[agg.metric] for t in leaves if agg.metric in t.higher_is_better()}
            directions.setdefault(agg.metric, ups.pop() if len(ups) == 1 else None)
            # lm-eval aggregates every filter its tasks report when the entry names none
            filters.setdefault(agg.metric, list(agg.filter_list or sorted({f for t in leaves for f in _filter_names(t)})))
    else:
        raise OptionError(f"lm-eval name {name} is neither a task nor a group (a tag?): name its tasks or a group")
    metric, _, filt = (wanted or next(iter(directions), "")).partition(",")
    if metric not in directions:
        raise OptionError(f"lm-eval task {name} has no metric {metric!r}; its metrics: {list(directions)}")
    if directions[metric] is None:
        raise OptionError(f"lm-eval group {name}: its tasks do not agree on whether a higher {metric} is better")
    filt = filt or ("none" if "none" in filters[metric] or not filters[metric] else filters[metric][0])
    return (metric if filt == "none" else f"{metric},{filt}"), f"{metric},{filt}", bool(directions[metric])


def _filter_names(task: Any) -> list[str]:
    """A task's filter names in order; lm-eval's default is one filter named none."""
    names = [f["name"] for f in (task.get_config("filter_list") or []) if isinstance(f, Mapping) and "name" in f]
    return names or ["none"]


def _task_names(tasks: Any) -> dict[str, str]:
    """sweep task name -> lm-eval task name."""
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, Mapping):
        names = {str(k): v for k, v in tasks.items()}
    elif isinstance(tasks, Sequence):
        names = {v: v for v in tasks if isinstance(v, str)}
        if len(names) != len(tasks) and all(isinstance(v, str) for v in tasks):
            raise OptionError(f"lm_eval tasks: {list(tasks)} names a task twice")
    else:
        raise OptionError(f"lm_eval tasks: expected a task name, a list or a mapping, got {type(tasks).__name__}")
    if not names or len(names) != len(tasks) or not all(isinstance(v, str) and v for v in names.values()):
        raise OptionError(f"lm_eval tasks: expected lm-eval task names, got {tasks!r}")
    return names


def _count(value: Any, option: str, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise OptionError(f"lm_eval {option}: expected a whole number >= {least}, got {value!r}")
    return value


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's INFO lines ("Building contexts ...") once per grid point are noise in a sweep; LMEVAL_LOG_LEVEL still wins."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    if not os.environ.get("LMEVAL_LOG_LEVEL") and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _DropMessage(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)
