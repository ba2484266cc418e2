"""A study config read and checked against its JSON schema: YAML parsing, schema validation that fills the
schema's defaults (the one place defaults live), and settings dataclasses built from a config section.

Every message names the config file and the dotted key (``config.yaml: models.minilm.sae_layers[2]: ...``).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

import jsonschema
import yaml

from layershift.core.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"  # package data


def load_yaml(path: str | Path) -> dict:
    """Parse a YAML config file; malformed YAML becomes a one-line ConfigError with the line number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}"
        )
    return data


def exit_on_bad_yaml(path: str | Path) -> None:
    """Stop the process with a one-line message if ``path`` is missing or not valid YAML."""
    import sys

    try:
        load_yaml(path)
    except ConfigError as err:
        sys.stderr.write(f"layershift: {err}\n")
        sys.exit(1)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _with_defaults(validator_class):
    """A jsonschema validator that also fills ``default`` values into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # JSON Schema counts 1.0 as an integer, but a float where the code expects an int (a layer index, a seed,
    # a width, a batch size) fails only inside a job (torch, numpy, sklearn) or, as a layer, as a Snakemake
    # MissingInputException for 'layer1.0'; YAML's `2.0` is a float, so integers must be written as integers
    strict_integers = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool)
    )
    return jsonschema.validators.extend(
        validator_class, {"properties": fill_defaults}, type_checker=strict_integers
    )


def _copy(value):
    import copy

    return copy.deepcopy(value)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def did_you_mean(unknown: str, known, what: str = "keys") -> str:
    known = [str(k) for k in known]  # may be a one-shot iterator (column names)
    close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
    close = close or _abbreviation_matches(unknown, known)
    return f"; did you mean {close[0]!r}?" if close else f" (known {what}: {', '.join(sorted(known))})"


def _abbreviation_matches(unknown: str, known: list[str]) -> list[str]:
    """Known names that abbreviate ``unknown`` (``lr`` for ``learning_rate``) or are one of its words
    (``epochs`` in ``num_epochs``): near misses that string similarity does not see."""
    words = [w for w in unknown.lower().replace("-", "_").split("_") if w]
    initials = "".join(w[0] for w in words)
    joined = "_".join(words)
    return [
        name
        for name in known
        if name.lower() == initials or (len(words) > 1 and f"_{name.lower()}_" in f"_{joined}_")
    ][:1]


def _describe_error(err: jsonschema.ValidationError) -> str:
    where = _key_path(err.absolute_path)
    if err.validator == "additionalProperties":
        known = err.schema.get("properties", {})
        extra = sorted(set(err.instance) - set(known))
        if known and extra:
            key = extra[0]
            prefix = f"{where}.{key}" if err.absolute_path else key
            return f"{prefix}: unknown key{did_you_mean(key, known)}"
    if err.validator == "required":
        return f"{where}: {err.message}"
    if "propertyNames" in err.relative_schema_path:  # an entry's name (the error is the name's own check)
        if not isinstance(err.instance, str):  # YAML reads `2024:` or `1.5:` as a number
            return f"{where}: name {err.instance!r} is not a string; quote it in the YAML ('{err.instance}')"
        return (
            f"{where}: name {err.instance!r} may only use letters, digits, '_', '.', '-' "
            "(and start with a letter or digit)"
        )
    if err.validator == "type":
        return f"{where}: expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}"
    if err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{where}: {err.instance!r} is out of range ({err.validator} {err.validator_value})"
    if err.validator == "enum":
        return f"{where}: {err.instance!r} is not one of {err.validator_value}"
    if err.validator == "minItems" and err.validator_value == 1:
        return f"{where}: must not be empty"
    return f"{where}: {err.message}"


def validate_schema(config: dict, origin: str, schema: dict | None = None) -> dict:
    """Validate against the JSON schema and fill defaults in place; raise the most specific error."""
    schema = schema or load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (-len(e.absolute_path), str(e.absolute_path))
    )
    if errors:
        raise ConfigError(f"{origin}: {_describe_error(errors[0])}")
    return config


def from_section(cls, section: dict, **values):
    """A settings dataclass from a study config section: every key of ``section`` that names a field of ``cls``
    (the YAML key *is* the field name, one name from config to code), then ``values`` for what the section
    does not hold (widths, seeds, threads, provenance). Keys that are not fields belong to the rule
    (e.g. ``sae.null_seeds``)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in section.items() if k in names and k not in values}, **values)


@functools.cache
def _schema_properties() -> dict:
    return load_schema()["properties"]


def section_defaults(section: str) -> dict:
    """The schema's default for every key of a top-level config section that has one (``sae`` -> ``{"lr": ...}``):
    the one place defaults are written, which the settings dataclasses read for their field defaults."""
    properties = _schema_properties()[section].get("properties", {})
    return {key: _copy(spec["default"]) for key, spec in properties.items() if "default" in spec}


def schema_default(section: str, key: str):
    """One key's schema default, for a dataclass field: ``lr: float = schema_default("sae", "lr")``. A key without a
    schema default is a programming error (KeyError names it)."""
    defaults = section_defaults(section)
    if key not in defaults:
        raise KeyError(f"config schema: {section}.{key} has no default")
    return defaults[key]


def dataset_row_cap(config: dict, dataset: str) -> int:
    """The stratified row cap of one dataset of a validated config: its own ``max_rows``, else ``data.max_rows``."""
    return int(config["datasets"][dataset].get("max_rows", config["data"]["max_rows"]))
