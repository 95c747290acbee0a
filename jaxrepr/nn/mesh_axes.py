"""Names of the device-mesh axes that building blocks and the trainer agree on.

The trainer's mesh (jaxrepr/parallel.py) is `data` x `fsdp`, and a batch is sharded along its
leading axis over both. Building blocks that loop over the batch per device (the blocked attention
of jaxrepr/nn/attention.py, in a shard_map) need the same names; they live here so that nn/ knows
no trainer module and the trainer imports them from nn/.
"""

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
