"""A tiny typed schema: one description drives both validation and JSON Schema.

Keeping the two in one table means `gate policy schema` can never drift from
what `gate policy check` accepts.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

Path_ = tuple  # a path into the document: ("rules", 2, "max_drop")


@dataclass(frozen=True)
class Problem:
    path: Path_
    message: str


def where(path: Path_) -> str:
    """'rules[2].max_drop' for humans; rules are counted from 1 as users count them."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]" if path and path[0] == "rules" else f"[{part}]"
        elif not str(part).strip():
            out += f"[{str(part)!r}]"  # an empty or blank name
        else:
            out += ("." if out else "") + str(part)
    return out or "the document"


def show(value: Any) -> str:
    """A user's value for a message: repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_part(key: Any) -> str:
    """A mapping key as a path part: names as they are, YAML's other scalars as YAML writes them.

    Path parts that are ints are list indices, so a key YAML read as a number becomes text here.
    """
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key) if isinstance(key, (int, float)) else show(key)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


class Spec:
    description: str = ""

    def check(self, value: Any, path: Path_, problems: list[Problem]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict:
        raise NotImplementedError

    def _with_description(self, out: dict) -> dict:
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class Num(Spec):
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    integer: bool = False
    description: str = ""

    def _range_text(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.exclusive_minimum is not None:
            parts.append(f"> {self.exclusive_minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.exclusive_maximum is not None:
            parts.append(f"< {self.exclusive_maximum:g}")
        return " and ".join(parts)

    def check(self, value, path, problems):
        kind = "an integer" if self.integer else "a number"
        rng = self._range_text()
        wanted = kind + (f" {rng}" if rng else "")
        ok_type = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            problems.append(Problem(path, f"must be {wanted}. Got {show(value)}."))
            return None
        if not self.integer and not _finite(value):
            # .inf / .nan would make every comparison pass or every comparison fail
            problems.append(Problem(path, f"must be a finite number{f' {rng}' if rng else ''}. Got {show(value)}."))
            return None
        bad = ((self.minimum is not None and value < self.minimum)
               or (self.maximum is not None and value > self.maximum)
               or (self.exclusive_minimum is not None and value <= self.exclusive_minimum)
               or (self.exclusive_maximum is not None and value >= self.exclusive_maximum))
        if bad:
            problems.append(Problem(path, f"must be {wanted}. Got {show(value)}."))
            return None
        return value if self.integer else float(value)

    def schema(self):
        out = {"type": "integer" if self.integer else "number"}
        for key, val in (("minimum", self.minimum), ("maximum", self.maximum),
                         ("exclusiveMinimum", self.exclusive_minimum),
                         ("exclusiveMaximum", self.exclusive_maximum)):
            if val is not None:
                out[key] = val
        return self._with_description(out)


PATH_MAX, NAME_MAX = 4096, 255  # Linux's limits; a longer path can only fail later, less clearly


@dataclass
class Str(Spec):
    enum: tuple[str, ...] | None = None
    description: str = ""
    path: bool = False  # a file path: no NUL byte, within what a file system can name

    def check(self, value, path, problems):
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(path, f"must be a non-empty string. Got {show(value)}."))
            return None
        if self.path and ("\0" in value or len(value) > PATH_MAX or
                          any(len(part.encode()) > NAME_MAX for part in value.replace("\\", "/").split("/"))):
            problems.append(Problem(path, f"is not a possible file path (a NUL byte, more than {PATH_MAX} characters "
                                    f"or a name over {NAME_MAX} bytes). Got {show(value)}."))
            return None
        if self.enum is not None and value not in self.enum:
            hint = difflib.get_close_matches(value, self.enum, n=1)
            extra = f" Did you mean '{hint[0]}'?" if hint else ""
            problems.append(Problem(path, f"must be one of {', '.join(self.enum)}. Got {show(value)}.{extra}"))
            return None
        return value

    def schema(self):
        out: dict = {"type": "string", "minLength": 1}
        if self.enum is not None:
            out = {"type": "string", "enum": list(self.enum)}
        return self._with_description(out)


@dataclass
class Bool(Spec):
    description: str = ""

    def check(self, value, path, problems):
        if not isinstance(value, bool):  # YAML's true/false only: "yes" in quotes or 1 is a mistake to name
            problems.append(Problem(path, f"must be true or false. Got {show(value)}."))
            return None
        return value

    def schema(self):
        return self._with_description({"type": "boolean"})


@dataclass
class ListOf(Spec):
    item: Spec
    min_items: int = 0
    description: str = ""

    def check(self, value, path, problems):
        if not isinstance(value, list):
            problems.append(Problem(path, f"must be a list. Got {show(value)}."))
            return None
        if len(value) < self.min_items:
            problems.append(Problem(path, f"must have at least {self.min_items} item(s)."))
        return [self.item.check(v, path + (i,), problems) for i, v in enumerate(value)]

    def schema(self):
        out = {"type": "array", "items": self.item.schema()}
        if self.min_items:
            out["minItems"] = self.min_items
        return self._with_description(out)


@dataclass
class DictOf(Spec):
    """Free keys (names chosen by the user), typed values."""
    value: Spec
    min_items: int = 0
    description: str = ""

    def check(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"must be a mapping of name: value. Got {show(value)}."))
            return None
        if len(value) < self.min_items:
            problems.append(Problem(path, f"must have at least {self.min_items} entry."))
        out = {}
        for key, val in value.items():
            if not isinstance(key, str) or not key.strip():
                kind = "" if isinstance(key, str) else f" (YAML reads it as {_yaml_kind(key)}; quote it)"
                problems.append(Problem(path + (key_part(key),), f"names must be non-empty strings. "
                                        f"Got {show(key)}{kind}."))
                continue
            out[key] = self.value.check(val, path + (key,), problems)
        return out

    def schema(self):
        out = {"type": "object", "additionalProperties": self.value.schema()}
        if self.min_items:
            out["minProperties"] = self.min_items
        return self._with_description(out)


@dataclass
class Obj(Spec):
    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    description: str = ""
    extra_check: Any = field(default=None, repr=False)

    def check(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"must be a mapping with keys {', '.join(self.fields)}. Got {show(value)}."))
            return None
        out = {}
        for key, val in value.items():
            if not isinstance(key, str):
                problems.append(Problem(path + (key_part(key),), f"is not a name: YAML reads this key as "
                                        f"{_yaml_kind(key)}. Allowed: {', '.join(self.fields)}."))
                continue
            if key not in self.fields:
                hint = difflib.get_close_matches(str(key), list(self.fields), n=1, cutoff=0.6)
                extra = f" Did you mean '{hint[0]}'?" if hint else f" Allowed: {', '.join(self.fields)}."
                problems.append(Problem(path + (key,), f"unknown key '{key}'.{extra}"))
                continue
            out[key] = self.fields[key].check(val, path + (key,), problems)
        for key in self.required:
            if key not in value:
                problems.append(Problem(path, f"is missing the required key '{key}'."))
        return out

    def schema(self):
        out = {"type": "object", "properties": {k: v.schema() for k, v in self.fields.items()},
               "additionalProperties": False}
        if self.required:
            out["required"] = list(self.required)
        return self._with_description(out)


@dataclass
class AnyOf(Spec):
    """The first option whose top-level type fits decides the messages."""
    options: tuple[Spec, ...]
    description: str = ""

    def check(self, value, path, problems):
        for option in self.options:
            trial: list[Problem] = []
            result = option.check(value, path, trial)
            if not trial:
                return result
        # report against the option of the matching shape, else the first one
        for option in self.options:
            if _shape_fits(option, value):
                return option.check(value, path, problems)
        return self.options[0].check(value, path, problems)

    def schema(self):
        return self._with_description({"anyOf": [o.schema() for o in self.options]})


def _shape_fits(spec: Spec, value: Any) -> bool:
    if isinstance(spec, (Obj, DictOf)):
        return isinstance(value, dict)
    if isinstance(spec, ListOf):
        return isinstance(value, list)
    if isinstance(spec, Str):
        return isinstance(value, str)
    if isinstance(spec, Num):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False
