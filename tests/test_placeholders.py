"""The small parsers of recipe strings: placeholders, ${VAR} references and durations."""

from __future__ import annotations

import pytest

from bootstrap.recipe.durations import format_duration, parse_duration
from bootstrap.recipe.placeholders import (
    KNOWN,
    PlaceholderError,
    escape,
    expand,
    expand_env_only,
    find_placeholders,
    missing_env_vars,
)

VALUES = {"persist": "/p", "scratch": "/s", "name": "exp", "run": "/p/runs/exp"}
ENV = {"HOME": "/home/u", "EMPTY": "", "BRACES": "a{b}c"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("{scratch}/data", "/s/data"),
        ("{persist}{name}", "/pexp"),
        ("${HOME}/x", "/home/u/x"),
        ("${NOPE:-fallback}", "fallback"),
        ("${NOPE:-}", ""),
        ("${EMPTY:-used when empty}", "used when empty"),  # as in the shell
        ("${EMPTY}", ""),
        ("${HOME:-unused}", "/home/u"),
        ("${NOPE:-{scratch}/d}", "/s/d"),
        ("${NOPE:-${ALSO_NOPE:-deep}}", "deep"),
        ("${BRACES}", "a{b}c"),  # a value is never read as a template
        ("{{literal}}", "{literal}"),
        ('{{"lr": 0.1}}', '{"lr": 0.1}'),
        ("${{HOME}}", "${HOME}"),
        ("a}}b{{c", "a}b{c"),
        ("$HOME and $", "$HOME and $"),  # only ${...} reads the environment
        ("${NOPE:-{{x}", "{x"),  # in a default, {{ is a brace and the first } ends it
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VALUES, ENV) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{foo}",
            "unknown placeholder {foo}; known: {persist}, {scratch}, {run}, {repo}, "
            "{ckpt}, {name}, {data0} {data1} ... (each data item's folder) "
            "({checkpoint} in run.resume only)",
        ),
        ("{scrtch}", "unknown placeholder {scrtch}; did you mean {scratch}?"),
        (
            "{persist}/data/{TODO}.tar",
            "{TODO} is still here: `bootstrap init` left it where it could not decide; "
            "replace it with the value the comment above it asks for",
        ),
        ("{checkpoint}", "placeholder {checkpoint} has no value here"),
        (
            "${NOPE}/x",
            "environment variable NOPE is not set; set it, or give a default: ${NOPE:-value}",
        ),
        ("a{b", "stray '{' in 'a{b': placeholders look like {name}; write {{ for a literal brace"),
        (
            "{ name }",
            "stray '{' in '{ name }': placeholders look like {name}; write {{ for a literal brace",
        ),
        (
            "{a.b}",
            "stray '{' in '{a.b}': placeholders look like {name}; write {{ for a literal brace",
        ),
        ("a}b", "stray '}' in 'a}b': write }} for a literal brace"),
        ("${}", "malformed ${...} in '${}': write ${VAR} or ${VAR:-default}"),
        ("${A-x}", "malformed ${...} in '${A-x}': write ${VAR} or ${VAR:-default}"),
        ("${A", "malformed ${...} in '${A': write ${VAR} or ${VAR:-default}"),
        ("${A:-x", "unclosed ${...} in '${A:-x': end the default with }"),
    ],
)
def test_expand_errors(text: str, message: str) -> None:
    with pytest.raises(PlaceholderError) as caught:
        expand(text, VALUES, ENV)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)  # plan.py catches ValueError


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("no placeholders", set()),
        ("{scratch}/{name}/{scratch}", {"scratch", "name"}),
        ("{{persist}}", set()),
        ("${X:-{ckpt}} {checkpoint}", {"ckpt", "checkpoint"}),
        ("{unknown_one}", {"unknown_one"}),
    ],
)
def test_find_placeholders(text: str, names: set[str]) -> None:
    assert find_placeholders(text) == names


def test_known_names() -> None:
    assert {"persist", "scratch", "run", "repo", "ckpt", "name", "checkpoint"} == KNOWN


def test_missing_env_vars_respects_defaults_and_empty_values() -> None:
    text = "${A}${B:-x}${C:-${D}}${EMPTY}${A}"
    assert missing_env_vars(text, {"EMPTY": ""}) == ["A", "D"]
    assert missing_env_vars(text, {"A": "1", "C": "3", "EMPTY": ""}) == []


@pytest.mark.parametrize(
    "text",
    ["{scratch}/${HOME}", "${BRACES}/{name}", "{{x}} ${NOPE:-{persist}}", "${EMPTY:-{run}}", "a}}"],
)
def test_expand_env_only_keeps_a_template(text: str) -> None:
    partial = expand_env_only(text, ENV)
    assert expand(partial, VALUES, {}) == expand(text, VALUES, ENV)
    assert expand_env_only("{scratch}/${HOME}", ENV) == "{scratch}//home/u"
    assert expand_env_only("${BRACES}", ENV) == "a{{b}}c"


def test_escape_round_trips() -> None:
    for text in ["{a}", "}{", "plain", "${X}"]:
        assert expand(escape(text), {}, {}) == text


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("90s", 90.0),
        ("1h", 3600.0),
        ("11h30m", 41400.0),
        ("1h30m15s", 5415.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("0.5h", 1800.0),
        ("1D2H", 93600.0),
        ("11:30:00", 41400.0),
        ("1:02:03", 3723.0),
        ("05:00", 300.0),
        (" 60s ", 60.0),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "soon", "500ms", "1m1h", "1h1h", "-5", "1.5.5s", "10:61", "h", "1 week", -1, True]
)
def test_parse_duration_rejects_with_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(("bad duration", "expected a duration"))
    if value not in ("10:61", -1):
        assert "HH:MM:SS" in message and "11h30m" in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (0.5, "0.5s"),
        (59.6, "1m00s"),
        (125, "2m05s"),
        (3723, "1h02m03s"),
        (41400, "11h30m00s"),
        (90000, "25h00m00s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 61, 3599, 3600, 3723, 86399, 86400 * 3 + 7])
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
