"""The decisions the enroll evaluator compares, and their metrics (host numpy, positive = known).

Every function here is pure: episodes in (the host dicts `episodes.generate` returns, fetched),
thresholds or metrics out. The baselines themselves are jaxrepr/methods/enroll/baselines.py's.

Methods (`METHODS`, in plotting order):
  set         the SetTransformer: known iff logit > 0; nothing tuned anywhere.
  nn, knn     NN threshold and kNN vote tuned on training-source episodes, then frozen.
  oracle      the NN threshold re-tuned on episodes of the test source (at the test prior).
  oracle_knn  the kNN vote (radius and vote fraction) re-tuned the same way.
The two oracles see labelled episodes of the very distribution they are scored on: they bound what
a threshold method reaches with retraining, which the SetTransformer never gets.
"""

from __future__ import annotations

import numpy as np

from jaxrepr.methods.enroll import baselines

METHODS = ("set", "nn", "knn", "oracle", "oracle_knn")
LABELS = {
  "set": "SetTransformer (no tuning)",
  "nn": "NN threshold (frozen)",
  "knn": "kNN vote (frozen)",
  "oracle": "NN threshold re-tuned (oracle)",
  "oracle_knn": "kNN vote re-tuned (oracle)",
}
Episodes = dict[str, np.ndarray]


def tune_nn(ep: Episodes) -> float:
  """The NN distance threshold of maximum accuracy on labelled episodes (known iff d <= tau)."""
  d0 = baselines.nn_distance(ep["ctx_dist"], ep["ctx_mask"])
  return -baselines.tune_threshold(-d0, ep["label"] == 1)[0]


def tune(ep: Episodes, knn_k: int) -> dict[str, float]:
  """{'nn_tau', 'knn_tau', 'knn_m'}: both baselines tuned on the labelled episodes `ep`."""
  knn_tau, knn_m, _ = baselines.tune_knn(ep, ep["label"] == 1, knn_k)
  return {"nn_tau": tune_nn(ep), "knn_tau": knn_tau, "knn_m": knn_m}


def vote(ep: Episodes, knn_k: int, tau: float) -> np.ndarray:
  return baselines.knn_vote(
    ep["ctx_dist"], ep["ctx_label"], ep["ctx_walks"], ep["ctx_mask"], knn_k, tau
  )


def decisions(
  ep: Episodes, frozen: dict, retuned: dict, knn_k: int
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
  """{method: (known predictions, ranking score or None)}. `frozen` and `retuned` come from
  `tune` (training-source and test-source episodes); 'set' is there when `ep` has a 'logit'.
  oracle shares nn's ranking (minus the NN distance), so it has no score of its own."""
  d0 = baselines.nn_distance(ep["ctx_dist"], ep["ctx_mask"])
  v_frozen = vote(ep, knn_k, frozen["knn_tau"])
  v_retuned = vote(ep, knn_k, retuned["knn_tau"])
  out = {}
  if "logit" in ep:
    out["set"] = (ep["logit"] > 0, ep["logit"])
  out["nn"] = (d0 <= frozen["nn_tau"], -d0)
  # the 1e-9 keeps a vote fraction equal to m (e.g. 3/5 >= 0.6) known despite float rounding
  out["knn"] = (v_frozen >= frozen["knn_m"] - 1e-9, v_frozen)
  out["oracle"] = (d0 <= retuned["nn_tau"], None)
  out["oracle_knn"] = (v_retuned >= retuned["knn_m"] - 1e-9, v_retuned)
  return out


def grid_metrics(
  decided: dict, ep: Episodes, n_ids: list[int], walks: list[int]
) -> tuple[dict[str, float], list[dict]]:
  """Per method: accuracy and F1 (and AUC, EER with a score), the accuracy per gallery size
  `{m}_acc_nid{n}` and per walks per identity `{m}_acc_w{w}`; and one record per grid cell."""
  y = ep["label"] == 1
  out: dict[str, float] = {}
  cells = []
  for name, (pred, score) in decided.items():
    if score is None:
      out[f"{name}_accuracy"] = baselines.accuracy(pred, y)
      out[f"{name}_f1"] = baselines.f1(pred, y)
    else:
      out.update({f"{name}_{k}": v for k, v in baselines.scores(pred, score, y).items()})
    for n in n_ids:
      s = ep["n_id"] == n
      out[f"{name}_acc_nid{n}"] = baselines.accuracy(pred[s], y[s])
    for w in walks:
      s = ep["walks"] == w
      out[f"{name}_acc_w{w}"] = baselines.accuracy(pred[s], y[s])
    for n in n_ids:
      for w in walks:
        s = (ep["n_id"] == n) & (ep["walks"] == w)
        cells.append(
          {
            "method": name,
            "n_id": n,
            "walks": w,
            "accuracy": baselines.accuracy(pred[s], y[s]),
            "episodes": int(s.sum()),
          }
        )
  return out, cells


def prior_tag(p: float) -> str:
  """Metric-name part of a known fraction: 0.1 -> 'known10' (percent, so names carry no dot)."""
  return f"known{int(round(100 * p))}"


def prior_metrics(decided: dict, ep: Episodes, p: float) -> tuple[dict[str, float], list[dict]]:
  """Accuracy and F1 of each decision on episodes drawn with known fraction `p`:
  `{m}_accuracy_known{pct}`, `{m}_f1_known{pct}`, and one record per method."""
  y = ep["label"] == 1
  out, rows = {}, []
  for name, (pred, _) in decided.items():
    acc, f1 = baselines.accuracy(pred, y), baselines.f1(pred, y)
    out[f"{name}_accuracy_{prior_tag(p)}"], out[f"{name}_f1_{prior_tag(p)}"] = acc, f1
    rows.append({"method": name, "known_fraction": p, "accuracy": acc, "f1": f1})
  out[f"realised_{prior_tag(p)}"] = float(np.mean(y))  # the realised fraction of known probes
  return out, rows
