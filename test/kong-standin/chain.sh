#!/bin/sh
# The middle of the stand-in's process chain (real Kong: nginx blocked in os.execute -> sh -c ->
# resty): sh DEPTH ARGS... nests DEPTH shells, the innermost runs the worker. `; exit $?` keeps
# each shell alive as a parent (no exec), like the real chain.
depth=$1
shift
if [ "$depth" -gt 1 ]; then
  sh "$0" $((depth - 1)) "$@"; exit $?
fi
node "$(dirname "$0")/worker.mjs" "$@"; exit $?
