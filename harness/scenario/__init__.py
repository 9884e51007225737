"""Scenario files: format, loader, matrix expansion, operation registry and per-cell execution.

    from harness.scenario import load_tree, operation, OpError
    scenarios = load_tree("scenarios")          # ScenarioError lists `file:line:col: message` problems
    for cell in scenarios[0].cells(): print(cell.id)   # tcp/002[ipv6-loss]

The format (documented in scenarios/README.md) and the registry (harness.scenario.registry) are the
two things users touch; cells run isolated through harness.scenario.cellproc.run_isolated.
"""
from .context import Context, OpError, StepFailed
from .loader import load_file, load_tree, scenario_files
from .marks import ScenarioError
from .model import Cell, Scenario
from .registry import Operation, discover, operation
from .requires import unmet

__all__ = ["Cell", "Context", "OpError", "Operation", "Scenario", "ScenarioError", "StepFailed", "discover",
           "load_file", "load_tree", "operation", "scenario_files", "unmet"]
