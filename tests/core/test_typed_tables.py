"""No results table in the docs is typed by hand beyond the ones listed here.

A docs table of measured figures is written by a command into a generated block
(`<!-- NAME:start -->` ... `<!-- NAME:end -->`, launch/summarize_runs.py and the other writers) or
between bench.py's `benchmarks-table` markers. Any other table of docs/*.md or README.md whose body
holds a figure (a decimal, a percentage or a mean +- std) must be listed below: as a table quoted
from a paper, as a table of settings, or as a table of results typed or pasted by hand that is still
to be regenerated (TYPED_RESULTS, which only shrinks). A new such table turns this red, and so does
a listed one that is gone (take it out of the list)."""

import glob
import os
import re

from launch import _bench_tables, _doc_tables
from tests.core.helpers import REPO

# (page, the header row's start) of each table allowed outside generated blocks.
PAPER_TABLES = {
  ("docs/lpn.md", "| training \\ inference | Grad 0 |"),  # the LPN paper's Table 1
}
SETTINGS_TABLES = {
  ("docs/lpn.md", "| field | values (default first) |"),
}
# Measured results typed or pasted by hand before the docs tables were generated; each is to be
# regenerated from kept runs (launch/keep_runs.py) with the command beside it.
TYPED_RESULTS = {
  ("docs/noprop.md", "| MNIST-5k, 160 steps x 128 |"),
  ("docs/noprop.md", "| Fashion-MNIST, 160 steps x 128 |"),
  ("docs/set_tasks.md", "| task (command) | steps x batch | here | paper |"),
}
ALLOWED = PAPER_TABLES | SETTINGS_TABLES | TYPED_RESULTS
_FIGURE = re.compile(r"\d\.\d|\d%|\+-|±")
_BENCH_TABLE = re.compile(
  re.escape(_bench_tables.DOCS_MARKERS[0]) + ".*?" + re.escape(_bench_tables.DOCS_MARKERS[1]),
  re.DOTALL,
)


def tables_of_figures(page: str, text: str) -> set[tuple[str, str]]:
  """(page, header) of each table of `text` outside generated blocks whose body rows hold a figure;
  the header is shortened to the start ALLOWED lists for it, where it lists the table."""
  for body in _doc_tables.blocks(text, page).values():
    text = text.replace(body, "")
  text = _BENCH_TABLE.sub("", text)
  found = set()
  for table in re.findall(r"(?m)(?:^\|.*\n?)+", text):
    header, *body = table.splitlines()
    if any(_FIGURE.search(row) for row in body[1:]):  # body[0] is the |---| rule
      listed = [(p, h) for p, h in ALLOWED if p == page and header.startswith(h)]
      found.add(listed[0] if listed else (page, header))
  return found


def _pages():
  return sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))) + [os.path.join(REPO, "README.md")]


def test_the_check_finds_tables_of_figures_outside_generated_blocks_only():
  typed = "| run | acc |\n|---|---|\n| dt | 95.7 |\n"
  this = {("docs/p.md", "| run | acc |")}
  assert tables_of_figures("docs/p.md", f"text\n\n{typed}\nmore") == this
  for figure in ("57%", "0.9 +- 0.1", "3 ± 1"):
    assert tables_of_figures("docs/p.md", typed.replace("95.7", figure)) == this, figure
  assert tables_of_figures("docs/p.md", f"<!-- t:start -->\n{typed}<!-- t:end -->\n") == set()
  begin, end = _bench_tables.DOCS_MARKERS
  bench = f"{begin}\n{typed}{end}\n"
  assert tables_of_figures("docs/p.md", bench) == set()
  assert tables_of_figures("docs/p.md", typed.replace("95.7", "957")) == set()  # no figure
  header_only = "| run | 0.5 |\n|---|---|\n| dt | yes |\n"
  assert tables_of_figures("docs/p.md", header_only) == set()


def test_no_results_table_is_typed_by_hand_beyond_the_ones_listed():
  found = set()
  for path in _pages():
    found |= tables_of_figures(os.path.relpath(path, REPO), open(path).read())
  new = found - ALLOWED
  assert not new, (
    "write these with a command into a generated block (launch/summarize_runs.py "
    f"--into=PAGE --marker=NAME), or list a paper's or a settings table here: {sorted(new)}"
  )
  gone = ALLOWED - found
  assert not gone, f"regenerated or removed: take them out of this file's lists: {sorted(gone)}"
