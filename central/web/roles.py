"""One rule book for who may do what in the web application (ACCESS). Every view asks here.

    viewer      case officer: finds and asks to view their own unit's sessions
    supervisor  sees their unit's sessions, views without approval (by default), decides requests, the fleet,
                their unit's statistics
    legal       legal office (法制): every unit's sessions, views without approval (by default), the audit, the
                statistics; legal holds; evidence exports, each with a supervisor's approval
    records     records keeper: every unit's sessions; viewing needs approval; the audit, the statistics; retention
                classes, legal holds and removal after expiry (central/retention.py)
    technician  the fleet page and its alerts only: no sessions
    admin       accounts and the audit; every unit's sessions listed; viewing needs approval; the statistics
Rooms and their bookings (ROOM): everyone who searches sees the rooms page of the units they see; case officers
and supervisors book their own unit's rooms, administrators every room.
`web.exempt_roles` says which roles view without an approval; every view is audited either way.
"""

from __future__ import annotations

from central import retention
from central.config import WebConfig

ALL_UNITS = frozenset({"legal", "records", "admin"})
SEARCHERS = frozenset({"viewer", "supervisor", "legal", "records", "admin"})
APPROVERS = frozenset({"supervisor"})
FLEET = frozenset({"supervisor", "technician", "admin"})
AUDITORS = frozenset({"legal", "records", "admin"})
STATS = frozenset({"supervisor", "legal", "records", "admin"})
ACCOUNTS = frozenset({"admin"})
SIGNERS = frozenset({"viewer", "supervisor"})
"""Officers: they sign their unit's written explanations of a break that could not be resolved (INTERRUPT)."""
LABELS = {"viewer": "办案民警 case officer", "supervisor": "审核领导 supervisor", "legal": "法制部门 legal office",
          "records": "档案管理 records keeper", "technician": "技术保障 technician", "admin": "系统管理 administrator"}


def may_search(role: str) -> bool:
    return role in SEARCHERS


def sees_unit(role: str, own_unit: str, unit: str) -> bool:
    """Whether this role, of `own_unit`, may find and list a session of `unit`."""
    return role in ALL_UNITS or (role in SEARCHERS and unit == own_unit)


def needs_approval(role: str, web: WebConfig) -> bool:
    return role not in web.exempt_roles


def may_decide(role: str, own_unit: str, unit: str) -> bool:
    """Whether this role may approve or refuse a request to view a session of `unit`."""
    return role in APPROVERS and unit == own_unit


def may_see_fleet(role: str) -> bool:
    return role in FLEET


def sees_every_alert(role: str) -> bool:
    """Technicians and administrators look after every room; a supervisor sees their own unit's alerts."""
    return role in FLEET and role not in APPROVERS


def sees_alert(role: str, own_unit: str, unit: str) -> bool:
    return sees_every_alert(role) or (role in FLEET | SEARCHERS and unit == own_unit)


def may_audit(role: str) -> bool:
    return role in AUDITORS


def may_see_stats(role: str) -> bool:
    """The statistics (STATS): a supervisor's cover their own unit (`sees_unit`), the others' every unit."""
    return role in STATS


def may_manage_accounts(role: str) -> bool:
    return role in ACCOUNTS


def may_sign_explanation(role: str, own_unit: str, unit: str) -> bool:
    """Whether this account may sign (or upload the signed paper form of) the written explanation of a break in
    a session of `unit`: an officer of that unit, in their own account."""
    return role in SIGNERS and bool(unit) and unit == own_unit


RETENTION_REPORT = frozenset({"records", "legal", "supervisor", "admin"})
EXPORTERS = frozenset({"legal"})
"""The legal office makes every copy for review or litigation (ACCESS, ARCHIVE), with a supervisor's approval."""


def may_see_retention(role: str) -> bool:
    """The retention report: a supervisor's covers their own unit (`sees_unit`), the others' every unit."""
    return role in RETENTION_REPORT


def may_decide_retention(role: str) -> bool:
    """Raise a class, link a case, ask for or confirm a lowering (central/retention.py says the rest)."""
    return role in retention.DECIDERS


def may_hold(role: str) -> bool:
    return role in retention.HOLDERS


def may_remove(role: str) -> bool:
    return role in retention.REMOVERS


def may_export(role: str) -> bool:
    return role in EXPORTERS


BOOKERS = frozenset({"viewer", "supervisor"})
"""Officers book their own unit's rooms (and change and cancel those bookings); administrators every room."""


def may_see_rooms(role: str) -> bool:
    """The rooms page: each room's day of the units this role sees (`sees_unit`)."""
    return role in SEARCHERS


def may_book(role: str, own_unit: str, unit: str) -> bool:
    """Whether this account may make, change or cancel a booking of a room of `unit` ("" for a room whose unit
    central does not know: administrators only)."""
    return role == "admin" or (role in BOOKERS and bool(unit) and unit == own_unit)
