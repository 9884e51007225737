"""`wirecheck check`: the command line of the scenario runner (harness.runner holds the logic)."""
from __future__ import annotations

import sys

import click

from harness.runner.run import Options, run_check


@click.command("check", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-g", "groups", multiple=True, metavar="GROUP[,GROUP]", help="Include groups (area/group = one area); default quick.")
@click.option("-x", "exclude_groups", multiple=True, metavar="GROUP[,GROUP]", help="Exclude groups.")
@click.option("-e", "exclude_tests", multiple=True, metavar="TEST[,TEST]", help="Exclude tests or cells (shown as [expunged]).")
@click.option("-E", "exclude_file", metavar="FILE", help="Exclude the tests listed in FILE (one per line, # comments).")
@click.option("-X", "exclude_names", multiple=True, metavar="NAME", help="Exclude the tests listed in the file NAME inside each area directory (bare NNN per line).")
@click.option("-r", "randomize", is_flag=True, help="Randomize the order of the cells (a new order each iteration).")
@click.option("--exact-order", is_flag=True, help="Run the tests in the order given on the command line.")
@click.option("--seed", type=int, metavar="N", help="Seed of -r's order (printed in the header) to repeat a run.")
@click.option("-i", "iterate", type=click.IntRange(1), metavar="N", help="Run the list N times.")
@click.option("-I", "iterate_stop", type=click.IntRange(1), metavar="N", help="Run the list N times, stop after an iteration with a failure.")
@click.option("-L", "loop_on_fail", type=click.IntRange(0), default=0, metavar="N", help="Rerun a failing cell N more times and print its aggregate results.")
@click.option("-T", "timestamps", is_flag=True, help="Print each cell's start and end times.")
@click.option("-d", "dump", is_flag=True, help="Dump each cell's output (.full) to stdout.")
@click.option("-s", "sections", multiple=True, metavar="SECTION", help="Run only this config section (repeatable).")
@click.option("-S", "skip_sections", multiple=True, metavar="SECTION", help="Skip this config section (repeatable).")
@click.option("-j", "jobs", type=click.IntRange(1, 256), default=1, show_default=True, help="Cells in parallel, each in its own socket directory.")
@click.option("-n", "list_only", is_flag=True, help="List the selected cells, run nothing.")
@click.option("-b", "brief", is_flag=True, help="Brief summary (no Ran:/Not run: lines).")
@click.option("-R", "report_fmt", type=click.Choice(["xunit", "xunit-quiet"]), help="xunit is always written; xunit-quiet leaves out captured output.")
@click.option("--scenarios", default="scenarios", show_default=True, metavar="DIR", help="Scenario tree (<area>/<NNN>.yaml).")
@click.option("--results", default="results", show_default=True, metavar="DIR", help="Results base (RESULT_BASE).")
@click.option("--config", metavar="FILE", help="Sections file (default DIR/sections.conf).")
@click.option("--knownfail", multiple=True, metavar="PATH", help="Known-failure list file or directory (default DIR/knownfail, DIR/knownfail.d).")
@click.option("--flapping", multiple=True, metavar="PATH", help="Flapping list file or directory (default DIR/flapping, DIR/flapping.d).")
@click.option("--progress/--plain", default=None, help="Rich progress (default: on a terminal outside CI).")
@click.option("--operations", "list_operations", is_flag=True, help="List the registered step operations and exit.")
@click.argument("tests", nargs=-1)
def check(groups, exclude_groups, exclude_tests, exclude_file, exclude_names, randomize, exact_order, seed, iterate,
          iterate_stop, loop_on_fail, timestamps, dump, sections, skip_sections, jobs, list_only, brief,
          report_fmt, scenarios, results, config, knownfail, flapping, progress, list_operations, tests) -> None:
    """Run scenario cells, xfstests-style: `wirecheck check` runs the quick group.

    TESTS are ids (tcp/001), cell ids (tcp/001[ipv6]) or globs ('tcp/0??', '*/001'). Exit status: 0 all
    passed (known failures allowed), 1 a failure or an unexpected success or an interrupted run, 2 bad
    input (schema errors, unknown operations, duplicate ids, missing files) before anything ran.
    """
    if list_operations:
        from harness.scenario import registry

        ops = registry.discover()
        width = max(len(n) for n in ops)
        for name in sorted(ops):
            click.echo(f"{name:<{width}}  {ops[name].help}  [{ops[name].module}]")
        click.echo(f"{'parallel':<{width}}  Run a list of steps at once; ends when all have.  [executor]")
        pending = ", ".join(sorted(registry.PENDING_NAMESPACES))
        click.echo(f"(namespaces of capabilities not landed yet, gated as not run: {pending})")
        return
    opts = Options(tests=list(tests), groups=list(groups), exclude_groups=list(exclude_groups),
                   exclude_tests=list(exclude_tests), exclude_file=exclude_file, sections=list(sections),
                   skip_sections=list(skip_sections), jobs=jobs, scenarios=scenarios, results=results,
                   config=config, knownfail=list(knownfail) or None, flapping=list(flapping) or None,
                   list_only=list_only, brief=brief, progress=progress, xunit_quiet=report_fmt == "xunit-quiet",
                   exclude_names=list(exclude_names), randomize=randomize, exact_order=exact_order, seed=seed,
                   iterations=iterate_stop or iterate or 1, iterate_stop=bool(iterate_stop),
                   loop_on_fail=loop_on_fail, timestamps=timestamps, dump=dump)
    if iterate and iterate_stop:
        raise click.UsageError("-i and -I are mutually exclusive")
    sys.exit(run_check(opts))
