"""Rules of the test tree itself.

CI's second pass hides the shared slides and reruns only the tests marked ``shared_data``, which
``tests/conftest.py`` marks by the fixtures they use. That is sound only if no test reaches the shared
slides another way: this module checks it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# The only files that may read the slides' location: where it is defined, and the fixtures of SHARED_FIXTURES.
LOCATION_READERS = {"helpers/__init__.py", "conftest.py", "service/conftest.py"}
HAND_BUILT_PATH = re.compile(r"""\.\./shared|/\s*["']shared["']\s*/""")  # "../shared", root / "shared" / ...


def _shared_fixtures() -> set[str]:
    """SHARED_FIXTURES of tests/conftest.py, read from its source (a conftest is not imported as a module)."""
    tree = ast.parse((TESTS / "conftest.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SHARED_FIXTURES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("tests/conftest.py defines no SHARED_FIXTURES")


def _sources() -> dict[str, str]:
    sources = {p.relative_to(TESTS).as_posix(): p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py")}
    return {name: text for name, text in sources.items() if name not in LOCATION_READERS | {"test_layout.py"}}


def test_only_the_marked_fixtures_read_the_shared_slides_location() -> None:
    offenders = [
        name for name, text in _sources().items() if re.search(r"\bSHARED_SLIDES\b|ACMIL_TEST_SLIDES", _code_only(text))
    ]
    assert not offenders, f"use the shared_slides fixture instead of the slides' location in {offenders}"


def test_no_test_builds_the_shared_path_by_hand() -> None:
    offenders = [name for name, text in _sources().items() if HAND_BUILT_PATH.search(_code_only(text))]
    assert not offenders, f"{offenders} build a path to ../shared: use the shared_slides fixture"


def test_the_fixtures_reading_the_location_are_the_marked_ones() -> None:
    """Every fixture in a location reader that uses the location is in SHARED_FIXTURES, so its tests are marked."""
    for name in LOCATION_READERS - {"helpers/__init__.py"}:
        tree = ast.parse((TESTS / name).read_text(encoding="utf-8"))
        imports = (a for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names)
        alias = {a.asname or a.name for a in imports if a.name == "SHARED_SLIDES"}  # under whatever name
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            if used & alias:
                assert fn.name in _shared_fixtures(), f"{name}: fixture {fn.name} reads the slides' location"


def _code_only(text: str) -> str:
    """The source without comments and docstrings (they may name ../shared freely)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
    return ast.unparse(tree)
