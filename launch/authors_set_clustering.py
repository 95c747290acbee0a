"""Time the Set Transformer authors' own clustering train step on CPU, for the comparison in
docs/benchmarks.md ("Set Transformer clustering against the authors' code").

    git clone https://github.com/juho-lee/set_transformer /path/to/set_transformer
    /path/to/torch-env/bin/python launch/authors_set_clustering.py \
        --repo=/path/to/set_transformer --threads=1,2 --rounds=3 --steps=60

Runs with a Python that has PyTorch (not a dependency of this project; this script imports neither
JAX nor jaxrepr) and the authors' modules from --repo, unchanged: the loop body of their run.py on
CPU, one timed step = draw N ~ U{300..599}, sample 10 mixtures of 4 Gaussians
(`MixtureOfMVNs.sample`), forward, -log-likelihood, backward, Adam step, with the same model
(`SetTransformer(2, 4, 4)`: ISAB x2, PMA, SAB x2, 423,172 parameters) as
`configs/set_clustering.py`. Each thread count (`torch.set_num_threads`) runs in its own process,
in --rounds interleaved rounds after 5 untimed steps; the median over rounds of each process's
mean step time (the step cost depends on N) and CPU seconds per step are written to
--out/authors.json under `set_transformer_clustering@<t>threads`.

When --out is the checkout's bench/, the table between the `authors-set-clustering` markers of
docs/benchmarks.md is rewritten: the authors' rows beside jaxrepr's rows of the same step in
bench/results.json (`launch/bench.py --config=configs/set_clustering.py --layouts=1,auto
--rounds=3 --batches=60 --steps=60 --name=set_clustering_b10_n300_599`), and each row's speed-up
over the authors' fastest thread count. `--table_only` rewrites that table from the JSON files
without timing anything.
"""

import argparse
import json
import re
import os
import subprocess
import sys
import time


def _one(repo: str, threads: int, steps: int) -> dict:
  """One process's measurement (run in a child: a thread count is fixed once torch starts)."""
  import numpy as np
  import torch

  torch.set_num_threads(threads)
  sys.path.insert(0, repo)
  from mixture_of_mvns import MixtureOfMVNs  # the authors' modules
  from models import SetTransformer
  from mvn_diag import MultivariateNormalDiag

  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  mvn = MultivariateNormalDiag(2)
  mog = MixtureOfMVNs(mvn)
  net = SetTransformer(2, 4, 4)  # run.py: dim_input D=2, K=4 outputs, dim_output 2*D
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

  def step():
    n = int(rng.integers(300, 600))  # run.py: np.random.randint(N_min=300, N_max=600)
    x = mog.sample(10, n, 4)
    optimizer.zero_grad()
    loss = -mog.log_prob(x, *mvn.parse(net(x)))
    loss.backward()
    optimizer.step()

  for _ in range(5):
    step()
  times = []
  cpu0 = time.process_time()
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return dict(
    step_s=float(np.mean(times)),
    cpu_s_per_step=(time.process_time() - cpu0) / steps,
    params=sum(p.numel() for p in net.parameters()),
    torch_version=torch.__version__,
  )


OURS = re.compile(r"^set_clustering_b10_n300_599@(\d+)dev$")
BLOCK = "authors-set-clustering"


def comparison_lines(authors: dict, results: dict) -> list[str]:
  """The authors' rows and jaxrepr's layout rows of the same step, with the speed-up of each over
  the authors' fastest row (median step times over interleaved rounds)."""
  theirs = {k: v for k, v in authors.items() if k.startswith("set_transformer_clustering@")}
  ours = {k: v for k, v in results.items() if OURS.match(k)}
  if not theirs or not ours:
    raise ValueError("need the authors' rows (authors.json) and jaxrepr's layout rows")
  best = min(v["step_s"] for v in theirs.values())
  lines = [
    "| code | threads / devices | step ms (median of rounds) | rounds (ms) | CPU s / step "
    "| speed-up vs the authors' fastest | commit |",
    "|---|---|---|---|---|---|---|",
  ]
  plural = lambda n: "s" if n > 1 else ""  # noqa: E731
  rows = [
    (
      f"authors (PyTorch {v.get('torch_version', '?')})",
      f"{v['threads']} thread{plural(v['threads'])}",
      v,
    )
    for _, v in sorted(theirs.items(), key=lambda kv: kv[1]["threads"])
  ]
  rows += [
    ("jaxrepr", f"{v['devices']} device(s)", v)
    for _, v in sorted(ours.items(), key=lambda kv: kv[1]["devices"])
  ]
  for code, layout, v in rows:
    rounds = ", ".join(f"{1e3 * s:.1f}" for s in v.get("step_s_rounds", [v["step_s"]]))
    lines.append(
      f"| {code} | {layout} | {1e3 * v['step_s']:.1f} | {rounds} | {v['cpu_s_per_step']:.3f} | "
      f"{best / v['step_s']:.2f}x | {v.get('commit', '')} |"
    )
  return lines


def write_docs_block(bench_dir: str, page: str) -> None:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from launch import _doc_tables

  with open(os.path.join(bench_dir, "authors.json")) as f:
    authors = json.load(f)
  with open(os.path.join(bench_dir, "results.json")) as f:
    results = json.load(f)
  theirs = dict.fromkeys(v.get("commit", "?") for k, v in authors.items() if "@" in k)
  ours = dict.fromkeys(v.get("commit", "?") for k, v in results.items() if OURS.match(k))
  head = [
    "Written by this command from bench/authors.json (the authors' rows: their repository at "
    + ", ".join(f"commit `{c}`" for c in theirs)
    + ") and bench/results.json (jaxrepr's rows, measured at "
    + ", ".join(f"commit `{c}`" for c in ours)
    + "), run from the checkout's root:",
    "",
    "    python launch/authors_set_clustering.py --table_only",
    "",
  ]
  _doc_tables.write_block(page, BLOCK, "\n".join(head + comparison_lines(authors, results)))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--repo", help="a checkout of github.com/juho-lee/set_transformer")
  p.add_argument("--threads", default="1,2", help="torch thread counts to time")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--out", default="bench", help="directory of authors.json (and results.json)")
  p.add_argument("--table_only", action="store_true", help="only rewrite the docs table")
  p.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  page = os.path.join(checkout, "docs", "benchmarks.md")
  in_checkout = os.path.realpath(args.out) == os.path.realpath(os.path.join(checkout, "bench"))
  if args.table_only:
    write_docs_block(args.out, page)
    print(f"wrote {page}")
    return
  if not args.repo or not os.path.exists(os.path.join(args.repo, "models.py")):
    sys.exit(f"--repo={args.repo} has no models.py: give a checkout of the authors' repository")
  if args.child:
    print(json.dumps(_one(args.repo, args.child, args.steps)))
    return
  threads = [int(t) for t in args.threads.split(",")]
  rounds: dict[int, list[dict]] = {t: [] for t in threads}
  for r in range(args.rounds):
    for t in threads:
      cmd = [
        sys.executable,
        __file__,
        f"--repo={args.repo}",
        f"--child={t}",
        f"--steps={args.steps}",
      ]
      # their sampler puts the sets on a GPU when torch sees one, while the model stays on the CPU
      env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
      res = subprocess.run(cmd, capture_output=True, text=True, env=env)
      if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
      rounds[t].append(json.loads(res.stdout.strip().splitlines()[-1]))
      print(
        f"round {r + 1}/{args.rounds}, {t} thread(s): {1e3 * rounds[t][-1]['step_s']:.1f} ms/step",
        flush=True,
      )
  path = os.path.join(args.out, "authors.json")
  rows = json.load(open(path)) if os.path.exists(path) else {}
  for t, results in rounds.items():
    steps_s = sorted(x["step_s"] for x in results)
    cpus = sorted(x["cpu_s_per_step"] for x in results)
    rows[f"set_transformer_clustering@{t}threads"] = dict(
      results[-1],
      threads=t,
      step_s=steps_s[len(steps_s) // 2],
      step_s_rounds=[x["step_s"] for x in results],
      cpu_s_per_step=cpus[len(cpus) // 2],
      rounds=args.rounds,
      steps=args.steps,
      measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      load_average=os.getloadavg()[0],  # the shared machine's 1-minute load when the rounds ended
      commit=subprocess.run(
        ["git", "-C", args.repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
      ).stdout.strip()
      or "?",
    )
  os.makedirs(args.out, exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(sorted(rows.items())), f, indent=2, sort_keys=True)
  print(f"wrote {path}")
  if in_checkout:
    write_docs_block(args.out, page)
    print(f"wrote {page}")


if __name__ == "__main__":
  main()
