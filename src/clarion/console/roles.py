"""Who may open which console page, and which API roles an operator acts with.

An operator has one role: one of the API keys' roles (``approval.ROLES``), or ``support``, which reads the send
record, re-sends non-marketing messages and adds suppressions, nothing else. The use cases check API roles, so a
``support`` operator acts with ``sender``'s (whose re-send right is exactly "non-marketing"); the console offers
it only the support pages, which is where the narrower rights are kept."""

from __future__ import annotations

from collections.abc import Mapping

from clarion.domain import approval, errors

SUPPORT = "support"
ROLES = (*approval.ROLES, SUPPORT)

OVERVIEW = "overview"
RECORD = "record"  # the send record and a message's timeline
TEMPLATES = "templates"  # the template list, editor, versions and review
AUDIENCES = "audiences"  # the segment builder and ID lists
CAMPAIGNS = "campaigns"  # campaigns: create, estimate, approve, run, results
PROVIDERS = "providers"  # provider accounts, their health and routes (admin)
POLICIES = "policies"  # windows, caps, the safety valve, keyword lists, suppressions
AUDIT = "audit"  # the audit log (admin)
API_KEYS = "api_keys"  # API keys (admin)
OPERATORS = "operators"  # the operators' accounts (admin)
ACCOUNT = "account"  # the signed-in operator's own password
PAGES: Mapping[str, tuple[str, ...]] = {
    OVERVIEW: approval.ROLES,
    RECORD: ROLES,
    TEMPLATES: ("admin", "editor", "approver"),
    AUDIENCES: ("admin", "editor", "sender"),
    CAMPAIGNS: approval.ROLES,
    PROVIDERS: ("admin",),
    POLICIES: ("admin", "editor"),
    AUDIT: ("admin",),
    API_KEYS: ("admin",),
    OPERATORS: ("admin",),
    ACCOUNT: ROLES,
}
#: the console's pages in the navigation's order, with the route each opens (the account page is linked from the
#: operator's name instead)
NAVIGATION = (
    (OVERVIEW, "/console/"),
    (RECORD, "/console/record"),
    (TEMPLATES, "/console/templates"),
    (AUDIENCES, "/console/audiences"),
    (CAMPAIGNS, "/console/campaigns"),
    (PROVIDERS, "/console/providers"),
    (POLICIES, "/console/policies"),
    (AUDIT, "/console/audit"),
    (API_KEYS, "/console/api-keys"),
    (OPERATORS, "/console/operators"),
)


def check(role: str) -> str:
    """``role`` if known; ``InvalidInput`` naming the field ``role`` otherwise."""
    if role not in ROLES:
        raise errors.InvalidInput(
            f"unknown role {role!r}; roles are {', '.join(ROLES)}",
            code="unknown_role",
            details={"field": "role", "allowed": list(ROLES)},
        )
    return role


def may_open(role: str, page: str) -> bool:
    return role in PAGES[page]


def api_roles(role: str) -> tuple[str, ...]:
    """The roles the use cases are asked with on this operator's behalf."""
    return ("sender",) if role == SUPPORT else (role,)


def sees_addresses(role: str) -> bool:
    """Addresses are shown in full to admins only; everyone else reads them masked (138****8000)."""
    return role == "admin"


def home(role: str) -> str:
    """Where a login lands: the first page of the navigation this role may open."""
    return next(path for page, path in NAVIGATION if may_open(role, page))
