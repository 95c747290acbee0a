"""PNG renderings: ARC-style grids (tasks with both attempts) and LPN's 2-D latent space.

matplotlib with the Agg backend (no display needed); imported lazily by the evaluators.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The ARC colour palette (0 black, 1 blue, 2 red, 3 green, 4 yellow, 5 grey, 6 magenta, 7 orange,
# 8 light blue, 9 maroon).
ARC_COLOURS = [
  "#000000",
  "#0074D9",
  "#FF4136",
  "#2ECC40",
  "#FFDC00",
  "#AAAAAA",
  "#F012BE",
  "#FF851B",
  "#7FDBFF",
  "#870C25",
]


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def draw_grid(ax, grid: np.ndarray | None, title: str = "") -> None:
  from matplotlib.colors import ListedColormap

  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=7)
  if grid is None or np.size(grid) == 0:
    ax.set_axis_off()
    return
  grid = np.asarray(grid)
  ax.imshow(grid, cmap=ListedColormap(ARC_COLOURS), vmin=0, vmax=9, interpolation="nearest")
  ax.set_xticks(np.arange(-0.5, grid.shape[1], 1), minor=True)
  ax.set_yticks(np.arange(-0.5, grid.shape[0], 1), minor=True)
  ax.grid(which="minor", color="#555555", linewidth=0.3)
  ax.tick_params(which="minor", length=0)


def save_task_png(
  path: str, task_id: str, spec: Sequence[tuple[np.ndarray, np.ndarray]], tests: Sequence[dict]
) -> None:
  """Spec pairs on the first rows; per test input: input, attempt 1, attempt 2, truth.

  `tests`: dicts with 'input', 'attempt_1', 'attempt_2' and optionally 'output' (and 'solved').
  """
  plt = _plt()
  rows = len(spec) + len(tests)
  fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows), squeeze=False)
  for i, (x, y) in enumerate(spec):
    draw_grid(axes[i, 0], x, f"spec {i} input")
    draw_grid(axes[i, 1], y, f"spec {i} output")
    draw_grid(axes[i, 2], None)
    draw_grid(axes[i, 3], None)
  for j, t in enumerate(tests):
    row = axes[len(spec) + j]
    draw_grid(row[0], t["input"], f"test {j} input")
    draw_grid(row[1], t["attempt_1"], "attempt 1")
    draw_grid(row[2], t["attempt_2"], "attempt 2")
    solved = t.get("solved")
    draw_grid(
      row[3],
      t.get("output"),
      "truth" + ("" if solved is None else (" (solved)" if solved else " (missed)")),
    )
  fig.suptitle(task_id, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_latent_plot(
  path: str,
  mu_Px2: np.ndarray,
  task_of_pair: np.ndarray,
  decoded_GxGxRxC: np.ndarray,
  extent: float,
  title: str,
  axes: tuple[str, str] = ("z[0]", "z[1]"),
) -> None:
  """Left: encoder means of pairs, one colour per task. Right: decoder outputs on a latent grid.

  `axes` names the two plotted coordinates (the latent's own for a 2-D latent; two principal
  directions of the encoder means for a larger one)."""
  plt = _plt()
  g = decoded_GxGxRxC.shape[0]
  fig = plt.figure(figsize=(12, 6))
  ax = fig.add_subplot(1, 2, 1)
  ax.scatter(mu_Px2[:, 0], mu_Px2[:, 1], c=task_of_pair, cmap="tab20", s=14)
  ax.set_xlim(-extent, extent)
  ax.set_ylim(-extent, extent)
  ax.set_xlabel(axes[0])
  ax.set_ylabel(axes[1])
  ax.set_title("encoder means of test pairs (colour = task)", fontsize=9)
  # The decoded mosaic: row 0 of the image is the largest z[1], as on the scatter's y axis.
  r, c = decoded_GxGxRxC.shape[2:]
  mosaic = np.full((g * (r + 1) - 1, g * (c + 1) - 1), np.nan)
  for i in range(g):
    for j in range(g):
      mosaic[(g - 1 - i) * (r + 1) : (g - 1 - i) * (r + 1) + r, j * (c + 1) : j * (c + 1) + c] = (
        decoded_GxGxRxC[i, j]
      )
  from matplotlib.colors import ListedColormap

  cmap = ListedColormap(ARC_COLOURS)
  cmap.set_bad("white")
  ax2 = fig.add_subplot(1, 2, 2)
  ax2.imshow(
    mosaic,
    cmap=cmap,
    vmin=0,
    vmax=9,
    interpolation="nearest",
    extent=(-extent, extent, -extent, extent),
  )
  ax2.set_title("decoder output on a grid of latents (same input)", fontsize=9)
  ax2.set_xlabel(axes[0])
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
