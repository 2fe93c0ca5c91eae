#!/bin/sh
# Tests the built app with a greeting and prints a JUnit report.
set -e
out=$(./dist/hello "$1")
expected="$1, world"
if [ "$out" = "$expected" ]; then result=""; else result="<failure message=\"got '$out'\"/>"; fi
cat <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="hello-$1" tests="2">
  <testcase classname="hello" name="greets with $1">$result</testcase>
  <testcase classname="hello" name="prints a version"/>
</testsuite>
XML
