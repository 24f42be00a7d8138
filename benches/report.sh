#!/usr/bin/env bash
# `make bench`: runs every benchmark and writes BENCHMARKS.md with the figures,
# the command that produced each, and the machine they ran on.
set -euo pipefail
out=BENCHMARKS.md

section() {
    local title=$1
    shift
    echo "running: $*" >&2
    local figures
    figures=$("$@")
    printf '## %s\n\n`%s`\n\n```\n%s\n```\n\n' "$title" "$*" "$figures"
}

{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB of memory, $(rustc --version), release builds, the local stack (moto and sluice-local) on the same machine."
    echo
    section "Functions: size and cold init" cargo bench --quiet --bench functions
    section "Deployment engine: reaction, DynamoDB requests per step, drift" cargo bench --quiet --bench engine
    section "sluice-local: what it adds to an invocation" cargo bench --quiet -p sluice-local --bench invoke
    section "Webhook to first shift" cargo bench --quiet --bench webhook
    section "500 deployments at once, and the cost of one" cargo bench --quiet --bench fleet
    python benches/plot_weights.py >&2
    printf '## Weight over time\n\nOne deployment run alone after the fleet, from its timeline (`python benches/plot_weights.py`, from `target/bench/weights.csv`):\n\n![weight over time](benches/weight-over-time.png)\n'
} > "$out.partial"
mv "$out.partial" "$out"
echo "wrote $out" >&2
