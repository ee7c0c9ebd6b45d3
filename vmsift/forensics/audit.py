"""`vmsift audit`: check each VM's configuration against the rules of `audit_rules`.

A VM's configuration becomes `Facts`: lower-cased key -> value (the .vmx as VMware reads it,
last line winning; a vm.cfg flattened to the same shape), with the line each key is on, plus
a few keys derived from other files (the disks' createType, see `audit_rules`). Each rule's
predicate runs on every key its pattern matches and yields `Finding`s. `to_sarif` writes
findings as a SARIF 2.1.0 log.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..datastore.vm import VmRecord
from ..errors import Problem, VmsiftError
from ..formats import vmcfg as vmcfg_mod
from ..formats import vmx as vmx_mod
from .audit_rules import RULES, Rule
from .target import Target

SEVERITIES = ("high", "medium", "low", "info")
SARIF_LEVEL = {"high": "error", "medium": "warning", "low": "note", "info": "note"}
SARIF_SCHEMA = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                "sarif-schema-2.1.0.json")
_DEVICE = re.compile(r"^((?:[a-z_]+\d+(?::\d+)?)|usb|ehci|usb_xhci|sound)\.", re.I)


@dataclass
class Facts:
    """One VM configuration as the rules see it."""

    config: str                      # "vmx" | "vm.cfg"
    path: str                        # the configuration file, as the user named the source
    values: dict[str, str]           # lower-cased key -> value
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Finding:
    rule: Rule
    vm: str | None
    path: str
    key: str
    value: str | None                # None: the key is absent
    line: int | None = None

    @property
    def message(self) -> str:
        shown = "absent" if self.value is None else f"{self.value!r}"
        return f"{self.key} = {shown}: {self.rule.why}"

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {"rule": r.id, "severity": r.severity, "vm": self.vm, "path": self.path,
                "line": self.line, "key": self.key, "value": self.value,
                "expected": expected_text(r), "why": r.why, "source": r.source}


def _norm(value: Any) -> str:
    """A value for comparison: booleans as true/false, other text lower-cased and trimmed."""
    flag = vmx_mod.parse_bool(str(value))
    return str(value).strip().lower() if flag is None else "true" if flag else "false"


def _int(value: str | None) -> int | None:
    return vmx_mod.parse_int(value)


def expected_text(rule: Rule) -> str:
    """What a rule asks for, for people."""
    p, e = rule.predicate, rule.expected
    if p == "one_of":
        return " or ".join(map(str, e))
    if p == "not_in":
        return "not " + " / ".join(map(str, e))
    if p == "in_range":
        return str(e[0]) if e[0] == e[1] else f"{e[0]}..{e[1]}"
    if p == "absent":
        return "not set"
    if p == "any_present":
        return "at least one of " + rule.key.replace("|", ", ")
    if p == "needs":
        return "when true, also " + str(e).replace("|", " or ")
    return f"not matching {e}"


# --- predicates: (rule, value or None, facts) -> True when the value is a finding ----------

def _one_of(rule: Rule, value: str | None, facts: Facts) -> bool:
    value = rule.default if value is None else value
    return value is None or _norm(value) not in {_norm(e) for e in rule.expected}


def _not_in(rule: Rule, value: str | None, facts: Facts) -> bool:
    value = rule.default if value is None else value
    return value is not None and _norm(value) in {_norm(e) for e in rule.expected}


def _in_range(rule: Rule, value: str | None, facts: Facts) -> bool:
    number = _int(rule.default if value is None else value)
    low, high = rule.expected
    return number is None or not low <= number <= high


def _absent(rule: Rule, value: str | None, facts: Facts) -> bool:
    return value is not None


def _needs(rule: Rule, value: str | None, facts: Facts) -> bool:
    on = _norm(rule.default if value is None else value) == "true"
    return on and not any(facts.values.get(k, "").strip()
                          for k in str(rule.expected).split("|"))


def _not_matches(rule: Rule, value: str | None, facts: Facts) -> bool:
    return value is not None and re.search(str(rule.expected), value) is not None


PREDICATES: dict[str, Callable[[Rule, str | None, Facts], bool]] = {
    "one_of": _one_of, "not_in": _not_in, "in_range": _in_range, "absent": _absent,
    "needs": _needs, "not_matches": _not_matches,
    "any_present": lambda rule, value, facts: True,  # reached only when none is present
}


def _device_absent(facts: Facts, key: str) -> bool:
    m = _DEVICE.match(key)
    return bool(m) and _norm(facts.values.get(f"{m[1].lower()}.present", "")) == "false"


def check(facts: Facts, vm: str | None = None,
          rules: tuple[Rule, ...] = RULES) -> Iterator[Finding]:
    """Every finding of ``rules`` on one VM configuration."""
    for rule in rules:
        if rule.config != facts.config:
            continue
        patterns = rule.key.split("|")
        literal = [p for p in patterns if not any(c in p for c in "*?[")]
        present = sorted(k for k in facts.values
                         if any(fnmatch.fnmatchcase(k, p) for p in patterns))
        if rule.predicate == "any_present":
            if not present:
                yield Finding(rule, vm, facts.path, rule.key.replace("|", ", "), None)
            continue
        # keys to look at: those present, and the literal ones (an absent key has a default)
        for key in dict.fromkeys([*present, *literal]):
            if _device_absent(facts, key) and not key.endswith(".present"):
                continue
            value = facts.values.get(key)
            if PREDICATES[rule.predicate](rule, value, facts):
                yield Finding(rule, vm, facts.path, key, value, facts.lines.get(key))


# --- facts from configuration files --------------------------------------------------------

def vmx_facts(conf: vmx_mod.Vmx, path: str, vm: VmRecord | None = None) -> Facts:
    """A parsed .vmx; with its `VmRecord`, each disk's descriptor createType too."""
    facts = Facts("vmx", path, conf.dictionary.effective(),
                  lines={ln.key.lower(): ln.number for ln in conf.dictionary.lines
                         if ln.key is not None})
    for disk in vm.disks if vm else ():
        create = disk.facts.get("create_type")
        if create:
            facts.values[f"{disk.device.lower()}.createtype"] = create
    return facts


def vmcfg_facts(cfg: vmcfg_mod.VmCfg, path: str) -> Facts:
    """A parsed vm.cfg flattened to keys: scalar statements, ``disk<N>.*``, ``vif<N>.*`` and
    the VNC settings (top level or from ``vfb``), ``vnc`` set to 1 when a VNC console is on."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for s in cfg.statements:
        values[s.name.lower()] = "" if s.value is None else str(s.value)
        lines[s.name.lower()] = s.line
    for d in cfg.disks:
        values[f"disk{d.index}.mode"] = d.mode or ""
        values[f"disk{d.index}.backend"] = d.backend or ""
        lines[f"disk{d.index}.mode"] = lines[f"disk{d.index}.backend"] = lines.get("disk", 0)
    for i, vif in enumerate(cfg.vifs):
        for k, v in vif.items():
            values[f"vif{i}.{k.lower()}"] = v or ""
    vnc = cfg.vnc()
    for k, v in vnc.items():
        values.setdefault(k.lower(), "" if v is None else str(v))
        lines.setdefault(k.lower(), lines.get("vfb", 0))
    if any((fb.get("type") or "vnc") == "vnc" for fb in cfg.vfbs) or \
            _norm(values.get("vnc", "0")) == "true":
        values["vnc"] = "1"
    return Facts("vm.cfg", path, values, lines={k: v for k, v in lines.items() if v})


def facts_of(target: Target, vm: VmRecord) -> Facts:
    """The facts of a VM of ``target`` (its configuration read again, as bytes)."""
    from ..datastore.vm import MAX_CONFIG

    path = target.shown(vm.config)
    with target.volume.open(vm.config) as src:
        data = src.read_all(MAX_CONFIG, "configuration file")
    if vm.kind == "oraclevm":
        return vmcfg_facts(vmcfg_mod.parse(data, path), path)
    return vmx_facts(vmx_mod.parse(data, path), path, vm)


@dataclass
class AuditResult:
    findings: list[Finding]
    vms: list[dict[str, Any]]        # name, kind, config path, number of findings
    problems: list[Problem]


def audit(target: Target) -> AuditResult:
    """Every finding on every VM of ``target``; a VM whose configuration cannot be read is
    named in ``problems`` and the others are still checked."""
    problems: list[Problem] = []
    findings: list[Finding] = []
    vms = []
    for vm in target.vms(problems):
        problems += [Problem(f"{target.shown(vm.config)}: {w}") for w in vm.warnings]
        try:
            found = list(check(facts_of(target, vm), vm.name))
        except VmsiftError as e:
            problems.append(Problem.of(e, f"{target.shown(vm.config)} not audited: "))
            continue
        findings += found
        vms.append({"name": vm.name, "kind": vm.kind, "config": target.shown(vm.config),
                    "findings": len(found)})
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f.rule.severity], f.path, f.rule.id, f.key))
    return AuditResult(findings, vms, problems)


# --- SARIF -----------------------------------------------------------------------------------

def to_sarif(findings: list[Finding], version: str, rules: tuple[Rule, ...] = RULES
             ) -> dict[str, Any]:
    """A SARIF 2.1.0 log of one run: every rule in the driver, one result per finding."""
    index = {r.id: i for i, r in enumerate(rules)}
    driver = {
        "name": "vmsift audit", "version": version,
        "rules": [{"id": r.id, "name": r.id.title().replace("-", ""),
                   "shortDescription": {"text": r.why},
                   "fullDescription": {"text": f"{r.why} (expected: {expected_text(r)})"},
                   "help": {"text": f"Source: {r.source}"},
                   "defaultConfiguration": {"level": SARIF_LEVEL[r.severity]},
                   "properties": {"severity": r.severity, "config": r.config, "key": r.key,
                                  "source": r.source}} for r in rules],
    }
    results = []
    for f in findings:
        region = {"startLine": f.line} if f.line else None
        location: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.path)}}
        if region:
            location["region"] = region
        results.append({
            "ruleId": f.rule.id, "ruleIndex": index[f.rule.id],
            "level": SARIF_LEVEL[f.rule.severity], "message": {"text": f.message},
            "locations": [{"physicalLocation": location,
                           "logicalLocations": [{"name": f.vm or "?", "kind": "object"}]}],
            "properties": {"key": f.key, "value": f.value, "expected": expected_text(f.rule)},
        })
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0",
            "runs": [{"tool": {"driver": driver}, "results": results}]}


def _uri(path: str) -> str:
    from urllib.parse import quote

    return quote(path.replace("\\", "/"), safe="/:")
