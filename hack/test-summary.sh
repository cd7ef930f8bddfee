#!/usr/bin/env bash
# Prints one cargo-style `test result:` line that adds up every `test result:` line of a
# `cargo test` log (one per test binary and doc-test run). Fails if the log has none.
set -euo pipefail
log="${1:?usage: hack/test-summary.sh CARGO_TEST_LOG}"
awk '
  /^test result: / {
    runs++
    for (i = 2; i <= NF; i++) {
      word = $i
      gsub(/[;.,]/, "", word)
      if (word == "passed" || word == "failed" || word == "ignored" || word == "measured" || word == "filtered")
        total[word] += $(i - 1)
    }
  }
  END {
    if (runs == 0) { print "no `test result:` line in the log: no test ran" > "/dev/stderr"; exit 1 }
    printf "\nall %d test runs of the workspace:\n", runs
    printf "test result: %s. %d passed; %d failed; %d ignored; %d measured; %d filtered out\n",
      (total["failed"] ? "FAILED" : "ok"), total["passed"], total["failed"], total["ignored"],
      total["measured"], total["filtered"]
  }
' "$log"
