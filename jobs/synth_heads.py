"""`ray job submit` entry point: a synthetic head-CT cohort, one Ray task per patient.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/synth_heads.py --patients 1000 --out s3://bucket/synthetic/heads-1000

Takes the options of `cohort synth heads` (see `cohort synth heads --help`).
"""

import sys

from cohort.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", "heads", "--ray", *sys.argv[1:]]))
