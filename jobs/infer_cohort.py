"""`ray job submit` entry point: the cohort job (landmarks and segment calcium -> Parquet).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/infer_cohort.py s3://archive/head-ct --out s3://results/icac \\
            --masks s3://results/masks --gpus 4 --cpu-actors 1

Takes the arguments of `cohort run` (see `cohort run --help`). Inside a Ray job, the CPU
stages run as tasks across the cluster's CPU workers and the DST actors on its GPU workers.
The salt for pseudonymous keys comes from --salt or the COHORT_SALT environment variable
(pass it with --runtime-env-json '{"env_vars": {"COHORT_SALT": "..."}}').
"""

import sys

from cohort.cli import main

if __name__ == "__main__":
    sys.exit(main(["-v", "run", *sys.argv[1:]]))
