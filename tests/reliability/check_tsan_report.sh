#!/usr/bin/env bash
# Runs a program built with ThreadSanitizer and checks its verdict.
#   check_tsan_report.sh report PATTERN -- program args...   a data race must be
#       reported, and the report must mention PATTERN (a grep -E regex)
#   check_tsan_report.sh none -- program args...             no TSan report at all
set -uo pipefail
expect=$1; shift
pattern=""
if [ "$expect" = report ]; then pattern=$1; shift; fi
[ "$1" = "--" ] && shift
export TSAN_OPTIONS="${TSAN_OPTIONS:-ignore_noninstrumented_modules=1}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" >"$log" 2>&1
status=$?
reports=$(grep -c "WARNING: ThreadSanitizer" "$log")
case "$expect" in
  report)
    if [ "$reports" -gt 0 ] && grep -q "WARNING: ThreadSanitizer: data race" "$log" && grep -Eq "$pattern" "$log" &&
       [ "$status" -ne 0 ]; then
      echo "OK: ThreadSanitizer reported the planted race ($reports report(s), exit status $status)"
      grep -m1 -A3 "WARNING: ThreadSanitizer: data race" "$log"
      exit 0
    fi
    echo "FAIL: expected a ThreadSanitizer data-race report mentioning '$pattern' (reports: $reports, exit status $status)"
    tail -40 "$log"
    exit 1
    ;;
  none)
    if [ "$reports" -eq 0 ] && [ "$status" -eq 0 ]; then
      echo "OK: no ThreadSanitizer report"
      cat "$log"
      exit 0
    fi
    echo "FAIL: expected no ThreadSanitizer report (reports: $reports, exit status $status)"
    tail -80 "$log"
    exit 1
    ;;
  *)
    echo "usage: $0 report PATTERN -- program args... | none -- program args..." >&2
    exit 2
    ;;
esac
