"""What every config file shares: the error type, the strict base model, the YAML
loader and the mapping of pydantic's errors to one line naming the field.

Study files and ablation files go through the same three pieces, so a problem
in either reads the same way: ``<file>: <dotted.field>: <what was expected>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config file or an override is invalid. ``str()`` is the one-line message."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class Strict(BaseModel):
    """Unknown keys are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------ YAML
class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: ``on``/``off``/``yes``/``no`` stay strings.

    Level names like ``off: 0.0, on: 0.5`` are the natural way to write an
    ablation; YAML 1.1 would turn them into ``False``/``True``. Boolean fields
    of a study still accept them (pydantic reads ``"on"`` as true).
    """


Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with the safe YAML 1.2 loader (no Python objects are ever built)."""
    return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, what: str = "study file") -> dict[str, Any]:
    """Safely load a YAML mapping, raising :class:`ConfigError` naming the file.

    Args:
        path: the file.
        what: how messages call it ("study file", "ablation file").

    Raises:
        ConfigError: missing, a folder, unreadable, not UTF-8 text, not YAML, empty,
            or not a mapping.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(str(path), None, f"is a folder, not a {what}")
    if not p.is_file():
        raise ConfigError(str(path), None, f"no such {what}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), None, f"cannot be read: {e.strerror or e}") from None
    if b"\x00" in data[:8192]:
        raise ConfigError(str(path), None, f"is a binary file, not a {what} (YAML text)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), None, f"is not UTF-8 text (byte {e.start}): a {what} is "
                                           "YAML text") from None
    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise ConfigError(str(path), where, f"not valid YAML: {getattr(e, 'problem', e)}") \
            from None
    if raw is None:
        raise ConfigError(str(path), None, "the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(str(path), None, f"a {what} must be a YAML mapping (key: value)")
    return raw


# ------------------------------------------------------------------ errors
_UNION_MARKERS = ("str", "int", "float", "bool", "list", "dict", "SearchParam", "constrained-str")


def field_of(err: dict[str, Any]) -> str:
    """The dotted field of one pydantic error (union-branch markers dropped)."""
    parts = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    clean = [p for p in parts if not any(c in p for c in "[]") and p not in _UNION_MARKERS]
    return ".".join(clean) or "(top level)"


def first_error(e: ValidationError) -> tuple[str, str]:
    """``(dotted field, message)`` of the first error: one line, the bad value quoted."""
    err = e.errors(include_url=False)[0]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err.get("type") != "missing" and not isinstance(err["input"], dict):
        msg = f"{msg} (got {err['input']!r})"
    field = field_of(err)
    named = _NAMED_FIELD.match(msg)
    if field == "(top level)" and named:  # a whole-study check that names its field first
        field, msg = named.group(1), named.group(2)
    return field, msg


_NAMED_FIELD = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): (.+)$", re.DOTALL)


def validate(model: type[BaseModel], raw: Any, source: str,
             context: dict[str, Any] | None = None) -> Any:
    """``model.model_validate(raw)`` raising :class:`ConfigError` naming ``source`` and the field."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as e:
        field, msg = first_error(e)
        raise ConfigError(source, field, msg) from None


# ------------------------------------------------------------------ choices
OPTIMIZERS = (
    "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam",
)
SCHEDULERS = ("constant", "step", "multistep", "cosine", "onecycle", "plateau", "exponential")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "nsga2")
PRUNERS = ("median", "percentile", "sha", "hyperband", "none")
# torch.compile modes (train.compile: true is "default")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
