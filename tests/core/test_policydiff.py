"""``callguard policy diff OLD NEW``: changes between two policy files in words."""

from __future__ import annotations

from pathlib import Path

from callguard.core.policydiff import diff_policies
from callguard.core.policyfile import load_policy, parse_policy, shipped_policy
from tests.conftest import CORE_POLICY, cli
from tests.paths import ROOT

SHIPPED = ROOT / "src" / "callguard" / "policies" / "it.toml"
STRICT = """
base = "it"
version = "acme-it/strict"
[rules.frequency_cap]
limits = [{ window = "24h", max = 1 }, { window = "30d", max = 6 }]
[rules.caller_id]
require_prefix = true
prefixes = { statistical = "+390844" }
[rules.internal_dnc]
purposes = ["marketing", "survey", "statistical"]
[rules.silent_calls]
block_days = 14
[rules.opposition_register]
max_age_days = 10
[rules.calling_hours]
saturday = "never"
local_holidays = [
  { prefix = "+3906", date = "06-29", name = "Santi Pietro e Paolo (Roma)" },
  { prefix = "+39051", date = "10-04", name = "San Petronio (Bologna)" },
]
[rules.operator_mandated]
purposes = ["marketing", "survey", "statistical", "service"]
"""


def test_every_kind_of_change_in_words():
    changes = diff_policies(shipped_policy("it"), parse_policy(STRICT))
    assert "operator_mandated: now also applies to service calls" in changes
    assert "internal_dnc: no longer applies to service calls" in changes
    assert "opposition_register: days a register result stays valid: 15 -> 10" in changes
    assert "caller_id: the 0844/0843 prefix (or a geographic or mobile number) is required: no -> yes" in changes
    assert "caller_id: caller-ID prefix for statistical calls changes from +390843 to +390844" in changes
    assert "calling_hours: calling window on Saturdays: 10:00-19:00 -> never" in changes
    added = "calling_hours: local holiday added: San Petronio (Bologna) on 10-04 for numbers starting +39051"
    assert added in changes
    removed = "calling_hours: local holiday removed: Sant'Ambrogio (Milano) on 12-07 for numbers starting +3902"
    assert removed in changes
    assert (
        "frequency_cap: call limits change from 3 per 24 hours, 10 per 30 days to 1 per 24 hours, 6 per 30 days"
        in changes
    )
    assert "silent_calls: days a callee is blocked after a silent call: 7 -> 14" in changes
    assert not any("Santi Pietro" in change for change in changes)  # kept
    assert len(changes) == 16


def test_rules_switched_on_and_off_and_no_difference():
    core = load_policy(CORE_POLICY)
    off = diff_policies(shipped_policy("it"), core)
    assert "frequency_cap: switched off (it applied to marketing, survey, statistical calls)" in off
    assert "caller_id: switched off (it applied to marketing, survey, statistical, service calls)" in off
    on = diff_policies(core, shipped_policy("it"))
    assert "directory: switched on (for marketing, survey, statistical calls)" in on
    assert len(on) == len(off) == 7
    assert diff_policies(core, core) == []


def test_the_command(tmp_path: Path):
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT)
    env: dict[str, str] = {}
    result = cli(env, "policy", "diff", str(SHIPPED), str(strict))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"policy it/2026-11-30 ({SHIPPED}) -> acme-it/strict ({strict})"
    assert lines[-1] == "16 change(s)"
    same = cli(env, "policy", "diff", str(SHIPPED), str(SHIPPED))
    assert same.returncode == 0 and same.stdout.splitlines()[-1] == "no differences: the two files decide alike"
    broken = tmp_path / "broken.toml"
    broken.write_text('base = "it"\n[rules.frequency_cap]\nlimits = 3\n')
    bad = cli(env, "policy", "diff", str(SHIPPED), str(broken))
    assert bad.returncode == 2 and bad.stderr.startswith("callguard: invalid policy file ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_two_sets_are_compared_country_by_country(tmp_path: Path):
    """The shipped set against one whose US pack is stricter and whose other
    countries are denied fewer purposes: the US callees' changes, said once."""
    default = SHIPPED.parent / "default.toml"
    (tmp_path / "us-late.toml").write_text(
        'base = "us"\nversion = "us-late"\n[rules.calling_hours]\nwindow = "09:00-20:00"\n'
    )
    (tmp_path / "set.toml").write_text(
        'version = "acme/1"\n[countries]\nIT = "it"\nVA = "it"\nUS = "us-late.toml"\n'
        '[other_countries]\ndeny = ["marketing", "survey"]\npack = "it"\n'
    )
    changes = diff_policies(load_policy(default), load_policy(tmp_path / "set.toml"))
    assert changes == [
        "other countries: no_policy_for_country for marketing, survey, statistical calls -> for marketing, survey calls",
        "US callees: calling_hours: calling window: 08:00-21:00 -> 09:00-20:00",
    ]
    shown = cli({}, "policy", "check", str(tmp_path / "set.toml"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].endswith(
        "ok, set acme/1 (IT, VA: it/2026-11-30; US: us-late; other countries: it/2026-11-30, denying marketing, survey)"
    )
