"""NoProp-DT (discrete time, Eq. 8, Alg. 1): T = 10 blocks, each alone denoises a label embedding.

    python launch/train.py --config=configs/noprop_dt.py                 # one-hot, digits
    python launch/train.py --config=configs/noprop_dt.py:fashion_mnist,prototype

The same experiment as `configs/noprop.py:dt,<variants>` (its docstring lists the dataset and
embedding variants, the paper's hyper-parameters and the choices where the paper is silent); runs
live in runs/noprop_dt[_<variant>...]. Measured results: docs/noprop.md.
"""

import os

from jaxrepr import config as config_lib


def get_config(arg: str | None = None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "noprop.py")
  return config_lib.load_file(path, ",".join(["dt"] + ([arg] if arg else [])))
