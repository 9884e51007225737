"""`wirecheck check`: the xfstests-style scenario runner: console lines, summary, results
tree and exit status as fstests' `check` prints them.

Modules: config (sections file), select (-g/-x/-e/-E/TESTS), lists (knownfail/flapping), outcome
(verdicts), report (results tree, check.log, check.time, xunit), console (lines, progress),
matrix (per-area tables in terminal, Markdown, JSON), run (the loop, -j, Ctrl-C), cli (click command).
"""
