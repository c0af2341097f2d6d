"""``./dev mutants`` (tests/mutants.py) finds every comparison, and only comparisons."""

from __future__ import annotations

from tests.mutants import Mutant, mutants

PYTHON = """def f(a, b):
    # a < b in a comment
    s = "a <= b in a string"
    return a < b and b >= 2 and a != b and a == b and b <= 3 or a > 1
"""

LUA = """if t > now - keep then  -- t < x in a comment
  if n >= limit[2] and a ~= b and a == b then return old end
  while lo <= hi do lo = lo + 1 end
  if v < want then end
end
"""


def test_every_python_comparison_and_nothing_else() -> None:
    found = [(m.line, m.operator) for m in mutants("f.py", PYTHON)]
    assert found == [(4, "<"), (4, ">="), (4, "<="), (4, ">")]


def test_every_lua_comparison_outside_comments() -> None:
    found = [(m.line, m.operator) for m in mutants("f.lua", LUA)]
    assert found == [(1, ">"), (2, ">="), (3, "<="), (4, "<")]


def test_a_mutant_flips_one_operator_to_its_boundary_twin() -> None:
    text = "x = a < b\ny = a < b\n"
    assert Mutant("f.py", 2, 6, "<").apply(text) == "x = a < b\ny = a <= b\n"
    assert Mutant("f.lua", 1, 6, "<").apply(text) == "x = a <= b\ny = a < b\n"
    assert str(Mutant("f.py", 2, 6, "<")) == "f.py:2:6 < -> <="
