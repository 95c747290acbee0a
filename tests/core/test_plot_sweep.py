"""launch/plot_sweep.py: the final value of a metric against a config field, one line per group,
seeds averaged, reference curves from named functions, one-line errors; and the docs figures it
drew state the command that drew them.

Run directories are fabricated (config.json, metrics.jsonl) in the layouts the trainer writes:
sibling runs `x_s<seed>` and multi-seed workdirs `W/s<seed>/`.
"""

import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

import pytest
from PIL import Image

from jaxrepr.errors import ConfigError, DataError, MissingFileError
from launch import _run_tables, plot_sweep
from tests.core.helpers import REPO

SCRIPT = os.path.join(REPO, "launch", "plot_sweep.py")


def _run(path, final, p_hat=0.5, objective="symile", seed=0, steps=10, d_v=5, last_step=None):
  """A run whose test/accuracy ends at `final` after a higher value earlier (so the final value is
  neither the first nor the best)."""
  path.mkdir(parents=True)
  config = {
    "seed": seed,
    "data": {"d_v": d_v, "p_hat": p_hat},
    "model": {"objective": objective},
    "train": {"steps": steps},
  }
  (path / "config.json").write_text(json.dumps(config))
  last = steps if last_step is None else last_step
  rows = [{"step": 1, "test/accuracy": final + 0.3}, {"step": last, "test/accuracy": final}]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _sweep(tmp_path, pattern="*", **kwargs):
  args = {"x": "data.p_hat", "metric": "test/accuracy", **kwargs}
  return plot_sweep.sweep(_run_tables.expand([str(tmp_path / pattern)]), **args)


def _table(lines):
  """{group: [(x, {seed: value})]}."""
  return {g: [(p.x, dict(p.values)) for p in points] for g, points in lines.items()}


def test_each_run_gives_its_final_value_at_its_x_and_points_go_in_numeric_x_order(tmp_path):
  for p_hat, final in ((10.0, 0.1), (2.0, 0.2), (0.5, 0.3)):
    _run(tmp_path / f"r_p{p_hat}", final, p_hat=p_hat)
  lines, skipped = _sweep(tmp_path)
  assert _table(lines) == {"": [(0.5, {0: 0.3}), (2.0, {0: 0.2}), (10.0, {0: 0.1})]}
  assert not skipped


def test_runs_are_grouped_by_the_group_field_and_seeds_of_a_point_averaged(tmp_path):
  finals = {("symile", 0.5): (0.4, 0.5, 0.9), ("clip", 0.5): (0.1, 0.2, 0.3)}
  finals[("symile", 1.0)] = (1.0, 0.8, 0.9)
  for (objective, p_hat), values in finals.items():
    for seed, value in enumerate(values):
      _run(tmp_path / f"{objective}_p{p_hat}_s{seed}", value, p_hat, objective, seed)
  # a multi-seed workdir's seeds join the point of the same config
  _run(tmp_path / "more_clip" / "s7", 0.6, 1.0, "clip", seed=7)
  _run(tmp_path / "more_clip" / "s8", 0.0, 1.0, "clip", seed=8)
  lines, _ = _sweep(tmp_path, group="model.objective")
  assert list(lines) == ["clip", "symile"]  # first seen, in the sorted directory order
  assert [p.x for p in lines["symile"]] == [0.5, 1.0]
  for (objective, p_hat), values in finals.items():
    (point,) = [p for p in lines[objective] if p.x == p_hat]
    assert point.values == dict(enumerate(values))
    assert point.mean == pytest.approx(statistics.mean(values))
    assert point.std == pytest.approx(statistics.stdev(values))
  (clip_1,) = [p for p in lines["clip"] if p.x == 1.0]
  assert clip_1.values == {7: 0.6, 8: 0.0} and clip_1.mean == pytest.approx(0.3)
  # without a group field the objectives' seeds would be one point: they differ in the objective
  with pytest.raises(ConfigError, match=r"differ in model\.objective"):
    _sweep(tmp_path)


def test_the_xor_bayes_reference_is_the_data_module_function_at_each_run_config(tmp_path):
  for d_v in (1, 5):
    for p_hat in (0.0, 0.25, 1.0):
      _run(tmp_path / f"d{d_v}_p{p_hat}", 0.5, p_hat=p_hat, d_v=d_v)
  lines, _ = _sweep(tmp_path, group="data.d_v")
  curves = plot_sweep.reference_curves("xor_bayes", lines, "data.p_hat")
  # 2^-d + p (1 - 2^-d), written out here rather than through the module's function
  assert curves == {
    f"Bayes optimal (data.d_v={d})": [(p, 2.0**-d + p * (1 - 2.0**-d)) for p in (0.0, 0.25, 1.0)]
    for d in (1, 5)
  }
  one, _ = _sweep(tmp_path, "d5_*")
  assert list(plot_sweep.reference_curves("xor_bayes", one, "data.p_hat")) == ["Bayes optimal"]


def test_errors_name_the_missing_field_metric_or_runs_and_the_unfinished_run(tmp_path):
  _run(tmp_path / "a_s0", 0.5)
  with pytest.raises(ConfigError, match=r"a_s0/config.json has no field 'data.p_hatt'.*'p_hat'"):
    _sweep(tmp_path, x="data.p_hatt")
  with pytest.raises(ConfigError, match=r"no field 'optim.lr' \(the config has \["):
    _sweep(tmp_path, group="optim.lr")
  with pytest.raises(DataError, match=r"has no 'test/top1'"):
    _sweep(tmp_path, metric="test/top1")
  with pytest.raises(MissingFileError, match="no run directory matches"):
    _sweep(tmp_path, "nothing_*")
  with pytest.raises(MissingFileError, match="no run directories"):
    plot_sweep.sweep([], "data.p_hat", "test/accuracy")
  (tmp_path / "elsewhere" / "bare").mkdir(parents=True)
  with pytest.raises(MissingFileError, match=r"bare has no config.json"):
    _sweep(tmp_path, "elsewhere/bare")
  _run(tmp_path / "b_s1", 0.7, seed=1, last_step=5)  # stopped at step 5 of 10
  with pytest.raises(_run_tables.IncompleteRun, match=r"b_s1: test/accuracy last logged at step 5"):
    _sweep(tmp_path, "?_s*")
  lines, skipped = _sweep(tmp_path, "?_s*", skip=True)
  assert _table(lines) == {"": [(0.5, {0: 0.5})]} and [w for w, _ in skipped] == [
    str(tmp_path / "b_s1")
  ]
  with pytest.raises(DataError, match="no finished run"):
    _sweep(tmp_path, "b_s1", skip=True)
  _run(tmp_path / "c_s0", 0.6)  # seed 0 a second time at the same point
  with pytest.raises(DataError, match=r"c_s0 and .*a_s0 are both seed 0 of one point"):
    _sweep(tmp_path, "[ac]_s0")


def _png_text(path) -> dict:
  with Image.open(path) as image:
    return dict(image.text)


def _cli(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=REPO)


def test_the_command_writes_a_png_that_states_the_command_and_errors_are_one_line(tmp_path):
  for objective, values in (("symile", (0.9, 0.8)), ("clip", (0.1, 0.3))):
    for seed, value in enumerate(values):
      _run(tmp_path / f"{objective}_s{seed}", value, objective=objective, seed=seed)
  out = tmp_path / "sweep.png"
  args = [f"--runs={tmp_path}/*", "--x=data.p_hat", "--group=model.objective"]
  args += ["--label=clip=pairwise CLIP", "--reference=xor_bayes", "--spread=std", f"--out={out}"]
  res = _cli(*args)
  assert res.returncode == 0, res.stderr
  text = _png_text(out)
  assert text["Description"].startswith("python launch/plot_sweep.py ")
  assert "'--label=clip=pairwise CLIP'" in text["Description"]
  assert re.fullmatch(r"commit [0-9a-f]+\+?|commit \?", text["Comment"])
  assert "pairwise CLIP: x, mean, min, max, seeds\n  0.5\t0.2\t0.1\t0.3\t2" in res.stdout
  bad = _cli(*args[:-1], "--label=clap=x", f"--out={out}")
  assert bad.returncode == 1
  assert bad.stderr.strip() == (
    "error: --label='clap=x' names no group; the groups are ['clip', 'symile']"
  )


def test_every_figure_drawn_by_plot_sweep_is_in_the_docs_beside_its_command_and_commit():
  """A docs PNG that plot_sweep wrote is shown in a docs page, which states the command embedded
  in the PNG (writing that very file) and, just before it, the commit embedded with it."""
  pages = {p: open(p).read() for p in glob.glob(os.path.join(REPO, "docs", "*.md"))}
  drawn = 0
  for png in sorted(glob.glob(os.path.join(REPO, "docs", "*.png"))):
    text = _png_text(png)
    cmd, commit = text.get("Description", ""), text.get("Comment", "").removeprefix("commit ")
    if not cmd.startswith("python launch/plot_sweep.py "):
      continue
    drawn += 1
    name = os.path.basename(png)
    assert f"--out=docs/{name}" in shlex.split(cmd), f"{name} was written by {cmd!r}"
    shown = [p for p, text in pages.items() if f"]({name})" in text]
    assert shown, f"docs/{name} is not shown in any docs page"
    for page in shown:
      assert cmd in pages[page], f"{page} does not state the command of {name}: {cmd}"
      before = pages[page][max(0, pages[page].index(cmd) - 400) : pages[page].index(cmd)]
      assert f"commit `{commit}`" in before, f"{page}: no commit `{commit}` before {name}'s command"
  assert drawn >= 1


@pytest.mark.parametrize("spread", ["minmax", "std"])
def test_the_figure_draws_the_means_the_spread_and_the_reference(tmp_path, monkeypatch, spread):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  finals = {0.0: (0.1, 0.2, 0.6), 1.0: (0.5, 0.7, 0.9)}
  for p_hat, values in finals.items():
    for seed, value in enumerate(values):
      _run(tmp_path / f"clip_p{p_hat}_s{seed}", value, p_hat, "clip", seed)
  lines, _ = _sweep(tmp_path, group="model.objective")
  refs = plot_sweep.reference_curves("xor_bayes", lines, "data.p_hat")
  monkeypatch.setattr(plt, "close", lambda fig: None)  # keep the figure to look at
  out = tmp_path / "f.png"
  labels = {"clip": "pairwise CLIP"}
  plot_sweep.plot(lines, refs, "data.p_hat", "test/accuracy", labels, spread, False, "", out, {})
  (ax,) = plt.gcf().axes
  drawn = {line.get_label(): line for line in ax.get_lines()}
  drawn |= {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: the label is the bars'
  means = [statistics.mean(v) for v in finals.values()]
  assert list(drawn["pairwise CLIP (3 seeds)"].get_xdata()) == [0.0, 1.0]
  assert list(drawn["pairwise CLIP (3 seeds)"].get_ydata()) == pytest.approx(means)
  assert list(drawn["Bayes optimal"].get_ydata()) == pytest.approx([2.0**-5, 1.0])
  if spread == "minmax":
    (band,) = ax.collections
    ys = {(round(x, 6), round(y, 6)) for x, y in band.get_paths()[0].vertices}
    for x, values in finals.items():
      assert {(x, min(values)), (x, max(values))} <= ys
  else:
    (bars,) = [c for c in ax.collections if len(c.get_segments()) == 2]
    stds = [statistics.stdev(v) for v in finals.values()]
    ends = [y for s in bars.get_segments() for y in (s[0][1], s[1][1])]
    assert ends == pytest.approx([y for m, s in zip(means, stds) for y in (m - s, m + s)])
  plt.close("all")
  assert out.read_bytes()[:4] == b"\x89PNG"
