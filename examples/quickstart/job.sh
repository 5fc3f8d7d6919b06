#!/bin/sh
# A batch script as users write them: its #! line runs it; resources come from the command line.
echo "job.sh on $(hostname) in $(pwd), ${BRIDGEHEAD_JOB_ID:-no id}"
python3 train.py --epochs 2
