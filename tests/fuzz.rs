//! Every fuzz target (`src/fuzz_targets.rs`) on inputs mutated from real
//! samples (`events/`, `pipelines/`, configs, signed deliveries), seeded and
//! reproducible. `SLUICE_FUZZ_ITERATIONS` (default 3000 per target) and
//! `SLUICE_FUZZ_SEED` run more or other inputs; `make fuzz` runs the same
//! targets under libFuzzer. A failing input is written to
//! `target/fuzz-failures/` and named in the failure.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::commits::sign;
use sluice::fuzz_targets::TARGETS;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real inputs of every kind the targets read.
fn samples() -> Vec<Vec<u8>> {
    let mut samples = Vec::new();
    for dir in ["events", "pipelines"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("sample dir") {
            samples.push(std::fs::read(entry.expect("entry").path()).expect("sample"));
        }
    }
    let push = std::fs::read(root().join("events/github-push.json")).expect("push");
    let mut delivery = sign(&push, b"fuzzing secret").into_bytes();
    delivery.push(b'\n');
    delivery.extend_from_slice(&push);
    samples.push(delivery);
    for config in [
        "canary:10:5m",
        "linear:20:1m",
        "steps:10@3s,50@3s,100",
        "AllAtOnce",
        "CodeDeployDefault.LambdaCanary10Percent5Minutes",
        "canary:0.5:90s",
    ] {
        samples.push(config.as_bytes().to_vec());
    }
    samples.push(br#"[{"name": "hi", "event": {"name": "Ada"}, "expect": {"fields": {"/message": "Hello, Ada!"}}}]"#.to_vec());
    samples
}

const TOKENS: [&[u8]; 16] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"0",
    b"-1",
    b"1e309",
    b"\0",
    "é😀".as_bytes(),
    b":",
    b"\n",
    b"%",
    b"@",
    b"{var.x}",
];

/// One input: a sample changed in a few random ways.
fn mutate(rng: &mut StdRng, samples: &[Vec<u8>]) -> Vec<u8> {
    let mut data = samples[rng.random_range(0..samples.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..6) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => data.insert(at, rng.random()),
            2 => {
                let end = rng.random_range(at..=data.len());
                data.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 => data.truncate(at),
            _ => {
                let other = &samples[rng.random_range(0..samples.len())];
                let from = rng.random_range(0..=other.len());
                data.splice(at..at, other[from..].iter().copied());
            }
        }
    }
    data
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

#[test]
fn every_parser_of_outside_input_survives_mutated_samples() {
    let iterations = setting("SLUICE_FUZZ_ITERATIONS", 3000);
    let seed = setting("SLUICE_FUZZ_SEED", 0x5e1ce);
    let samples = samples();
    for (n, (name, target)) in TARGETS.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(n as u64));
        // The samples themselves first, then mutants.
        let inputs = samples
            .iter()
            .cloned()
            .chain((0..iterations).map(|_| mutate(&mut rng, &samples)));
        for (i, input) in inputs.enumerate() {
            let outcome = std::panic::catch_unwind(|| target(&input));
            if outcome.is_err() {
                let dir = root().join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).expect("failure dir");
                let path = dir.join(format!("{name}-{seed}-{i}"));
                std::fs::write(&path, &input).expect("failure written");
                panic!(
                    "fuzz target {name} panicked on input {i} of seed {seed}: {} (replay: cargo +nightly fuzz run {name} {})",
                    path.display(),
                    path.display()
                );
            }
        }
    }
}
