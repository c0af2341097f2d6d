"""Which test produces each reason code end to end: the contract test produces the rest,
and checks that together they are every ``Reason``."""

from __future__ import annotations

#: Reasons of the Italian calling rules, produced end to end by tests/system/test_calling_rules_e2e.py.
CALLING_RULE_REASONS = {
    "caller_id_missing",
    "caller_id_not_declared",
    "caller_id_wrong_prefix",
    "outside_calling_hours",
    "timezone_unknown",
    "frequency_cap",
    "recent_silent_call",
}
#: Reasons of rules the core policy switches off, produced end to end (and
#: validated) by tests/system/test_italian_law_e2e.py and tests/system/test_supply_chain_e2e.py.
ITALIAN_LAW_ONLY_REASONS = {"campaign_silent_rate", "operator_not_mandated", "caller_id_foreign_origin", "request"}
#: Reasons of the US pack and of policy sets (this worker runs one Italian pack), produced end to end
#: (and validated) by tests/system/test_us_e2e.py.
US_PACK_REASONS = {
    "no_policy_for_country",
    "national_dnc",
    "state_dnc",
    "number_reassigned",
    "ebr_transaction",
    "ebr_inquiry",
}
