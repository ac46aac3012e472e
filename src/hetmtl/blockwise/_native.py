"""Native (C++) grid training of the MTL-HMB networks: ``engine="native"``.

Each configuration of a grid is trained alone by the C++ kernel (``hetmtl._core``): forward, hand-
written backward, Adam, the learning-rate schedule and early stopping in one call, float32, the
configurations spread over ``torch.get_num_threads()`` threads. A configuration runs the same code
whatever else is trained, so the grid's fits are bit for bit those of training each configuration
alone (no batching rounding), and the per-step Python overhead of the torch engine is gone.
``group_by`` is ignored except ``"config"``, which trains each configuration in its own call on
one thread (the one-by-one reference).

Initial parameters come from the torch networks (:meth:`Step2Net.init`, :meth:`HBINet.init` with
one configuration), so both engines start from the same weights; the fitted parameters come back
in the torch layout and predict through the torch networks, while the imputations of a native fit
are computed on the kernel (:func:`hbi_impute`). The mini-batch order is the kernel's
own (xoshiro256** seeded by the grid seed, the same for every configuration), so the two engines
follow different, equally valid, trajectories.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from hetmtl import _core
from hetmtl._progress import check_verbose, progress_bar
from hetmtl.blockwise._engine import GridFit, GridJob, GroupFit, _config_cost, one_by_one
from hetmtl.blockwise.nets import HBINet, Step2Net

logger = logging.getLogger("hetmtl.blockwise")


def step2_spec(net: Step2Net, config: dict) -> dict:
    """Kernel description of one Step-2 configuration (``net`` built at its width and depth)."""
    imputed = [torch.nonzero(row != 0).view(-1).tolist() for row in net.imputed]
    return dict(p0=net.p0, P=net.P, T=net.T, width=net.width, depth=net.depth, dr_mode=net.dr_mode, imputed=imputed,
                **{k: float(config.get(k, 0.0)) for k in ("lambda_orth", "lambda_imp", "lambda_dr")})


def hbi_spec(net: HBINet, config: dict) -> dict:
    """Kernel description of one HBI configuration (``net`` built at its width and depth)."""
    return dict(p0=net.p0, ps=net.ps, width=net.width, depth=net.depth, heterogeneous=net.heterogeneous,
                orth_power=net.orth_power, lambda_orth=float(config.get("lambda_orth", 0.0)))


def to_kernel(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One configuration's parameters without the configuration axis, float32."""
    return {k: v[0].detach().to(torch.float32).numpy() for k, v in params.items()}


def from_kernel(params: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_kernel`: the configuration axis restored."""
    return {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in params.items()}


def hbi_impute(net: HBINet, params: dict[str, torch.Tensor], x0: np.ndarray) -> np.ndarray:
    """G(E_c(x0)) of a fitted HBI network (configuration axis of length 1) on the kernel, float32.

    Used for the imputations of native fits, so that they do not depend on torch's CPU kernels
    (which round differently in some host processes, e.g. Python embedded in R)."""
    spec = hbi_spec(net, {})
    return _core.blockwise_hbi_impute(spec, to_kernel(params), np.asarray(x0, dtype=np.float32))


def _task_rows(padded: dict[str, torch.Tensor], n: Sequence[int]) -> dict[str, list[np.ndarray]]:
    """Per-task arrays from the engine's padded ``(T, n_max, ...)`` tensors."""
    return {k: [padded[k][t, : n[t]].to(torch.float32).numpy() for t in range(len(n))] for k in ("x0", "xf", "y")}


def _step2_problem(job: GridJob, config: dict) -> dict:
    stream = job.make_stream(config)
    n_val = [int(v) for v in job.val["w"].sum(1)]  # TaskBatches puts each task's rows first
    return dict(train=_task_rows(stream.data, stream.n), val=_task_rows(job.val, n_val), seed=int(job.seed),
                batch_size=0 if stream.batch_size is None else int(stream.batch_size))


def _hbi_problem(job: GridJob, config: dict) -> dict:
    train = job.make_stream(config).batch
    as_np = lambda d, keys: {k: d[k].to(torch.float32).numpy() for k in keys}  # noqa: E731
    return dict(train=as_np(train, ("x0t", "xst", "x0m")), val=as_np(job.val, ("x0t", "xst")))


def fit_grids_native(jobs: Sequence[GridJob], verbose: int = 0, desc: str = "grid") -> list[GridFit]:
    """:func:`~hetmtl.blockwise._engine.fit_grids` on the C++ kernel (Step-2 and HBI networks).

    With ``verbose >= 1`` the configurations go to the kernel ``n_threads`` at a time, so that a
    progress bar can advance (each configuration's fit is the same either way)."""
    t0 = time.perf_counter()
    kinds = set()
    problems: list[dict] = []
    problem_of: dict[tuple, int] = {}
    members: list[tuple[int, dict, dict]] = []
    owners: list[tuple[int, int, object, dict]] = []  # (job, config index, net, cfg)
    key: tuple
    for j, job in enumerate(jobs):
        if job.settings.dtype != torch.float32:
            raise ValueError(f"engine='native' trains in float32, got dtype {job.settings.dtype}")
        for i, c in enumerate(job.configs):
            net, params, cfg = job.make_model([c], [i])
            if isinstance(net, Step2Net):
                kinds.add("step2")
                spec = step2_spec(net, c)
                key = (j, c.get("batch_size", job.settings.batch_size))
                make_problem = _step2_problem
            elif isinstance(net, HBINet):
                kinds.add("hbi")
                spec = hbi_spec(net, c)
                key = (j,)
                make_problem = _hbi_problem
            else:
                raise ValueError(f"engine='native' trains Step-2 and HBI networks, not {type(net).__name__}")
            if key not in problem_of:
                problem_of[key] = len(problems)
                problems.append(make_problem(job, c))
            members.append((problem_of[key], spec, to_kernel(params)))
            owners.append((j, i, net, cfg))
    if len(kinds) > 1:
        raise ValueError("engine='native': Step-2 and HBI grids are trained in separate calls")
    settings = jobs[0].settings
    if any(job.settings != settings for job in jobs):
        raise ValueError("engine='native': the grids of one call must share their optimisation settings")
    options = dict(max_epochs=settings.max_epochs, patience=settings.patience, lr=settings.lr,
                   lr_step=settings.lr_step or 0, lr_gamma=settings.lr_gamma)
    # most expensive first, so that the threads finish together
    order = sorted(range(len(members)), key=lambda k: -_config_cost(jobs[owners[k][0]].configs[owners[k][1]]))
    train = _core.blockwise_train_step2 if kinds == {"step2"} else _core.blockwise_train_hbi
    threads = max(1, torch.get_num_threads())
    one = all(job.group_key is one_by_one for job in jobs)  # the reference: one kernel call per configuration
    chunk = 1 if one else (threads if check_verbose(verbose) else len(order))
    out = []
    with progress_bar(len(order), desc, verbose, unit="config") as bar:
        for start in range(0, len(order), chunk):
            part = [members[k] for k in order[start:start + chunk]]
            out += train(problems, part, options, 1 if one else threads)
            bar.update(len(part))
    fits = [GridFit(job.configs, np.full(len(job.configs), np.inf), np.full(len(job.configs), -1)) for job in jobs]
    epochs = 0
    for k, (best, loss, best_epoch, n_epochs) in zip(order, out):
        j, i, net, cfg = owners[k]
        fits[j].val_loss[i] = loss
        fits[j].best_epoch[i] = best_epoch
        fits[j].groups.append(GroupFit(net, [i], from_kernel(best), cfg))
        epochs += n_epochs
    seconds = time.perf_counter() - t0
    for fit in fits:
        fit.seconds = seconds
    logger.info("native %s: %d configuration(s), %d epoch(s) in all, %.1f s", kinds.pop(), len(members), epochs, seconds)
    return fits
