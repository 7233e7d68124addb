"""Run every ``benchmarks/bench_*.py`` and write their rows to ``docs/performance.md``.

Each script runs in its own process and prints ``| benchmark | metric | value | baseline |
ratio |`` rows (plus lines of detail). This collects the rows of all of them into one markdown
table, with the machine they ran on and how long each took, and writes it between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of ``docs/performance.md`` (the
rest of that page, the explanations, is kept). A script that fails or runs past its time limit
gets a row saying so, and the tail of its output in the details.

The default run keeps to about ten minutes on a 2-core machine: scripts whose defaults take
longer get smaller sizes (``QUICK`` below); ``--full`` runs every script with its own defaults,
or its full sizes where its defaults are reduced (``FULL``: the Dask scale benchmark). With
``--block NAME`` the table goes between ``<!-- bench-NAME:start -->`` and ``<!-- bench-NAME:end
-->`` instead, so a long run of one script (``make bench SCALE=full``) and the main table
do not overwrite each other.

    python benchmarks/run_all.py [--full] [--only gridsearch throughput] [--skip word]
        [--timeout 900] [--output docs/performance.md] [--block scale]

``make bench`` runs it; ``make bench SCALE=full`` runs the scale benchmark at full size.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def markers(block: str | None) -> tuple[str, str]:
    """The markers of the page's main table, or of a named block of its own (``--block``)."""
    return (
        (START, END)
        if block is None
        else (f"<!-- bench-{block}:start -->", f"<!-- bench-{block}:end -->")
    )


# Arguments of the default (quick) run, for scripts whose own defaults take minutes.
QUICK = {
    "bench_word.py": ["--words", "100000"],
    "bench_dask.py": ["--docs", "500", "--repeat", "2"],
    "bench_gpu.py": [],  # on a CPU it runs a few documents only
}
# Arguments of a --full run, for scripts whose own defaults are the reduced sizes.
FULL = {
    "bench_scale.py": ["--full"],  # 100,000 and 1,000,000 documents on Dask
}
ROW = re.compile(r"^\|(.*\|){5}\s*$")


def rows_of(output: str) -> list[str]:
    """The table rows a script printed, without headers and separators."""
    out = []
    for line in output.splitlines():
        line = line.strip()
        if ROW.match(line) and not line.startswith(("| benchmark ", "|---")):
            out.append(line)
    return out


def details_of(output: str) -> list[str]:
    """The lines of detail a script printed (not table rows, not progress bars)."""
    keep = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith("|") or "\r" in line or "it/s]" in line:
            continue
        if line.startswith(("Loading weights", "Writing model", "Warning:", "warnings.warn")):
            continue
        keep.append(line)
    return keep


def run(script: Path, args: list[str], timeout: float) -> tuple[float, int | str, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        code: int | str = done.returncode
        output = done.stdout + ("\n" + done.stderr if done.returncode else "")
    except subprocess.TimeoutExpired as exc:
        code = f"timed out after {timeout:.0f} s"
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    return time.perf_counter() - start, code, output


def machine() -> str:
    sys.path.insert(0, str(HERE))
    from _common import machine as describe

    return describe()


def render(results, started: str, total: float, full: bool, block: str | None = None) -> str:
    start, end = markers(block)
    command = (
        " ".join(["python benchmarks/run_all.py", *sys.argv[1:]])
        if block
        else (f"python benchmarks/run_all.py{' --full' if full else ''}")
    )
    lines = [
        start,
        "",
        f"Run {started} ({'full' if full else 'default'} sizes, {total / 60:.1f} min): "
        f"`{command}`.",
        "",
        f"Machine: {machine()}.",
        "",
        "| benchmark | metric | value | baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, (_, code, output, _) in results.items():
        found = rows_of(output)
        lines += found
        if code != 0 or not found:
            why = f"exit code {code}" if isinstance(code, int) else code
            lines.append(f"| {name} | did not finish: {why} | | | |")
    lines += ["", "<details><summary>Details printed by each script</summary>", ""]
    for name, (seconds, code, output, args) in results.items():
        lines.append(f"**{name}** {' '.join(args)} ({seconds:.0f} s)")
        lines.append("")
        detail = details_of(output)
        if code != 0:
            detail = detail[-15:]
        lines += [f"    {d}" for d in detail] or ["    (no details)"]
        lines.append("")
    lines += ["</details>", "", end]
    return "\n".join(lines)


def write(path: Path, block: str, name: str | None = None) -> None:
    """Replace the block between the markers, or create the page around it."""
    start, end = markers(name)
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if start in text and end in text:
            head, rest = text.split(start, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + block + tail, encoding="utf-8")
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
        return
    path.write_text(f"# Performance\n\n{block}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every script with its defaults")
    parser.add_argument("--only", nargs="*", default=None, help="names, e.g. gridsearch word")
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--timeout", type=float, default=900, help="seconds per script")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument(
        "--block",
        default=None,
        help="write between <!-- bench-BLOCK:start/end --> instead of the main table "
        "(e.g. --only scale --full --block scale keeps the full-size scale run apart)",
    )
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    name = lambda p: p.stem.removeprefix("bench_")  # noqa: E731
    if args.only:
        scripts = [s for s in scripts if name(s) in args.only]
    scripts = [s for s in scripts if name(s) not in args.skip]
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    results = {}
    begin = time.perf_counter()
    for script in scripts:
        extra = FULL.get(script.name, []) if args.full else QUICK.get(script.name, [])
        print(f"running {script.name} {' '.join(extra)}", flush=True)
        seconds, code, output = run(script, extra, args.timeout)
        results[script.name] = (seconds, code, output, extra)
        for line in rows_of(output) or [f"  {script.name}: exit {code}"]:
            print(f"  {line}", flush=True)
        print(f"  ({seconds:.0f} s)", flush=True)
    block = render(results, started, time.perf_counter() - begin, args.full, args.block)
    write(Path(args.output), block, args.block)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
