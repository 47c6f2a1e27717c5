"""Load and validate a YAML spec; every problem becomes one SpecError naming file and field."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from benchsuite.errors import BenchError, SpecError
from benchsuite.spec.analyses import analysis_kinds
from benchsuite.spec.schema import RunConfig, Spec


def _path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where an unknown key `loc` was found, walking nested models."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None) if field else None
        if model is None:
            return []
    return list(model.model_fields)


def _raise_first(source: str, err: ValidationError, model: type[BaseModel], prefix: tuple = (),
                 keep_loc: bool = True) -> None:
    errors = err.errors()
    e = errors[0]
    loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    if e["type"] == "extra_forbidden":
        msg = f"unknown key; allowed: {', '.join(_allowed(model, loc))}"
    elif e["type"] == "missing":
        msg = "required field is missing"
    else:
        msg = e["msg"].removeprefix("Value error, ")
        if "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r})"
    if len(errors) > 1:
        msg += f" (+{len(errors) - 1} more)"
    raise SpecError(source, _path(prefix + (loc if keep_loc else ())), msg)


MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; anything this large is the wrong file


def read_spec_text(path: str | Path) -> str:
    """A spec file's text; a missing, unreadable, oversized, binary or non-UTF-8 file is one SpecError."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"{p}: no such spec file")
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(str(p), "", f"{size:,} bytes, over the {MAX_SPEC_BYTES:,}-byte limit of a spec; "
                                        "is this the right file?")
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError(str(p), "", f"cannot read it ({exc.strerror}); check its permissions") from None
    if b"\x00" in raw:
        raise SpecError(str(p), "", "a binary file, not a YAML spec")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(str(p), f"line {line}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                                "save the spec as UTF-8") from None


def _mapping(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError(source, "", "nested too deeply to be a spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise SpecError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(source, "", "a spec is a YAML mapping with at least `name` and `family`")
    return data


def _validate(data: dict, source: str) -> Spec:
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        _raise_first(source, err, Spec)
    _check_semantics(spec, source)
    return spec


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    return _validate(_mapping(text, source), source)


def apply_override(data: dict, item: str, source: str = "<spec>") -> tuple[str, Any]:
    """Set one `dotted.key=value` (the value read as YAML: `[0, 1]`, `5`, `null`) in spec data, in place."""
    key, eq, raw = item.partition("=")
    parts = key.strip().split(".")
    if not eq or not all(parts):
        raise BenchError(f"{source} --set {item}: expected KEY=VALUE with a dotted key, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise BenchError(f"{source} --set {item}: the value is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    node: Any = data
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the spec"
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
        else:
            kind = "a list; index it, e.g. family.grid.0.depth" if isinstance(node, list) else "not a mapping"
            raise BenchError(f"{source} --set {item}: {where} is {kind}")
        if i == len(parts) - 1:
            node[index] = value
        else:
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            node = node[index]
    return ".".join(parts), value


def read_spec(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Spec, str]:
    """The spec in a file with `--set` overrides applied, and the text to store as its provenance: the file's
    own text without overrides, else the merged spec as YAML under a comment naming them."""
    p = Path(path)
    text = read_spec_text(p)
    data = _mapping(text, str(p))
    keys = [(apply_override(data, item, str(p)), item) for item in overrides]
    try:
        spec = _validate(data, str(p))
    except SpecError as err:
        # Name the override that set the failing field (or a field inside it).
        item = next((item for (key, _), item in reversed(keys) if _within(err.field, key)), None)
        if item is None:
            raise
        raise SpecError(f"{p} --set {item}", err.field, err.message) from None
    if not overrides:
        return spec, text
    header = f"# {p.name} with " + " ".join(f"--set {shlex.quote(item)}" for item in overrides)
    return spec, header + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _within(field: str, key: str) -> bool:
    """Does the error path `field` (`family.grid.depth[1]`) lie at or below the dotted `key`, or above it?"""
    parts = re.sub(r"\[(\d+)\]", r".\1", field).split(".")
    keys = key.split(".")
    n = min(len(parts), len(keys))
    return parts[:n] == keys[:n]


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    return read_spec(path, overrides)[0]


def _check_semantics(spec: Spec, source: str) -> None:
    """What pydantic cannot check alone: registry names, per-family parameters, analysis options."""
    from benchsuite.data import list_datasets
    from benchsuite.models import get_family, list_families
    from benchsuite.models.registry import ONE_VALUE

    if spec.dataset.name not in list_datasets():
        raise SpecError(source, "dataset.name", f"unknown dataset {spec.dataset.name!r}; allowed: {', '.join(list_datasets())}")
    if spec.family.name not in list_families():
        raise SpecError(source, "family.name", f"unknown family {spec.family.name!r}; allowed: {', '.join(list_families())}")
    params_model = get_family(spec.family.name).params
    allowed = list(params_model.model_fields)
    if spec.train.stack_seeds is True and not get_family(spec.family.name).stacks:
        stacking = ", ".join(f for f in list_families() if get_family(f).stacks)
        raise SpecError(source, "train.stack_seeds", f"family {spec.family.name} cannot train seeds stacked "
                                                     f"(families that can: {stacking}); use auto or false")
    if spec.train.zero_init_residual and not get_family(spec.family.name).zero_init:
        able = ", ".join(f for f in list_families() if get_family(f).zero_init)
        raise SpecError(source, "train.zero_init_residual", f"family {spec.family.name} has no residual branches to "
                                                            f"zero (families that do: {able}); set it to false")
    if not spec.family.grids:
        raise SpecError(source, "family.grid", "empty list; give at least one grid")
    for where, grid in spec.family.grids:
        for key, values in grid.items():
            if key not in allowed:
                raise SpecError(source, f"{where}.{key}", f"unknown parameter of {spec.family.name}; allowed: {', '.join(allowed)}")
            if not values:
                raise SpecError(source, f"{where}.{key}", "empty list; give at least one value")
            for i, value in enumerate(values):
                try:
                    params_model.model_validate({key: value}, context=ONE_VALUE)
                except ValidationError as err:
                    _raise_first(source, err, params_model, (*where.split("."), key, i), keep_loc=False)
        for combo in _product(grid):  # cross-parameter checks
            try:
                params_model.model_validate(combo)
            except ValidationError as err:
                point = ",".join(f"{k}={format_value(v)}" for k, v in combo.items())
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise SpecError(source, where, f"{msg} (at {spec.family.name}[{point}])") from None
    kinds = analysis_kinds()
    for i, analysis in enumerate(spec.analyses):
        if analysis.kind not in kinds:
            raise SpecError(source, f"analyses[{i}].kind", f"unknown analysis {analysis.kind!r}; allowed: {', '.join(kinds)}")
        try:
            kinds[analysis.kind].model_validate(analysis.options)
        except ValidationError as err:
            _raise_first(source, err, kinds[analysis.kind], ("analyses", i))
        if analysis.kind == "measure_agreement" and len(spec.measure.similarity) < 2:
            raise SpecError(source, f"analyses[{i}]", "measure_agreement compares the measures of measure.similarity; "
                                                      "list two or more there")


def canonical_json(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_key(config: RunConfig | dict, without: tuple[str, ...] = ("seed",)) -> str:
    """Canonical JSON of a run's configuration less some fields (dotted paths, e.g. `params.depth`):
    runs with equal keys differ only there; the default groups the seeds of one trained setting."""
    c = json.loads(canonical_json(config))
    for path in without:
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return canonical_json(c)


def run_id(config: RunConfig) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def format_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def name_matches(name: str, pattern: str) -> bool:
    """Glob match of a run name: `*` and `?` are wildcards, everything else (brackets too) is literal,
    so `cifar_resnet[depth=56,width=1]` matches itself (fnmatch would read a character class)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def run_name(config: RunConfig) -> str:
    """Human name `family[k=v,...]` with sorted keys (the seed is a separate column)."""
    return f"{config.family}[{','.join(f'{k}={format_value(v)}' for k, v in sorted(config.params.items()))}]"


def _product(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def expand(spec: Spec) -> list[RunConfig]:
    """Every grid point x training-set size x seed, with family defaults filled in (duplicates once)."""
    from benchsuite.models import get_family

    params_model = get_family(spec.family.name).params
    configs: dict[str, RunConfig] = {}
    for _, grid in spec.family.grids:
        for combo in _product(grid):
            params = params_model.model_validate(combo).model_dump(mode="json")
            for size in spec.dataset.sizes:
                dataset = spec.dataset.model_copy(update={"train_size": size})
                for seed in spec.seeds:
                    config = RunConfig(family=spec.family.name, params=params, dataset=dataset, train=spec.train, seed=seed)
                    configs.setdefault(canonical_json(config), config)
    return list(configs.values())


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
