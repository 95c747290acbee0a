"""NoProp-CT (continuous time, Eq. 9, Alg. 2): one network taking t, a learned noise schedule.

    python launch/train.py --config=configs/noprop_ct.py                 # one-hot, digits
    python launch/train.py --config=configs/noprop_ct.py:fashion_mnist,prototype

The same experiment as `configs/noprop.py:ct,<variants>` (its docstring lists the dataset and
embedding variants, the paper's hyper-parameters and the choices where the paper is silent); runs
live in runs/noprop_ct[_<variant>...]. Measured results: docs/noprop.md.
"""

import os

from jaxrepr import config as config_lib


def get_config(arg: str | None = None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "noprop.py")
  return config_lib.load_file(path, ",".join(["ct"] + ([arg] if arg else [])))
