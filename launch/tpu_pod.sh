#!/bin/bash
# Train a jaxrepr config on every worker of a Cloud TPU VM pod slice.
#
#   PROJECT=my-project BUCKET=my-bucket bash launch/tpu_pod.sh configs/lpn.py:arc
#   PROJECT=my-project BUCKET=my-bucket TPU=lpn-v4-32 ZONE=us-central2-b TYPE=v4-32 \
#       bash launch/tpu_pod.sh configs/lpn.py:arc --config.train.steps=200000
#
# Run from the root of your checkout on your workstation (with the gcloud CLI logged in). It
#  1. creates the TPU VM slice if it does not exist (TYPE, default v4-32, in ZONE),
#  2. copies this checkout to every worker and installs it with the TPU extra,
#  3. mounts gs://BUCKET on every worker with gcsfuse (all hosts must see one workdir: Orbax writes
#     checkpoints collectively, and a rerun resumes from them),
#  4. starts launch/train.py on all workers at once, detached (nohup), so the run survives the SSH
#     session; jax.distributed finds the coordinator and the process index from the TPU VM's
#     metadata. Process 0 writes metrics; each worker logs to ~/jaxrepr_train.log. Follow it with
#       gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=0 --command 'tail -f ~/jaxrepr_train.log'
# Re-running the same command resumes the run from its last checkpoint (e.g. after a preemption).
# Python 3.11 comes from uv (the base image's Python is 3.10; jax needs 3.11 or later).
# Delete the slice afterwards: gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE"

set -euo pipefail
CONFIG=${1:?usage: PROJECT=... BUCKET=... bash launch/tpu_pod.sh CONFIG [--config.x=y ...]}
shift
: "${PROJECT:?set PROJECT to your Google Cloud project}"
: "${BUCKET:?set BUCKET to a Cloud Storage bucket for the run directories}"
ZONE=${ZONE:-us-central2-b}
TYPE=${TYPE:-v4-32}
TPU=${TPU:-jaxrepr-${TYPE}}
VERSION=${VERSION:-tpu-ubuntu2204-base}
# The run name launch/train.py would use: configs/lpn.py:arc,rope -> lpn_arc_rope.
NAME=$(basename "${CONFIG%%:*}" .py)
if [[ "${CONFIG}" == *:* ]]; then NAME="${NAME}_${CONFIG#*:}"; NAME=${NAME//,/_}; fi
WORKDIR=/mnt/${BUCKET}/runs/${NAME}
GC=(gcloud compute tpus tpu-vm --project "${PROJECT}" --zone "${ZONE}")

if ! "${GC[@]}" describe "${TPU}" > /dev/null 2>&1; then
  "${GC[@]}" create "${TPU}" --accelerator-type "${TYPE}" --version "${VERSION}"
fi
tar czf /tmp/jaxrepr_src.tgz --exclude=.venv --exclude=runs --exclude=.git .
"${GC[@]}" scp /tmp/jaxrepr_src.tgz "${TPU}":~/jaxrepr_src.tgz --worker=all
"${GC[@]}" ssh "${TPU}" --worker=all --command "
  set -e
  mkdir -p ~/jaxrepr && tar xzf ~/jaxrepr_src.tgz -C ~/jaxrepr
  if ! command -v gcsfuse > /dev/null; then
    export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
    echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
    curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null
    sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
  fi
  sudo mkdir -p /mnt/${BUCKET} && sudo chown \$USER /mnt/${BUCKET}
  # Orbax finalises a checkpoint by renaming its directory: allow directory renames.
  mountpoint -q /mnt/${BUCKET} || gcsfuse --implicit-dirs --rename-dir-limit=200000 ${BUCKET} /mnt/${BUCKET}
  command -v ~/.local/bin/uv > /dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
  cd ~/jaxrepr && ~/.local/bin/uv venv -q --allow-existing --python 3.11 .venv
  ~/.local/bin/uv pip install -q --python .venv/bin/python -e '.[tpu]'"
EXTRA=$(printf '%q ' "$@")
"${GC[@]}" ssh "${TPU}" --worker=all --command "
  cd ~/jaxrepr && JAXREPR_DISTRIBUTED=1 nohup .venv/bin/python launch/train.py \
      --config='${CONFIG}' --workdir='${WORKDIR}' ${EXTRA} > ~/jaxrepr_train.log 2>&1 &"
echo "started ${CONFIG} on ${TPU}; workdir gs://${BUCKET}/runs/${NAME}"
