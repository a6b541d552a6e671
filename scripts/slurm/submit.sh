#!/bin/bash
# submit.sh - a sweep as an N-task Slurm array plus the merge that waits for
# all its tasks to end (merge.sbatch says why afterany):
#
#   scripts/slurm/submit.sh CONFIG.yaml RUN_DIR N [sweep options]
#
# Prints the array's and the merge's job ids.  Options for sbatch go in its
# SBATCH_* variables (SBATCH_GRES=gpu:1, SBATCH_PARTITION, SBATCH_TIMELIMIT);
# the merge needs no GPU, so SBATCH_GRES is dropped for it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: scripts/slurm/submit.sh CONFIG RUN_DIR N [sweep options]"
cfg=${1:?$usage}
out=${2:?$usage}
n=${3:?$usage}
shift 3
array=$(sbatch --parsable --array=0-$((n - 1)) "$here/sweep.sbatch" "$cfg" "$out" "$@")
merge=$(env -u SBATCH_GRES sbatch --parsable --dependency=afterany:"$array" \
    "$here/merge.sbatch" "$out" "$n")
echo "$array $merge"
