#!/bin/sh
# One step of a pipeline, submitted with an idempotency key: the same key, the same job.
echo "step done: $(date -u +%H:%M:%S)"
