"""NoProp-FM (flow matching, Eqs. 10-13, Alg. 3): a velocity from noise to the label embedding.

    python launch/train.py --config=configs/noprop_fm.py                 # one-hot, digits
    python launch/train.py --config=configs/noprop_fm.py:fashion_mnist,prototype

The same experiment as `configs/noprop.py:fm,<variants>` (its docstring lists the dataset and
embedding variants, the paper's hyper-parameters and the choices where the paper is silent); runs
live in runs/noprop_fm[_<variant>...]. Measured results: docs/noprop.md.
"""

import os

from jaxrepr import config as config_lib


def get_config(arg: str | None = None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "noprop.py")
  return config_lib.load_file(path, ",".join(["fm"] + ([arg] if arg else [])))
