#!/usr/bin/env bash
# Prints one cargo-style `test result:` line that adds up every `test result:` line of a
# `cargo test` log (one per test binary and doc-test run). Fails if the log has none.
#
# A test that found a component missing in a local run that opted out of it
# (HOMELAB_TEST_ALLOW_MISSING, see crates/homelab-testenv/src/skip.rs) returned without testing
# anything, and libtest counted it as passed: it writes a `SKIPPED <test>: ...` line, and those are
# counted here as skipped, not passed, and listed.
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
  /SKIPPED [^ ]+: / {
    line = substr($0, index($0, "SKIPPED "))
    skipped[++skips] = line
  }
  END {
    if (runs == 0) { print "no `test result:` line in the log: no test ran" > "/dev/stderr"; exit 1 }
    printf "\nall %d test runs of the workspace:\n", runs
    if (skips > 0) {
      printf "skipped because a component is missing (counted by cargo as passed):\n"
      for (i = 1; i <= skips; i++) printf "  %s\n", skipped[i]
    }
    printf "test result: %s. %d passed; %d failed; %d skipped; %d ignored; %d measured; %d filtered out\n",
      (total["failed"] ? "FAILED" : "ok"), total["passed"] - skips, total["failed"], skips, total["ignored"],
      total["measured"], total["filtered"]
  }
' "$log"
