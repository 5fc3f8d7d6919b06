"""Event rules: their files (:mod:`.spec`) and webhook delivery (:mod:`.webhook`).

The rules themselves (patterns, actions, templates) are pure domain, in
:mod:`bridgehead.domain.rules` and :mod:`bridgehead.domain.patterns`.
"""

from bridgehead.rules.spec import (
    check_workflows,
    load_rules,
    parse_rules,
    rules_json_schema,
    validate_rule,
)
from bridgehead.rules.webhook import Delivery, deliver

__all__ = [
    "Delivery",
    "check_workflows",
    "deliver",
    "load_rules",
    "parse_rules",
    "rules_json_schema",
    "validate_rule",
]
