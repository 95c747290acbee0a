"""The diversity table of the procedural ARC families: distinct programs per 1,000 draws.

    python launch/arc_diversity.py --out=bench/arc_diversity     # ~40 s on one CPU core

Writes <out>/arc_diversity.md (the markdown table, with the command and the commit it was measured
at) and <out>/arc_diversity.json (the numbers), and prints the table. What a "program" is, and
the extra counts of the compose family, are defined in jaxrepr/data/arc_gen/diversity.py.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_DRAWS = flags.DEFINE_integer("draws", 1000, "Tasks drawn per family.")
_SEED = flags.DEFINE_integer("seed", 0, "Draw i uses rng [seed, i].")
_OUT = flags.DEFINE_string("out", "bench/arc_diversity", "Directory for the .md and .json files.")


def main(argv):
  del argv
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    _write()


def _write():
  from jaxrepr import provenance
  from jaxrepr.data.arc_gen import diversity

  table, counts = diversity.table(_DRAWS.value, _SEED.value)
  command = f"python launch/arc_diversity.py --draws={_DRAWS.value} --seed={_SEED.value}"
  commit = provenance.commit()
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "arc_diversity.md"), "w") as f:
    f.write(f"{table}\n\nMeasured at commit {commit} by `{command}`.\n")
  with open(os.path.join(_OUT.value, "arc_diversity.json"), "w") as f:
    json.dump({"draws": _DRAWS.value, "seed": _SEED.value, "commit": commit, "counts": counts}, f)
  print(table)


if __name__ == "__main__":
  app.run(main)
