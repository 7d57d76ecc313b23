"""The test suite's own rules: test helpers come from the tests/support package, never from another test module
or a conftest (importing a conftest a second time duplicates its fixtures), and test basenames are unique
(tests/ has no __init__.py, so pytest imports test modules by basename)."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_tests_import_helpers_only_from_tests_support() -> None:
    test_modules = {p.stem for p in TESTS.rglob("*.py") if "support" not in p.parts}
    wrong = [f"{path.relative_to(TESTS)}: {name}" for path in sorted(TESTS.rglob("*.py"))
             for name in _imported_modules(path)
             if (name.startswith("tests.") and not name.startswith("tests.support"))
             or name.split(".")[0] in test_modules]
    assert not wrong, "import these from tests.support instead:\n" + "\n".join(wrong)


def test_test_basenames_are_unique() -> None:
    counts = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [name for name, n in counts.items() if n > 1]
