"""The report of a multi-stage distillation run (`stages.run`): the teacher's last evaluation
read back from its metrics, the markdown table of report.json, and report.png."""

from __future__ import annotations

import json
import os


def last_eval(workdir: str) -> dict[str, float]:
  """The last 'test/...' metrics a trainer run wrote to metrics.jsonl ({} if none)."""
  path, out = os.path.join(workdir, "metrics.jsonl"), {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        found = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("test/")}
        out = found or out
  return out


def markdown_table(rows: list[dict], recursive: bool) -> str:
  """report.json's `table`: one row per stage; recursive runs add the ratio, rate and bound."""
  head = "| stage | params (nonzero) | sparsity | accuracy | KL(teacher || student) |"
  sep = "|---|---|---|---|---|"
  if recursive:
    head += " ratio | 1 - alpha | (1-alpha)^k KL_0 |"
    sep += "---|---|---|"
  lines = [head, sep]
  for r in rows:
    e = r["eval"]
    kl = e.get("kl_reference", 0.0)
    line = (
      f"| {r['name']} | {r['nonzero_params']:,} | {r['kernel_sparsity']:.3f} | "
      f"{e.get('accuracy', float('nan')):.4f} | {kl:.4g} |"
    )
    if recursive:
      ratio = r.get("ratio")
      if "bound" in r:
        line += (
          f" {'-' if ratio is None else f'{ratio:.3f}'} | {r['rate']:.3g} | {r['bound']:.4g} |"
        )
      else:
        line += " - | - | - |"
    lines.append(line)
  return "\n".join(lines)


def plot(rows: list[dict], recursive: bool, alpha: float | None, path: str) -> None:
  """report.png: accuracy and KL to the teacher per stage (recursive runs: the bound too)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  students = [r for r in rows if r["name"] != "teacher"]
  xs = list(range(len(students))) if recursive else list(range(1, len(students) + 1))
  fig, (ax_acc, ax_kl) = plt.subplots(1, 2, figsize=(10, 4))
  ax_acc.plot(xs, [r["eval"]["accuracy"] for r in students], "o-", label="student")
  teacher = [r for r in rows if r["name"] == "teacher"]
  if teacher and "accuracy" in teacher[0]["eval"]:
    ax_acc.axhline(teacher[0]["eval"]["accuracy"], color="gray", ls="--", label="teacher")
  ax_acc.set_xlabel("generation k" if recursive else "stage")
  ax_acc.set_ylabel("test accuracy")
  ax_acc.legend()
  kls = [max(r["eval"]["kl_reference"], 1e-12) for r in students]
  ax_kl.semilogy(xs, kls, "o-", label="KL(p_teacher || q_k)")
  if recursive:
    ax_kl.semilogy(
      xs,
      [max(r["bound"], 1e-12) for r in students],
      "k--",
      label=f"(1 - alpha)^k KL_0, alpha = {alpha:g}",
    )
  ax_kl.set_xlabel("generation k" if recursive else "stage")
  ax_kl.set_ylabel("KL on held-out data (nats)")
  ax_kl.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
