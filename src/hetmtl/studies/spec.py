"""Study descriptions: a data generator over a parameter grid, methods with options, replicates, seeds.

What to use when:

- in Python: build a :class:`Study` directly (generators and methods as callables or names);
- from a file: :meth:`Study.from_file` reads YAML (``.yaml``/``.yml``) or TOML (``.toml``);
- a method or generator you want to refer to by name in files: :func:`register_method`,
  :func:`register_generator` (or write ``"package.module:function"``).

A **generator** is called once per (setting, replicate) as ``generator(**fixed, **setting,
random_state=data_seed)`` and returns the replicate's data (any object). An optional **splitter**
``splitter(data, seed)`` draws the replicate's splits once, so every method sees the same rows.
A **method** is called as ``method(rep, **options)`` with a :class:`Replicate` and returns a dict
of metrics, or a list of dicts (one per site or task, e.g. ``{"site": "s1", "mse": ...}``).
Seeds come from ``numpy.random.SeedSequence(seed, spawn_key=(setting_index, replicate))``, so a
replicate's data do not depend on how many replicates, workers or settings there are. A study
that must reproduce published seeds sets ``seed_stride``: replicate r then uses the integer seed
``seed + seed_stride * r`` for both its data and its methods, in every setting (common random
numbers across settings, as the source papers' own scripts do, e.g. the MTL-HMB authors' seeds
0-19).

Trusted input only: ``"module:function"`` references name *any* importable callable, which the
runner imports and calls (``"os:system"`` included). A study file is code, not data: run only
study files you would run as a Python script (see ``docs/security.rst``).
"""
from __future__ import annotations

import importlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetmtl._jsonio import read_text_capped
from hetmtl.exceptions import InputError

#: Most replicates per setting a study may ask for.
MAX_REPS = 1_000_000
#: Largest study file read (bytes).
MAX_STUDY_FILE_BYTES = 4 * 2**20

_METHODS: dict[str, Callable] = {}
_GENERATORS: dict[str, Callable] = {}
#: Column names of the results and report tables; grid parameters may not use them.
RESERVED_NAMES = frozenset({"study", "setting", "setting_index", "params", "replicate", "method", "seconds", "metric",
                            "n_reps", "mean", "sd", "se", "baseline", "mean_diff", "ci_low", "ci_high", "value",
                            "unit", "n_units", "avg", "max", "max_at", "_x"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+\-]*$")  # e.g. "dual_lam=0.03", "Step1+STL"


def register_method(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn(rep, **options)`` available to study files as ``name``.

    Parameters
    ----------
    name : str
        The name study files use (``fn: name``).

    Returns
    -------
    callable
        The decorator (it returns ``fn`` unchanged).
    """
    def deco(fn: Callable) -> Callable:
        _METHODS[name] = fn
        return fn
    return deco


def register_generator(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn(**params, random_state=...)`` available to study files as ``name``.

    Parameters
    ----------
    name : str
        The name study files use (``generator: name``).

    Returns
    -------
    callable
        The decorator (it returns ``fn`` unchanged).
    """
    def deco(fn: Callable) -> Callable:
        _GENERATORS[name] = fn
        return fn
    return deco


def resolve(ref: str | Callable, kind: str = "method") -> Callable:
    """A callable from a registered name or ``"module:attribute"``.

    Parameters
    ----------
    ref : str or callable
        A registered name, ``"package.module:function"`` or a callable (returned as is).
    kind : {"method", "generator"}
        Which registry to search.

    Returns
    -------
    callable
        The resolved function.
    """
    if callable(ref):
        return ref
    registry = _METHODS if kind == "method" else _GENERATORS
    if isinstance(ref, str) and ref in registry:
        return registry[ref]
    if isinstance(ref, str) and ":" in ref:
        module, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raises on import
            raise InputError(f"{kind} {ref!r}: cannot import module {module!r} ({type(exc).__name__}: {exc})") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise InputError(f"{kind} {ref!r}: module {module!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise InputError(f"{kind} {ref!r} is not callable")
        return obj
    raise InputError(f"unknown {kind} {ref!r}: register it with register_{kind}() or write 'module:function'; "
                     f"registered: {sorted(registry)}")


def callable_ref(fn: str | Callable | None) -> str | None:
    """The name under which a callable can be written into a study file.

    Parameters
    ----------
    fn : str, callable or None
        A function (or a name, returned as is).

    Returns
    -------
    str or None
        Its registered name, else ``"module:qualname"``.
    """
    if fn is None or isinstance(fn, str):
        return fn
    for reg in (_METHODS, _GENERATORS):
        for name, f in reg.items():
            if f is fn:
                return name
    return f"{fn.__module__}:{fn.__qualname__}"


@dataclass
class MethodSpec:
    """One compared method: a label, the callable (or its name) and keyword options.

    Parameters
    ----------
    name : str
        Label in the results (letters, digits, ``_ . = + -``).
    fn : str or callable
        ``fn(rep, **options)`` returning a dict of metrics or a list of dicts; or its registered
        name or ``"module:function"``.
    options : dict
        Keyword options passed to ``fn``.
    """

    name: str
    fn: str | Callable
    options: dict = field(default_factory=dict)


@dataclass
class Replicate:
    """What every method of one (setting, replicate) receives; identical for all methods (paired).

    Each method gets its own copy of ``data`` and ``splits``; ``cache`` is shared by the methods
    of the replicate (e.g. per-site fits that several fusion methods start from).

    Parameters
    ----------
    data : object
        The generator's output.
    setting : dict
        The grid values of this setting.
    replicate : int
        Replicate number.
    seed : int
        The methods' seed.
    splits : object, optional
        The splitter's output (drawn once per replicate).
    cache : dict
        Shared between the methods of the replicate.
    """

    data: Any
    setting: dict
    replicate: int
    seed: int
    splits: Any = None
    cache: dict = field(default_factory=dict)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def setting_label(setting: Mapping[str, Any]) -> str:
    """Stable text key of a setting, e.g. ``"eta=0.5,n_sites=10"`` (grid order).

    Parameters
    ----------
    setting : mapping
        Grid values.

    Returns
    -------
    str
        The key (``"default"`` for an empty setting).
    """
    if not setting:
        return "default"
    return ",".join(f"{k}={json.dumps(_jsonable(v), separators=(',', ':'))}" for k, v in setting.items())


@dataclass
class Study:
    """A comparison study: a generator over a parameter grid, methods on every replicate, seeds.

    Parameters
    ----------
    name : str
        Identifier (letters, digits, ``_ . -``).
    generator : str or callable
        ``generator(**fixed, **setting, random_state=data_seed)`` returns a replicate's data; or
        its registered name or ``"module:function"``.
    methods : sequence of MethodSpec or dict
        The compared methods.
    grid : dict
        Parameter name to a list of values; the settings are their product.
    fixed : dict
        Further generator arguments, the same in every setting.
    n_reps : int
        Replicates per setting.
    seed : int
        Master seed (see the module notes).
    splitter : str or callable, optional
        ``splitter(data, seed)`` draws the replicate's splits once, so every method sees the
        same rows.
    metrics : list of str, optional
        Columns the report summarises (default: every numeric column methods return, plus
        ``seconds``).
    reference : str, optional
        CSV of published / expected values (columns: the grid parameters or ``setting``,
        ``method``, ``metric``, ``value``) compared in the report.
    description : str
        Free text.
    seed_stride : int, optional
        Integer seeds ``seed + seed_stride * replicate`` instead of spawned ones (see the
        module notes).
    timeout : float, optional
        Seconds a job (one setting × replicate, all its methods) may run before it is stopped
        and recorded as failed.
    """

    name: str
    generator: str | Callable
    methods: Sequence[MethodSpec]
    grid: dict[str, list] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    n_reps: int = 10
    seed: int = 0
    splitter: str | Callable | None = None
    metrics: list[str] | None = None
    reference: str | None = None
    description: str = ""
    seed_stride: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check names, seeds, grid, options and methods; raise
        :class:`~hetmtl.exceptions.InputError` (a ``ValueError``) naming the problem."""
        where = f"study {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InputError(f"study name must be a non-empty identifier (letters, digits, _ . -), got {self.name!r}")
        if (not isinstance(self.n_reps, (int, np.integer)) or isinstance(self.n_reps, bool)
                or not 1 <= self.n_reps <= MAX_REPS):
            raise InputError(f"{where}: n_reps must be an integer in [1, {MAX_REPS}], got {self.n_reps!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"{where}: seed must be a non-negative integer, got {self.seed!r}")
        if self.seed_stride is not None and (not isinstance(self.seed_stride, (int, np.integer))
                                             or isinstance(self.seed_stride, bool) or self.seed_stride < 1):
            raise InputError(f"{where}: seed_stride must be a positive integer or None, got {self.seed_stride!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or not self.timeout > 0):
            raise InputError(f"{where}: timeout must be a positive number of seconds or None, got {self.timeout!r}")
        if not isinstance(self.grid, Mapping):
            raise InputError(f"{where}: grid must map parameter names to lists of values")
        if not isinstance(self.fixed, Mapping):
            raise InputError(f"{where}: fixed must be a mapping of generator arguments")
        if not (callable(self.generator) or isinstance(self.generator, str)):
            raise InputError(f"{where}: generator must be a callable, a registered name or 'module:function', "
                             f"got {type(self.generator).__name__}")
        if self.splitter is not None and not (callable(self.splitter) or isinstance(self.splitter, str)):
            raise InputError(f"{where}: splitter must be a callable, a registered name or 'module:function'")
        for k, values in self.grid.items():
            if not isinstance(k, str) or not k:
                raise InputError(f"{where}: grid parameter names must be non-empty strings, got {k!r}")
            if k in RESERVED_NAMES:
                raise InputError(f"{where}: grid parameter {k!r} clashes with a results column; reserved names: "
                                 f"{sorted(RESERVED_NAMES)}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise InputError(f"{where}: grid parameter {k!r} must have a non-empty list of values, got {values!r}")
            if k in self.fixed:
                raise InputError(f"{where}: parameter {k!r} is both in grid and fixed")
        methods = []
        if isinstance(self.methods, (str, bytes, Mapping)) or not isinstance(self.methods, Sequence):
            raise InputError(f"{where}: methods must be a list of MethodSpec or dicts")
        for m in self.methods:
            if isinstance(m, Mapping):
                name = m.get("name", "?")
                try:
                    m = MethodSpec(**m)
                except TypeError as exc:
                    raise InputError(f"{where}: method {name!r}: {exc}") from None
            if not isinstance(m, MethodSpec):
                raise InputError(f"{where}: methods must be MethodSpec or dicts, got {type(m).__name__}")
            if not isinstance(m.name, str) or not _METHOD_NAME.match(m.name):
                raise InputError(f"{where}: method name must be an identifier (letters, digits, _ . = + -), "
                                 f"got {m.name!r}")
            if not isinstance(m.options, Mapping):
                raise InputError(f"{where}: options of method {m.name!r} must be a mapping")
            methods.append(m)
        if not methods:
            raise InputError(f"{where}: needs at least one method")
        names = [m.name for m in methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"{where}: duplicate method name(s) {dup}")
        self.methods = methods
        if self.metrics is not None and (isinstance(self.metrics, str) or not isinstance(self.metrics, Sequence)
                                         or not all(isinstance(x, str) for x in self.metrics)):
            raise InputError(f"{where}: metrics must be a list of column names")

    def check_resolvable(self) -> None:
        """Resolve the generator, splitter and every method now (clear error before any job runs)."""
        resolve(self.generator, "generator")
        if self.splitter is not None:
            resolve(self.splitter, "generator")
        for m in self.methods:
            try:
                resolve(m.fn, "method")
            except ValueError as exc:
                raise InputError(f"study {self.name!r}, method {m.name!r}: {exc}") from None

    # ----------------------------------------------------------------------------- grid
    def settings(self) -> list[dict]:
        """Every setting (one dict of grid values each), in grid order.

        Returns
        -------
        list of dict
            The settings.
        """
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def seeds(self, setting_index: int, replicate: int) -> tuple[int, int]:
        """(data seed, method seed) of one replicate; independent of n_reps and the grid size.

        Parameters
        ----------
        setting_index : int
            Position of the setting in :meth:`settings`.
        replicate : int
            Replicate number.

        Returns
        -------
        tuple of int
            The data seed and the methods' seed.
        """
        if self.seed_stride is not None:
            s = int(self.seed) + int(self.seed_stride) * int(replicate)
            return s, s
        ss = np.random.SeedSequence(int(self.seed), spawn_key=(int(setting_index), int(replicate)))
        data_seed, method_seed = ss.generate_state(2)
        return int(data_seed), int(method_seed)

    def n_jobs(self, n_reps: int | None = None) -> int:
        """Number of jobs (settings × replicates).

        Parameters
        ----------
        n_reps : int, optional
            Replicates per setting (default the study's).

        Returns
        -------
        int
            Number of jobs.
        """
        return len(self.settings()) * int(n_reps or self.n_reps)

    # ----------------------------------------------------------------------------- I/O
    def data_key(self) -> dict:
        """What determines the replicates' data: a restarted study must agree on it.

        Returns
        -------
        dict
            Generator, grid, fixed arguments, seed, splitter (and seed stride).
        """
        key = {"generator": callable_ref(self.generator), "grid": _jsonable(self.grid),
               "fixed": _jsonable(self.fixed), "seed": int(self.seed), "splitter": callable_ref(self.splitter)}
        if self.seed_stride is not None:  # only when set: stores written before the option stay valid
            key["seed_stride"] = int(self.seed_stride)
        return key

    def to_dict(self) -> dict:
        """The study as a plain dict (the format of study files).

        Returns
        -------
        dict
            JSON/YAML-serialisable description; callables are written as names.
        """
        return {
            "name": self.name, "description": self.description, "generator": callable_ref(self.generator),
            "grid": _jsonable(self.grid), "fixed": _jsonable(self.fixed), "n_reps": int(self.n_reps),
            "seed": int(self.seed), "splitter": callable_ref(self.splitter),
            "methods": [{"name": m.name, "fn": callable_ref(m.fn), "options": _jsonable(m.options)} for m in self.methods],
            "metrics": self.metrics, "reference": self.reference,
            **({"seed_stride": int(self.seed_stride)} if self.seed_stride is not None else {}),
            **({"timeout": float(self.timeout)} if self.timeout is not None else {}),
        }

    @classmethod
    def from_dict(cls, obj: Mapping, source: str = "study") -> "Study":
        """Build a study from a plain dict (a parsed study file).

        Parameters
        ----------
        obj : mapping
            Keys ``name``, ``generator``, ``methods`` (a list, or a mapping label → ``{fn,
            options}``) and optionally the other :class:`Study` fields.
        source : str
            Name of the source, used in error messages.

        Returns
        -------
        Study
            The validated study.
        """
        if not isinstance(obj, Mapping):
            raise InputError(f"{source}: a study description must be a mapping, got {type(obj).__name__}")
        allowed = {"name", "description", "generator", "grid", "fixed", "n_reps", "seed", "splitter",
                   "methods", "metrics", "reference", "seed_stride", "timeout"}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise InputError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in ("name", "generator", "methods") if k not in obj]
        if missing:
            raise InputError(f"{source}: missing key(s) {missing}")
        methods = obj["methods"]
        if isinstance(methods, Mapping):  # TOML-friendly form: {label: {fn: ..., options: {...}}}
            methods = [{"name": k, **v} for k, v in methods.items()]
        if not isinstance(methods, list):
            raise InputError(f"{source}: methods must be a list or a mapping")
        specs = []
        for i, m in enumerate(methods):
            if not isinstance(m, Mapping) or "name" not in m or "fn" not in m:
                raise InputError(f"{source}: method #{i + 1} needs 'name' and 'fn', got {m!r}")
            extra = sorted(set(m) - {"name", "fn", "options"})
            if extra:
                raise InputError(f"{source}: method {m['name']!r} has unknown key(s) {extra}")
            specs.append(MethodSpec(m["name"], m["fn"], dict(m.get("options") or {})))
        kwargs = {k: obj[k] for k in allowed - {"methods"} if k in obj and obj[k] is not None}
        try:
            return cls(methods=specs, **kwargs)
        except ValueError as exc:
            raise InputError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "Study":
        """Read a YAML (``.yaml``, ``.yml``) or TOML (``.toml``) study description.

        Parameters
        ----------
        path : str or pathlib.Path
            The file.

        Returns
        -------
        Study
            The validated study.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".yaml", ".yml"):
            raise InputError(f"{path}: study files must end in .yaml, .yml or .toml")
        text = read_text_capped(path, "study file", MAX_STUDY_FILE_BYTES, InputError)
        try:
            if suffix == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib

                obj = tomllib.loads(text)
            else:
                import yaml

                obj = yaml.safe_load(text)
        except RecursionError:
            raise InputError(f"{path}: not valid {suffix[1:].upper()} (nested too deeply)") from None
        except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, tomllib.TOMLDecodeError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: not valid {suffix[1:].upper()} ({first[:200]})") from None
        return cls.from_dict(obj, source=str(path))

    def to_yaml(self) -> str:
        """The study as YAML text (:meth:`to_dict`).

        Returns
        -------
        str
            YAML that :meth:`from_file` reads back.
        """
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_reps(self, n_reps: int | None) -> "Study":
        """A copy with another number of replicates.

        Parameters
        ----------
        n_reps : int or None
            Replicates per setting (``None``: unchanged).

        Returns
        -------
        Study
            The copy (or the study itself).
        """
        from dataclasses import replace

        return self if n_reps is None else replace(self, n_reps=int(n_reps))
