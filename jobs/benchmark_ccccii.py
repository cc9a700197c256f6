"""`ray job submit` entry point: the Clean-CC-CCII benchmark on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/benchmark_ccccii.py --data s3://bucket/clean-cc-ccii \\
        --out s3://bucket/benchmarks/ccccii --workers 4 --gpus

Takes the options of `cohort benchmark ccccii` (see its --help).
"""

import sys

from cohort.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "ccccii", *sys.argv[1:]]))
