#!/bin/sh
# The example "application": greets whoever it is asked to.
case "$1" in
  --version) echo "hello @VERSION@" ;;
  *) echo "${1:-hello}, world" ;;
esac
