"""`ray job submit` entry point: discover the series of a DICOM archive and write the manifest.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/index_cohort.py s3://archive/head-ct --out s3://bucket/index/run-1

Takes the arguments of `cohort index` (see `cohort index --help`); inside a Ray job the
header reads run as tasks on the cluster.
"""

import sys

from cohort.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
