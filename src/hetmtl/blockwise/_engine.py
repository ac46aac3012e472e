"""Batched grid training (the torch engine): every configuration of a hyperparameter grid trained together.

:func:`fit_grids` hands grids whose settings ask for ``engine="native"`` to the C++ kernel
(:mod:`hetmtl.blockwise._native`); what follows describes the torch engine.

Weights of all configurations in a group are stacked on a leading configuration axis and zero-
padded to the group's largest width; configurations of smaller depth skip the extra layers (an
exact identity on post-ReLU activations). Zero padding is exact: padded units have zero weights,
zero activations and zero gradients, so Adam leaves them at zero and each configuration computes
exactly the function its unpadded network would. Each configuration is initialised from its own
generator (seeded by the grid seed and its position in the grid), all configurations see the same
mini-batch sequence, and early stopping is per configuration (:class:`BatchedEarlyStopping`);
stopped configurations are dropped from the batch. Within a group the configurations are ordered
by decreasing depth, so each hidden layer is computed, differentiated and updated only for the
leading configurations that use it (:func:`_training_leaves`).
With ``torch.get_num_threads() > 1`` (e.g. ``n_threads=2``) independent groups, of one grid or of
several (:func:`fit_grids`, e.g. the HBI grids of all sources), train in parallel threads, one
torch thread each, and a group too large for an even share is split by depth. Training the
configurations one by one (``group_by="config"``) therefore gives the same fits up to
floating-point summation order. Training raises glibc's mmap and trim thresholds once per process
(:func:`hetmtl._parallel.retain_freed_memory`), so the per-step buffers are reused, not page-faulted.
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from hetmtl._parallel import retain_freed_memory
from hetmtl._progress import progress_bar
from hetmtl.blockwise.selection import config_cost, select_config
from hetmtl.exceptions import ParameterError
from hetmtl.training import BatchedEarlyStopping

Params = dict[str, torch.Tensor]
ENGINES = ("auto", "torch", "native")
logger = logging.getLogger("hetmtl.blockwise")


def resolve_engine(engine: str, dtype: torch.dtype) -> str:
    """``"auto"``: the C++ kernel (``"native"``, float32 only) for float32, torch for float64."""
    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "native" if dtype == torch.float32 else "torch"
    return engine


# ---------------------------------------------------------------------------- initialisation
def config_generator(seed: int, index: int) -> torch.Generator:
    """Generator of the ``index``-th grid configuration (independent of how the grid is grouped)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + 7_919 * (index + 1)) % (2**63 - 1))


def linear_init(gen: torch.Generator, fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's default ``nn.Linear`` init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Weight is stored ``(fan_in, fan_out)`` (inputs on rows)."""
    bound = 1.0 / math.sqrt(fan_in)
    W = (torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    return W, b


def embed(W: torch.Tensor, in_true: Sequence[int], in_pad: Sequence[int], out_pad: int) -> torch.Tensor:
    """Zero-pad a ``(sum(in_true), out)`` weight whose input is a concatenation of segments."""
    out = torch.zeros(sum(in_pad), out_pad, dtype=W.dtype)
    r_true = r_pad = 0
    for a, A in zip(in_true, in_pad):
        out[r_pad:r_pad + a, : W.shape[1]] = W[r_true:r_true + a]
        r_true += a
        r_pad += A
    return out


class ParamStack:
    """Collects padded per-configuration layers into stacked tensors ``(G, [T,] in, out)``."""

    def __init__(self, n_configs: int) -> None:
        self.G = n_configs
        self.tensors: Params = {}

    def linear(self, name: str, g: int, gen: torch.Generator | None, in_true: Sequence[int], in_pad: Sequence[int],
               out_true: int, out_pad: int, lead: tuple[int, ...] = (), lead_index: tuple[int, ...] = (),
               weight_parts: Sequence[str] | None = None) -> None:
        """Initialise layer ``name`` of configuration ``g`` (``gen=None`` leaves it zero).

        ``weight_parts`` (one name per input segment) stores the weight rows of each input segment
        as its own tensor ``<part>.W`` (the bias stays ``<name>.b``); the initial values are those
        of the unsplit layer."""
        parts = list(weight_parts) if weight_parts else [name]
        bounds = np.cumsum([0, *in_pad]) if weight_parts else np.array([0, sum(in_pad)])
        if name + ".b" not in self.tensors:
            for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
                self.tensors[part + ".W"] = torch.zeros(self.G, *lead, int(hi - lo), out_pad, dtype=torch.float64)
            self.tensors[name + ".b"] = torch.zeros(self.G, *lead, 1, out_pad, dtype=torch.float64)
        if gen is None:
            return
        W, b = linear_init(gen, sum(in_true), out_true)
        W = embed(W, in_true, in_pad, out_pad)
        at = (g, *lead_index)
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            self.tensors[part + ".W"][at] = W[lo:hi]
        self.tensors[name + ".b"][at][0, :out_true] = b

    def done(self, dtype: torch.dtype) -> Params:
        return {k: v.to(dtype) for k, v in self.tensors.items()}


# ---------------------------------------------------------------------------- data streams
class TaskBatches:
    """Per-task arrays padded to a common row count, drawn in lockstep mini-batches.

    ``arrays[name][t]`` is an ``(n_t, d)`` array. Each epoch every task is shuffled and cut into
    batches of ``batch_size``; the epoch has as many steps as the task with the fewest batches
    (the authors' ``zip`` of per-task loaders). ``batch_size=None`` gives one full batch.
    Padded rows carry weight 0 in ``batch['w']``.
    """

    def __init__(self, arrays: dict[str, Sequence[np.ndarray]], batch_size: int | None, dtype: torch.dtype) -> None:
        names = list(arrays)
        self.n = [int(np.asarray(a).shape[0]) for a in arrays[names[0]]]
        self.T = len(self.n)
        self.n_max = max(self.n)
        self.batch_size = batch_size
        self.data: dict[str, torch.Tensor] = {}
        for name, per_task in arrays.items():
            first = np.asarray(per_task[0])
            shape = first.shape[1:]
            buf = np.zeros((self.T, self.n_max, *shape))
            for t, a in enumerate(per_task):
                buf[t, : self.n[t]] = a
            self.data[name] = torch.as_tensor(buf, dtype=dtype)
        w = np.zeros((self.T, self.n_max))
        for t, n in enumerate(self.n):
            w[t, :n] = 1.0
        self.w = torch.as_tensor(w, dtype=dtype)

    def full(self) -> dict[str, torch.Tensor]:
        return {**self.data, "w": self.w}

    def epoch(self, rng: np.random.Generator) -> list[dict[str, torch.Tensor]]:
        if self.batch_size is None:
            return [self.full()]
        B = int(self.batch_size)
        nb = [math.ceil(n / B) for n in self.n]
        steps = min(nb)
        idx = np.zeros((steps, self.T, B), dtype=np.int64)
        mask = np.zeros((steps, self.T, B))
        for t, n in enumerate(self.n):
            perm = np.full(nb[t] * B, -1, dtype=np.int64)
            perm[:n] = rng.permutation(n)
            perm = perm.reshape(nb[t], B)[:steps]
            mask[:, t] = perm >= 0
            idx[:, t] = np.where(perm >= 0, perm, 0)
        idx_t = torch.as_tensor(idx)
        t_idx = torch.arange(self.T).view(1, self.T, 1)
        gathered = {k: v[t_idx, idx_t] for k, v in self.data.items()}
        w = torch.as_tensor(mask, dtype=self.w.dtype)
        return [{**{k: v[s] for k, v in gathered.items()}, "w": w[s]} for s in range(steps)]


# ---------------------------------------------------------------------------- optimiser
class StackedAdam:
    """Adam (PyTorch's update rule) on stacked parameters; supports dropping configurations.

    Uses PyTorch's fused CPU kernel when available (one pass over parameters and moments; the
    update is memory-bound because a mini-batch of 16 rows does little work per parameter)."""

    fused = hasattr(torch, "_fused_adam_")

    def __init__(self, params: Params, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: tuple[torch.Tensor, ...] | list[torch.Tensor], names: list[str], lr: float) -> None:
        """One update; a parameter may be the first rows of the stacked one (moments likewise)."""
        self.t += 1
        m = [self.m[k][: p.shape[0]] for k, p in zip(names, params)]
        v = [self.v[k][: p.shape[0]] for k, p in zip(names, params)]
        if self.fused and params[0].dtype in (torch.float32, torch.float64):
            steps = [torch.tensor(float(self.t))] * len(params)  # read-only in the kernel
            torch._fused_adam_(params, list(grads), m, v, [], steps, lr=lr, beta1=self.b1, beta2=self.b2,
                               weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
            return
        torch._foreach_mul_(m, self.b1)
        torch._foreach_add_(m, grads, alpha=1 - self.b1)
        torch._foreach_mul_(v, self.b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - self.b2)
        bc1 = 1 - self.b1**self.t
        bc2 = 1 - self.b2**self.t
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-lr / bc1)

    def keep(self, rows: torch.Tensor) -> None:
        self.m = {k: v.index_select(0, rows) for k, v in self.m.items()}
        self.v = {k: v.index_select(0, rows) for k, v in self.v.items()}


# ---------------------------------------------------------------------------- grid fitting
@dataclass
class TrainSettings:
    """Optimisation settings shared by every configuration of a grid."""

    max_epochs: int = 25000
    patience: int = 30
    lr: float = 1e-3
    lr_step: int | None = 200
    lr_gamma: float = 0.95
    batch_size: int | None = 16
    dtype: torch.dtype = torch.float32
    engine: str = "torch"

    def __post_init__(self) -> None:
        self.engine = resolve_engine(self.engine, self.dtype)


@dataclass
class GroupFit:
    model: object
    index: list[int]
    params: Params
    cfg: dict[str, torch.Tensor]


@dataclass
class GridFit:
    """Every configuration's best validation loss and epoch, the selected one, and the fitted
    (early-stopped) parameters of every group.

    ``val_se`` (standard errors of the losses, :func:`score_grid`) and ``rule`` (``"min"``,
    ``"1se"`` or a tolerance in SEs, :func:`~hetmtl.blockwise.selection.select_config`) decide
    :attr:`selected`."""

    configs: list[dict]
    val_loss: np.ndarray
    best_epoch: np.ndarray
    groups: list[GroupFit] = field(default_factory=list)
    seconds: float = 0.0
    val_se: np.ndarray | None = None
    rule: str | float = "min"

    @property
    def selected(self) -> int:
        return select_config(self.val_loss, self.val_se, self.configs, self.rule)

    @property
    def selected_config(self) -> dict:
        return dict(self.configs[self.selected])

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame(self.configs)
        df["val_loss"] = self.val_loss
        if self.val_se is not None:
            df["val_se"] = self.val_se
        df["best_epoch"] = self.best_epoch
        return df

    def member(self, index: int | None = None) -> tuple[Any, Params, dict[str, torch.Tensor]]:
        """(model, params, cfg) of one configuration with a configuration axis of length 1."""
        index = self.selected if index is None else index
        for g in self.groups:
            if index in g.index:
                j = torch.tensor([g.index.index(index)])
                return (g.model, {k: v.index_select(0, j) for k, v in g.params.items()},
                        {k: v.index_select(0, j) for k, v in g.cfg.items()})
        raise KeyError(index)


def score_grid(fit: GridFit, val: dict[str, torch.Tensor], rule: str | float) -> GridFit:
    """Recompute every trained configuration's validation loss in float64 from its early-stopped
    parameters, with its standard error over the validation rows, and set the selection rule.

    The loss is sum_t mean_i e_ti (e: squared error of row i of task t) and its standard error
    sqrt(sum_t var_t(e) / n_t). Configurations never trained (no finite loss) keep inf.

    Parameters
    ----------
    fit : GridFit
        A fitted grid of networks with a ``row_errors`` method (Step-2, HPS / STL networks).
    val : dict
        The validation tensors (``w`` marks real rows).
    rule : float or {"min", "1se"}
        Selection rule (:func:`~hetmtl.blockwise.selection.select_config`).

    Returns
    -------
    GridFit
        ``fit`` itself, updated.
    """
    n = len(fit.configs)
    loss, se = np.full(n, np.inf), np.full(n, np.inf)
    val64 = {k: v.to(torch.float64) for k, v in val.items()}
    w = val64["w"]
    n_t = w.sum(1)
    for g in fit.groups:
        params = {k: v.detach().to(torch.float64) for k, v in g.params.items()}
        cfg = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in g.cfg.items()}
        with torch.no_grad():
            err = g.model.row_errors(params, cfg, val64) * w  # type: ignore[attr-defined]  # (G, T, n_max)
        mean = err.sum(-1) / n_t
        var = (((err - mean.unsqueeze(-1)) ** 2) * w).sum(-1) / (n_t - 1).clamp(min=1)
        L, S = mean.sum(1).numpy(), torch.sqrt((var / n_t).sum(1)).numpy()
        for j, i in enumerate(g.index):
            if np.isfinite(fit.val_loss[i]) and np.isfinite(L[j]):
                loss[i], se[i] = L[j], S[j]
    fit.val_loss, fit.val_se, fit.rule = loss, se, rule
    return fit


def train_group(model, params: Params, cfg: dict[str, torch.Tensor], stream: TaskBatches, val: dict,
                settings: TrainSettings, seed: int) -> BatchedEarlyStopping:
    """Train one group of stacked configurations with per-configuration early stopping."""
    rng = np.random.default_rng(seed)
    G = next(iter(params.values())).shape[0]
    es = BatchedEarlyStopping(G, patience=settings.patience)
    alive = torch.arange(G)
    full = {k: v.detach().clone() for k, v in params.items()}
    params = {k: v.detach().clone() for k, v in params.items()}
    opt = StackedAdam(params)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    leaves, names = _training_leaves(model, params, cfg)
    t0 = time.perf_counter()
    epoch = -1
    for epoch in range(settings.max_epochs):
        lr = settings.lr * (settings.lr_gamma ** (epoch // settings.lr_step) if settings.lr_step else 1.0)
        plist = [leaves[k] for k in names]
        for batch in stream.epoch(rng):
            loss = model.loss(leaves, cfg, batch)
            grads = torch.autograd.grad(loss.sum(), plist, materialize_grads=True)
            opt.step(plist, grads, names, lr)
        with torch.no_grad():
            vl = model.val_loss(params, cfg, val).to(torch.float64)
            vl_full = inf.expand(G).clone()
            vl_full[alive] = torch.nan_to_num(vl, nan=float("inf"))
            for k, v in params.items():
                full[k].index_copy_(0, alive, v)
        active = es.update(epoch, vl_full, full)
        keep_local = active[alive]
        if not bool(keep_local.any()):
            break
        if not bool(keep_local.all()):
            rows = torch.nonzero(keep_local).view(-1)
            alive = alive[rows]
            params = {k: v.index_select(0, rows) for k, v in params.items()}
            cfg = {k: v.index_select(0, rows) for k, v in cfg.items()}
            opt.keep(rows)
            leaves, names = _training_leaves(model, params, cfg)
    logger.info("%s: %d configuration(s), %d epoch(s), %.1f s", type(model).__name__, G, epoch + 1,
                time.perf_counter() - t0)
    return es


def _training_leaves(model, params: Params, cfg: dict) -> tuple[Params, list[str]]:
    """Gradient leaves sharing storage with ``params``: a hidden-layer parameter is cut to the
    leading configurations that use the layer (``model.param_rows``; the group is ordered deepest
    first), so neither its gradient nor its Adam update touches the depth padding (whose gradient
    would be zero and whose moments stay zero: the same update). Layers nobody uses are left out.
    Returns the leaves (unused parameters as they are) and the names of those to train."""
    rows = model.param_rows(cfg) if hasattr(model, "param_rows") else {}
    leaves, names = dict(params), []
    for k, v in params.items():
        r = rows.get(k, v.shape[0])
        if r > 0:
            leaves[k] = v[:r].detach().requires_grad_(True)  # a view: updates land in params
            names.append(k)
    return leaves, names


@dataclass
class GridJob:
    """One hyperparameter grid to train (the arguments of :func:`fit_grid`).

    ``make_model(group_configs, grid_indices)`` returns ``(model, params, cfg)`` for one group;
    ``make_stream(first_config)`` its training stream (the batch size may differ by group)."""

    make_model: Callable[[list[dict], list[int]], tuple[object, Params, dict]]
    configs: list[dict]
    make_stream: Callable[[dict], Any]  # a TaskBatches, or any stream with .epoch(rng) (hbi._FullBatch)
    val: dict
    settings: TrainSettings
    seed: int
    group_key: Callable[[int, dict], object]


def fit_grid(make_model: Callable[[list[dict], list[int]], tuple[object, Params, dict]], configs: list[dict],
             make_stream: Callable[[dict], TaskBatches], val: dict, settings: TrainSettings, seed: int,
             group_key: Callable[[int, dict], object], verbose: int = 0, desc: str = "grid") -> GridFit:
    """Train every configuration of one grid (grouped by ``group_key``): :func:`fit_grids` of one job."""
    return fit_grids([GridJob(make_model, configs, make_stream, val, settings, seed, group_key)], verbose, desc)[0]


def fit_grids(jobs: Sequence[GridJob], verbose: int = 0, desc: str = "grid") -> list[GridFit]:
    """Train independent grids and collect their early-stopped fits, one :class:`GridFit` each.

    The groups of all grids form one work list: with ``torch.get_num_threads() > 1`` they train in
    that many threads (one intra-op thread each, most expensive first), so e.g. the HBI grids of
    all private sources share the cores. A group whose estimated cost exceeds an even share of the
    total is split by depth, so that no single group bounds the wall time. The fits do not depend
    on the threads or on the grouping beyond floating-point summation order. ``verbose >= 1``
    shows a progress bar over the configurations (:mod:`hetmtl._progress`).
    """
    if any(job.settings.engine == "native" for job in jobs):
        from hetmtl.blockwise._native import fit_grids_native

        return fit_grids_native(jobs, verbose, desc)
    t0 = time.perf_counter()
    retain_freed_memory()
    workers = torch.get_num_threads()
    tasks: list[tuple[int, list[int]]] = []
    for j, job in enumerate(jobs):
        groups: dict[object, list[int]] = {}
        for i, c in enumerate(job.configs):
            groups.setdefault(job.group_key(i, c), []).append(i)
        # deepest configurations first: a hidden layer is then used by a prefix of the group, which
        # the networks compute on that prefix only (no work on depth padding)
        tasks += [(j, sorted(idx, key=lambda i, c=job.configs: -int(c[i].get("depth", 0))))  # type: ignore[misc]
                  for idx in groups.values()]
    cost = lambda t: sum(_config_cost(jobs[t[0]].configs[i]) for i in t[1])  # noqa: E731
    if workers > 1:
        share = sum(cost(t) for t in tasks) / workers
        tasks = [part for t in tasks for part in (_split_by_depth(t, jobs[t[0]].configs) if cost(t) > share else [t])]
    val_loss = [np.full(len(job.configs), np.inf) for job in jobs]
    best_epoch = [np.full(len(job.configs), -1) for job in jobs]
    bar = progress_bar(sum(len(job.configs) for job in jobs), desc, verbose, unit="config")

    def run(task: tuple[int, list[int]]) -> GroupFit:
        j, idx = task
        job = jobs[j]
        model, params, cfg = job.make_model([job.configs[i] for i in idx], idx)
        es = train_group(model, params, cfg, job.make_stream(job.configs[idx[0]]), job.val, job.settings, job.seed)
        val_loss[j][idx] = es.best_loss.numpy()
        best_epoch[j][idx] = es.best_epoch.numpy()
        bar.update(len(idx))
        return GroupFit(model, idx, {k: v.detach() for k, v in es.best_params.items()}, cfg)

    workers = min(workers, len(tasks))
    with bar:
        if workers <= 1:
            fits = [run(t) for t in tasks]
        else:
            by_cost = sorted(range(len(tasks)), key=lambda k: -cost(tasks[k]))
            old = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    done = dict(zip(by_cost, pool.map(lambda k: _one_thread(run, tasks[k]), by_cost)))
            finally:
                torch.set_num_threads(old)
            fits = [done[k] for k in range(len(tasks))]
    seconds = time.perf_counter() - t0
    return [GridFit(job.configs, val_loss[j], best_epoch[j], [f for t, f in zip(tasks, fits) if t[0] == j], seconds)
            for j, job in enumerate(jobs)]


def _split_by_depth(task: tuple[int, list[int]], configs: list[dict]) -> list[tuple[int, list[int]]]:
    """Split a group (ordered deepest first) into two of about equal cost at a change of depth."""
    j, idx = task
    depths = [int(configs[i].get("depth", 0)) for i in idx]
    cuts = [k for k in range(1, len(idx)) if depths[k] != depths[k - 1]]
    if not cuts:
        return [task]
    costs = np.cumsum([_config_cost(configs[i]) for i in idx])
    k = min(cuts, key=lambda k: abs(2 * costs[k - 1] - costs[-1]))
    return [(j, idx[:k]), (j, idx[k:])]


def _one_thread(fn, *args):
    torch.set_num_threads(1)  # OpenMP/MKL thread counts are per calling thread
    return fn(*args)


def _config_cost(c: dict) -> float:
    """Rough relative cost of training one configuration (for scheduling groups on threads)."""
    return config_cost(c)


def one_by_one(i: int, c: dict) -> int:
    """Group key of ``group_by="config"``: every configuration alone."""
    return i


def group_key_for(strategy: str) -> Callable[[int, dict], object]:
    """``"config"`` (one by one), ``"arch"`` (same width, depth and batch size: no padding),
    ``"width"`` (same width and batch size; depths padded), ``"depth"``, ``"all"``."""
    if strategy == "config":
        return one_by_one
    if strategy == "width":
        return lambda i, c: (c.get("batch_size"), c.get("width"))
    if strategy == "depth":
        return lambda i, c: (c.get("batch_size"), c.get("depth"))
    if strategy == "arch":
        return lambda i, c: (c.get("batch_size"), c.get("width"), c.get("depth"))
    if strategy == "all":
        return lambda i, c: (c.get("batch_size"),)
    raise ParameterError(f"group_by must be 'config', 'arch', 'width', 'depth' or 'all', got {strategy!r}")
