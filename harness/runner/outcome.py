"""Verdicts: a cell's raw result (pass/fail/notrun) combined with the knownfail and flapping lists.

| raw    | knownfail match | flapping match | verdict     | fails the run |
|--------|-----------------|----------------|-------------|---------------|
| pass   | no              | any            | pass        | no            |
| pass   | yes             | any            | uxsuccess   | yes           |
| fail   | no              | no             | fail        | yes           |
| fail   | yes             | no             | xfail       | no            |
| fail   | any             | yes            | flapping    | no            |
| notrun | -               | -              | notrun      | no            |
| missing| -               | -              | fail        | yes           |

"missing" is a requirement absent under CI (see harness.scenario.requires): the lists cannot excuse it,
since a known failure of the cell says nothing about the peer the run lacked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .lists import ExpectedList, list_id

FAILING = {"fail", "uxsuccess"}


@dataclass
class CellReport:
    id: str                         # tcp/001[ipv4]
    scenario: str                   # tcp/001
    area: str
    stem: str                       # 001.ipv4 (results file names)
    labels: dict[str, str]
    section: str
    verdict: str                    # pass fail notrun xfail uxsuccess flapping expunged
    reason: str = ""
    details: list[str] = field(default_factory=list)
    duration: float = 0.0
    list_reason: str = ""           # the knownfail/flapping line that applied
    order: int = 0                  # position in the selection (reports are listed in this order)
    startup: dict[str, float] = field(default_factory=dict)  # seconds to the first packet/request

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING


def verdict(raw: str, cell_id: str, section: str, knownfail: ExpectedList, flapping: ExpectedList) -> tuple[str, str]:
    lid = list_id(cell_id, section)
    if raw == "notrun":
        return "notrun", ""
    if raw == "missing":
        return "fail", ""
    flap = flapping.match(lid)
    known = knownfail.match(lid)
    if raw == "pass":
        if known:
            return "uxsuccess", f"{known.reason or 'in knownfail'} ({known.where})"
        return "pass", ""
    if flap:
        return "flapping", f"{flap.reason or 'in flapping'} ({flap.where})"
    if known:
        return "xfail", f"{known.reason or 'in knownfail'} ({known.where})"
    return "fail", ""
