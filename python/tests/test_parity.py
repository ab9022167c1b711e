"""Every public method of the Rust `RuntimeHandle` has a Python counterpart on `Node`, or an
entry in `hermes_p2p.EXCLUDED` saying why not."""

from __future__ import annotations

import os
import pathlib
import re

import hermes_p2p

SRC = pathlib.Path(os.environ.get("HERMES_SRC", pathlib.Path(__file__).resolve().parents[2] / "src"))
PUB_FN = re.compile(r"^\s*pub\s+(?:async\s+)?fn\s+([a-z_][a-z0-9_]*)", re.M)


def impl_blocks(text: str):
    """Bodies of `impl RuntimeHandle { ... }` blocks (braces matched, strings ignored)."""
    for m in re.finditer(r"impl\s+RuntimeHandle\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            i += 1
        yield text[m.end():i]


def rust_methods() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.rs"):
        for body in impl_blocks(path.read_text()):
            names.update(PUB_FN.findall(body))
    return names


def missing(methods: set[str]) -> list[str]:
    return sorted(
        name for name in methods
        if name not in hermes_p2p.EXCLUDED
        and not hasattr(hermes_p2p.Node, hermes_p2p.ALIASES.get(name, name))
    )


def test_every_runtime_handle_method_has_a_python_counterpart():
    methods = rust_methods()
    # The parser sees the handle (a broken parser would make this test pass vacuously).
    assert {"send", "identity", "open_stream", "incoming_streams", "shutdown"} <= methods
    assert len(methods) >= 30
    assert missing(methods) == [], "RuntimeHandle methods without a Python counterpart"


def test_exclusions_and_aliases_name_real_methods():
    methods = rust_methods()
    assert sorted(set(hermes_p2p.EXCLUDED) - methods) == []
    assert sorted(set(hermes_p2p.ALIASES) - methods) == []
    assert all(reason.strip() for reason in hermes_p2p.EXCLUDED.values())


def test_a_new_method_is_reported():
    assert missing({"send", "a_method_added_later"}) == ["a_method_added_later"]
