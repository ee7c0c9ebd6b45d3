"""Which snapshots a retention policy keeps, applied per VM, as restic's users know it.

Within each VM (same kind, name and uuid), snapshots are taken newest first. ``last`` keeps
the newest N; ``hourly``/``daily``/``weekly``/``monthly``/``yearly`` keep the newest snapshot
of each of the N most recent hours (days, ISO weeks, months, years) that have one; ``tags``
keeps every snapshot carrying one of them. A snapshot is kept when any rule keeps it; a
policy with no rule at all is refused (it would forget everything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RepositoryError
from .snapshot import Snapshot

BUCKETS: dict[str, Callable] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.last or self.tags or any(getattr(self, k) for k in BUCKETS))


@dataclass
class Decision:
    keep: list[Snapshot] = field(default_factory=list)
    forget: list[Snapshot] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> rules


def vm_key(s: Snapshot) -> tuple:
    return (s.vm.get("kind"), s.vm.get("name"), s.vm.get("uuid"))


def apply(snapshots: list[Snapshot], policy: Policy) -> Decision:
    if policy.empty:
        raise RepositoryError("no retention rule given (--keep-last, --keep-daily, ...): "
                              "refusing to forget every snapshot")
    decision = Decision()
    groups: dict[tuple, list[Snapshot]] = {}
    for s in snapshots:
        groups.setdefault(vm_key(s), []).append(s)
    for group in groups.values():
        group.sort(key=lambda s: (s.time, s.id), reverse=True)
        reasons: dict[str, list[str]] = {s.id: [] for s in group}
        for s in group[:policy.last]:
            reasons[s.id].append("last")
        for rule, bucket in BUCKETS.items():
            wanted, seen = getattr(policy, rule), []
            for s in group:
                if len(seen) >= wanted:
                    break
                b = bucket(s.time)
                if b not in seen:
                    seen.append(b)
                    reasons[s.id].append(rule)
        for s in group:
            if set(s.tags) & set(policy.tags):
                reasons[s.id].append("tag")
            (decision.keep if reasons[s.id] else decision.forget).append(s)
        decision.reasons.update(reasons)
    return decision
