"""`ray job submit` entry point: the k-fold landmark-localization study on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train_localization.py --data s3://bucket/index \\
        --labels s3://bucket/labels.parquet --out s3://bucket/studies/dst-small \\
        --workers 4 --gpus

Takes the options of `cohort train localization` (see its --help).
"""

import sys

from cohort.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "localization", *sys.argv[1:]]))
