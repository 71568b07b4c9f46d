"""A regression gate for compressed models.

The Python API (docs/api.md), loaded on first use so that `import gate` stays fast:

    from gate import check
    result = check("gate/policy.yaml", out="gate-report")
    assert result.passed, "\\n".join(map(str, result.failing_rules()))

`measure` and `judge` are in `gate.api` (`from gate.api import measure, judge`): in the package,
`gate.measure` is the measurement package and `gate.judge` the judge module.
"""

__version__ = "0.1.0"

_API = ("check", "GateResult", "FailingRule", "GateInputError")


def __getattr__(name):
    if name in _API:
        from gate import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
