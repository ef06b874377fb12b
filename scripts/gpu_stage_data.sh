#!/usr/bin/env bash
# Carry CIFAR-10 (and any dataset over one call's 64 MiB) to a lent GPU machine in parts, over
# consecutive calls, and put it together there, checked by SHA-256 (issue 32). Verbs:
#   split FILE... [--data-dir D] [--then CMD]   here: parts + manifest + the calls to make
#   plan                                        here: the calls again
#   receive [--require-complete]                there: the command of every call
#   verify                                      either: every file against the manifest
# scripts/gpu_stage_data.py says how; docs/performance.md#cifar-10-on-a-lent-gpu, the whole procedure.
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_stage_data.py" "$@"
