"""jaxrepr: a JAX-native functional research framework for representation learning.

Every method is a set of pure functions (see `jaxrepr.methods.base.Method`) that the one canonical
trainer, `jaxrepr.train.train_and_evaluate`, jits and runs data-parallel over every device.
"""

__version__ = "0.1.0"
