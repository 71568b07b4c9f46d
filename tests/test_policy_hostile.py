"""Hostile policies (from strangers' pull requests): always exit 2 with file, line and fix; never a
traceback, never a hang."""

import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gate.policy as policy_module
from gate.errors import GateInputError
from gate.policy import (MAX_DEPTH, MAX_POLICY_BYTES, MAX_VALUES, LatencySettings, load_policy, parse_policy,
                         with_overrides)

HEAD = "version: 1\n"
RULE = "rules:\n  - metric: accuracy\n    max_drop: 0.01\n"
VALID = HEAD + RULE
FAST = 5.0  # seconds; a hang is a large effect, so the limit is generous


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request, monkeypatch):
    """Both YAML readers: libyaml (used when PyYAML has it) and the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(policy_module, "_PolicyLoader", policy_module._PurePolicyLoader)
    elif policy_module._CParser is None:
        pytest.skip("PyYAML without libyaml")
    return request.param


def refused(tmp_path: Path, text: str | bytes, line: int | None = None, needle: str = "") -> GateInputError:
    path = tmp_path / "policy.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    start = time.perf_counter()
    with pytest.raises(GateInputError) as info:
        load_policy(path)
    assert time.perf_counter() - start < FAST
    err = info.value
    rendered = err.render()
    assert err.path == str(path) and rendered.startswith(str(path))
    assert "fix:" in rendered, rendered
    if line is not None:
        assert err.line == line, rendered
        assert rendered.startswith(f"{path}:{line}: ")
    assert needle.lower() in rendered.lower(), rendered
    return err


# 1. tags: no object is ever built from a tag
@pytest.mark.parametrize("value", [
    "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!python/object:object {}",
    "!custom 1", "!!binary aGVsbG8=", "!!timestamp 2024-01-01", "!!set {a, b}", "!!omap [a: 1]",
    "!!str 1", "! plain", "!<tag:example.com,2024:x> 1", "!!bool maybe", "!!int abc", "!!float x",
])
def test_tags_are_refused(tmp_path, loader, value):
    refused(tmp_path, HEAD + f"seed: {value}\n" + RULE, line=2, needle="tags are not allowed")


@pytest.mark.parametrize("value,needle", [
    ("2024-01-01", "date"), ("2024-13-45", "date"), ("2001-12-14t21:59:43.10-05:00", "date"), ("=", "quote it"),
    ("0x_", "cannot read"), ("0b_", "cannot read"), ("1" * 500, "characters long"),
    ("1" + ":1" * 200, "characters long"),
])
def test_values_yaml_reads_as_other_types_are_refused(tmp_path, loader, value, needle):
    refused(tmp_path, HEAD + RULE + f"    name: {value}\n", line=5, needle=needle)


# 2. keys and metric names that are not strings: no TypeError anywhere
@pytest.mark.parametrize("text,line,needle", [
    (HEAD + "rules:\n  - metric: 5\n    max: 1\n", 3, "metric must be a non-empty string"),
    (HEAD + "rules:\n  - metric: [a]\n    max: 1\n", 3, "metric must be a non-empty string"),
    (HEAD + "rules:\n  - metric: {a: 1}\n    max: 1\n", 3, "metric must be a non-empty string"),
    (HEAD + "rules:\n  - metric: ~\n    max: 1\n", 3, "metric must be a non-empty string"),
    (HEAD + "rules:\n  - metric: '  '\n    max: 1\n", 3, "metric must be a non-empty string"),
    (HEAD + "? [a, b]\n: 1\n" + RULE, 2, "list or mapping as a key"),
    (HEAD + "rules:\n  - {[1]: 2}\n", 3, "list or mapping as a key"),
    (HEAD + "rules:\n  - {{a: 1}: 2}\n", 3, "list or mapping as a key"),
    (HEAD + RULE + "    ~: 2\n", 5, "rules[1].null is not a name"),
    (HEAD + RULE + "    : 2\n", 5, ""),  # an empty key: libyaml refuses the syntax, PyYAML reads null
    (HEAD + RULE + "    5: 2\n", 5, "rules[1].5 is not a name"),
    (HEAD + RULE + "    yes: 2\n", 5, "reads this key as true/false"),
    (HEAD + "candidates: {5: a.onnx}\n" + RULE, 2, "names must be non-empty strings"),
    (HEAD + "candidates: {~: a.onnx}\n" + RULE, 2, "names must be non-empty strings"),
    (HEAD + "latency: {targets: {1: {threads: 2}}}\nrules:\n  - metric: latency_p95_ms\n    max: 3\n"
     "    target: x\n", 2, "names must be non-empty strings"),
    (HEAD + "latency: {targets: {1: {threads: 2}, 2: {min_time_s: 5, max_time_s: 1}}}\n" + RULE, 2,
     "names must be non-empty strings"),
    (HEAD + "task: [a]\n" + RULE, 2, "task must be a non-empty string"),
    (HEAD + "data: {path: d.npz, groups: [[], {a: 1}]}\n" + RULE, 2, "must be"),
    (HEAD + RULE + "    per: [group]\n    scope: {a: 1}\n", 5, "must be"),
])
def test_keys_and_names_of_the_wrong_type_are_refused(tmp_path, loader, text, line, needle):
    refused(tmp_path, text, line=line, needle=needle)


# 3. nesting
@pytest.mark.parametrize("text", [
    HEAD + "rules: " + "[" * 5000 + "]" * 5000 + "\n",
    HEAD + "rules: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    HEAD + "rules: " + "[" * 200_000 + "\n",  # never closed
])
def test_deep_nesting_is_refused(tmp_path, loader, text):
    refused(tmp_path, text, line=2, needle=f"more than {MAX_DEPTH} deep")


@pytest.mark.parametrize("text", [
    HEAD + "rules:\n" + "".join(" " * (2 * i + 2) + "-\n" for i in range(300)),
    HEAD + "rules:\n" + "".join(" " * (i + 2) + f"k{i}:\n" for i in range(1000)),
    HEAD + "rules:\n  " + "- " * 100_000 + "x\n",
])
def test_deep_block_nesting_is_refused(tmp_path, loader, text):
    err = refused(tmp_path, text, needle=f"more than {MAX_DEPTH} deep")
    assert err.line is not None


def test_nesting_within_the_limit_is_fine_but_not_a_policy(tmp_path, loader):
    refused(tmp_path, HEAD + "rules: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n", line=2,
            needle="rules[1] must be a mapping")


# 4. aliases: expansion is limited, cycles are refused, sharing a few settings still works
def _laughs(levels: int, width: int = 10) -> str:
    text = HEAD + "a0: &a0 [" + ", ".join(["lol"] * width) + "]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]\n"
    return text + RULE


@pytest.mark.parametrize("text,needle", [
    (_laughs(9), "once its aliases (*name) are expanded"),
    (_laughs(30, 2), "once its aliases (*name) are expanded"),
    (HEAD + "a: &a [x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(100)) + RULE,
     "deep once its aliases"),
    (HEAD + "rules: &r [*r]\n", "inside the value its anchor"),
    (HEAD + "latency: &l {<<: *l}\n" + RULE, "inside the value its anchor"),
    (HEAD + "latency: &l {targets: {x: *l}}\n" + RULE, "inside the value its anchor"),
    (HEAD + "a: &a x\nb: [" + "*a, " * 100_000 + "]\n" + RULE, f"more than {MAX_VALUES} values"),
    (HEAD + "rules:\n  - <<: 5\n", "merging"),
    (HEAD + "rules: *nothing\n", "undefined alias"),
])
def test_alias_bombs_and_cycles_are_refused(tmp_path, loader, text, needle):
    err = refused(tmp_path, text, needle=needle)
    assert err.line is not None


def test_anchors_that_share_a_few_settings_still_work(tmp_path, loader):
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + "latency:\n  targets:\n    pi: &pi {threads: 4, batch_size: 1}\n"
                    "    pi8: {<<: *pi, threads: 8}\n" + RULE, encoding="utf-8")
    policy = load_policy(path)
    assert policy.latency.targets["pi8"] == LatencySettings(threads=8, batch_size=1)


# 5. size: refused before reading, and the text is parsed once
@pytest.mark.parametrize("size", [MAX_POLICY_BYTES + 1, 50_000_000])
def test_policies_larger_than_the_limit_are_refused(tmp_path, size):
    path = tmp_path / "policy.yaml"
    with path.open("wb") as handle:  # sparse where the file system allows: nothing is written but the head
        handle.write(VALID.encode())
        handle.truncate(size)
    start = time.perf_counter()
    with pytest.raises(GateInputError) as info:
        load_policy(path)
    assert time.perf_counter() - start < FAST
    assert info.value.path == str(path) and "at most 1000000 bytes" in info.value.render()
    with pytest.raises(GateInputError) as info:
        parse_policy(VALID + "#" * size, "p.yaml", tmp_path)
    assert info.value.path == "p.yaml" and "1 MB" in info.value.render()


@pytest.mark.parametrize("filler", [
    "a: " + "x " * 400_000, "a: x\n" + "  x\n" * 200_000, "#\n" * 400_000, "a: [" + "1," * 400_000 + "]",
    "a: [" + " " * 900_000 + "]", "".join(f"k{i}: 1\n" for i in range(80_000)),
])
def test_a_policy_just_under_the_limit_is_read_fast(tmp_path, filler):
    # the libyaml reader (the pure-Python fallback needs a few seconds for the worst of these)
    text = HEAD + filler + "\n"
    assert len(text) <= MAX_POLICY_BYTES
    refused(tmp_path, text)


def test_the_text_is_composed_once(monkeypatch):
    calls = []
    original = policy_module._PolicyLoader.get_single_node
    monkeypatch.setattr(policy_module._PolicyLoader, "get_single_node",
                        lambda self: calls.append(1) or original(self))
    monkeypatch.setattr(policy_module.yaml, "compose", None)  # never used
    monkeypatch.setattr(policy_module.yaml, "SafeLoader", None)  # never used
    assert parse_policy(VALID, "p.yaml", Path("/r")).rules
    assert calls == [1]


# 6. non-finite numbers
@pytest.mark.parametrize("text,line", [
    (HEAD + "rules:\n  - metric: accuracy\n    max_drop: .inf\n", 4),
    (HEAD + "rules:\n  - metric: accuracy\n    min: -.inf\n", 4),
    (HEAD + "rules:\n  - metric: accuracy\n    max: .nan\n", 4),
    (HEAD + "rules:\n  - metric: accuracy\n    max: 1e999\n", 4),
    (HEAD + "confidence: .NaN\n" + RULE, 2),
    (HEAD + "max_file_mb: .Inf\n" + RULE, 2),
    (HEAD + "latency: {min_time_s: .inf}\n" + RULE, 2),
    (HEAD + "latency: {targets: {pi: {max_time_s: .nan}}}\n" + RULE, 2),
])
def test_non_finite_numbers_are_refused(tmp_path, loader, text, line):
    err = refused(tmp_path, text, line=line)
    assert "must be a finite number" in err.render() or "must be a number" in err.render()


# 7. candidates without a name or a path
@pytest.mark.parametrize("item,needle", [
    ("=m.onnx", "no candidate name"), ("  =m.onnx", "no candidate name"), ("int8=", "no model path"),
    ("int8=  ", "no model path"), ("", "no model path"), (".", "no candidate name"), ("=", "no model path"),
])
def test_command_line_candidates_need_a_name_and_a_path(tmp_path, item, needle):
    policy = parse_policy(VALID, "p.yaml", tmp_path)
    with pytest.raises(GateInputError) as info:
        with_overrides(policy, candidates=[item])
    assert info.value.path == "--candidate" and needle in info.value.render() and "fix:" in info.value.render()


@pytest.mark.parametrize("flag", ["base", "data"])
def test_empty_base_and_data_flags_are_refused(tmp_path, flag):
    with pytest.raises(GateInputError) as info:
        with_overrides(parse_policy(VALID, "p.yaml", tmp_path), **{flag: " "})
    assert info.value.path == f"--{flag}"


@pytest.mark.parametrize("text", [
    HEAD + "candidates: {'': a.onnx}\n" + RULE, HEAD + "candidates: {'  ': a.onnx}\n" + RULE,
    HEAD + "candidates: {\"\\t\": a.onnx}\n" + RULE, HEAD + "candidates: {a: ' '}\n" + RULE,
    HEAD + "candidates: {a: {path: ''}}\n" + RULE,
])
def test_policy_candidates_need_a_name_and_a_path(tmp_path, loader, text):
    refused(tmp_path, text, line=2, needle="non-empty string")


# 8. documents of the wrong shape
@pytest.mark.parametrize("text,line,needle", [
    ("- 1\n- 2\n", 1, "the document must be a mapping"), ("just words\n", 1, "the document must be a mapping"),
    ("5\n", 1, "the document must be a mapping"), ("~\n", 1, "the document must be a mapping"),
    ("[]\n", 1, "the document must be a mapping"), (HEAD + "rules: {a: 1}\n", 2, "rules must be a list"),
    (HEAD + "rules: accuracy\n", 2, "rules must be a list"), (HEAD + "rules:\n  - accuracy\n", 3, "rules[1] must be a mapping"),
    (HEAD + "rules: []\n", 2, "at least 1"), (HEAD + "rules:\n", 2, "rules must be a list"),
    (HEAD + "rules:\n  - metric: accuracy\n", 3, "exactly one bound"),
    (HEAD + "data: [a]\n" + RULE, 2, "data must be a mapping"), (HEAD + "latency: 5\n" + RULE, 2, "latency must be"),
    (HEAD + "base: [a]\n" + RULE, 2, "base must be"), (HEAD + "candidates: [a]\n" + RULE, 2, "candidates must be"),
    (VALID + "---\n" + VALID, 5, "more than one YAML document"),
])
def test_documents_of_the_wrong_shape_are_refused(tmp_path, loader, text, line, needle):
    refused(tmp_path, text, line=line, needle=needle)


def test_an_empty_policy_is_refused(tmp_path, loader):
    refused(tmp_path, "# nothing\n", needle="is empty")


# 9. encodings
def test_a_byte_order_mark_is_accepted(tmp_path, loader):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    policy = load_policy(path)
    assert policy.rules[0].line == 3


@pytest.mark.parametrize("data,line,needle", [
    (VALID.encode() + b"# caf\xe9\n", 5, "not UTF-8"), (b"\xff\xfe" + VALID.encode("utf-16-le"), 1, "UTF-16"),
    (VALID.encode() + b"\x80\x81", 5, "not UTF-8"), (HEAD.encode() + b"seed: \xc3\n", 2, "not UTF-8"),
    (HEAD.encode() + "name: é\x01\n".encode() + RULE.encode(), 2, "control character U+0001"),
    (HEAD.encode() + b"\x00" + RULE.encode(), 2, "control character U+0000"),
])
def test_text_that_is_not_utf8_is_refused(tmp_path, loader, data, line, needle):
    refused(tmp_path, data, line=line, needle=needle)


# 10. files that are not policies
def test_a_directory_or_device_is_refused(tmp_path):
    with pytest.raises(GateInputError) as info:
        load_policy(tmp_path)
    assert "not a regular file" in info.value.render()
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    start = time.perf_counter()
    with pytest.raises(GateInputError) as info:
        load_policy(link)
    assert time.perf_counter() - start < FAST and "not a regular file" in info.value.render()


@pytest.mark.parametrize("spec", ["a\0b", "x" * 5000])
def test_impossible_file_names_are_refused(spec):
    with pytest.raises(GateInputError):
        load_policy(spec)


# properties
YAMLISH = st.sampled_from([
    "[", "]", "{", "}", ":", ": ", "- ", "-", ",", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "!!x ", "!!python/name:os.system ",
    "!t ", "\n", "\n  ", "\n    ", "  ", "#", "'", '"', "|", ">", "---\n", "...", "%YAML 1.1\n", "~", "null", "yes",
    "1", "-1", "0.5", "1e3", ".inf", "-.inf", ".nan", "0x1F", "0o7", "1:30", "2024-01-01", "=", "\t", "\ufeff",
    "version: 1\n", "rules:\n", "  - metric: accuracy\n", "    max_drop: ", "    min: ", "metric", "max", "accuracy",
    "candidates:", "latency:", "targets:", "data:", "path: ", "groups: ",
])


def _parse_or_refuse(text: str) -> None:
    try:
        parse_policy(text, "p.yaml", Path("/repo"))
    except GateInputError as err:
        assert err.path == "p.yaml"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_is_a_policy_or_an_input_error(text):
    _parse_or_refuse(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAMLISH, max_size=60).map("".join))
def test_any_yamlish_text_is_a_policy_or_an_input_error(text):
    _parse_or_refuse(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAMLISH, max_size=40).map("".join))
def test_any_yamlish_text_is_a_policy_or_an_input_error_in_pure_python(text):
    original = policy_module._PolicyLoader
    policy_module._PolicyLoader = policy_module._PurePolicyLoader
    try:
        _parse_or_refuse(text)
    finally:
        policy_module._PolicyLoader = original


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=0))
def test_a_finite_bound_round_trips(bound):
    policy = parse_policy(HEAD + f"rules:\n  - metric: accuracy\n    max_drop: {bound!r}\n", "p.yaml", Path("/r"))
    assert policy.rules[0].bound == bound and math.isfinite(policy.rules[0].bound)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_finite_absolute_bound_round_trips(bound):
    policy = parse_policy(HEAD + f"rules:\n  - metric: accuracy\n    min: {bound!r}\n", "p.yaml", Path("/r"))
    assert policy.rules[0].bound == bound
