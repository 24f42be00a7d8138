//! The simulation's one source of chance: every fault and outcome is drawn
//! from one seeded generator, in the order the single-threaded run asks, so a
//! seed replays exactly.

use super::model::Fate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::ports::Invocation;
use std::sync::{Arc, Mutex};

/// How often each fault strikes while faults are on.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub call_fails: f64,
    pub answer_lost: f64,
    /// A worker dies at a fault point.
    pub crash: f64,
    /// Another worker acts on the same deployment at a fault point.
    pub interfere: f64,
    /// The next delivery runs at a fault point before the worker goes on.
    pub preempt: f64,
    pub timer_lost: f64,
    pub timer_duplicated: f64,
    pub timer_delayed: f64,
}

pub const FAULTY: Rates = Rates {
    call_fails: 0.02,
    answer_lost: 0.01,
    crash: 0.02,
    interfere: 0.03,
    preempt: 0.05,
    timer_lost: 0.03,
    timer_duplicated: 0.05,
    timer_delayed: 0.2,
};

const CALM: Rates = Rates {
    call_fails: 0.0,
    answer_lost: 0.0,
    crash: 0.0,
    interfere: 0.0,
    preempt: 0.0,
    timer_lost: 0.0,
    timer_duplicated: 0.0,
    timer_delayed: 0.0,
};

struct State {
    rng: StdRng,
    rates: Rates,
    trace: Vec<String>,
}

#[derive(Clone)]
pub struct Dice(Arc<Mutex<State>>);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(Arc::new(Mutex::new(State {
            rng: StdRng::seed_from_u64(seed),
            rates: FAULTY,
            trace: Vec::new(),
        })))
    }

    /// Faults stop: from now on only the outcomes of hooks are left to chance.
    pub fn calm(&self) {
        self.0.lock().unwrap().rates = CALM;
    }

    pub fn rates(&self) -> Rates {
        self.0.lock().unwrap().rates
    }

    pub fn note(&self, line: String) {
        self.0.lock().unwrap().trace.push(line);
    }

    pub fn trace(&self) -> Vec<String> {
        self.0.lock().unwrap().trace.clone()
    }

    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.0.lock().unwrap().rng.random_bool(p)
    }

    pub fn below(&self, n: u64) -> u64 {
        self.0.lock().unwrap().rng.random_range(0..n)
    }

    fn fate(&self, what: &str) -> Fate {
        let mut s = self.0.lock().unwrap();
        let rates = s.rates;
        let roll: f64 = s.rng.random();
        let fate = if roll < rates.call_fails {
            Fate::Fails
        } else if roll < rates.call_fails + rates.answer_lost {
            Fate::AnswerLost
        } else {
            Fate::Ok
        };
        if fate != Fate::Ok {
            s.trace.push(format!("      fault: {what} call {fate:?}"));
        }
        fate
    }

    pub fn store_fate(&self) -> Fate {
        self.fate("table")
    }

    pub fn cloud_fate(&self) -> Fate {
        self.fate("cloud")
    }

    /// A hook's outcome: mostly a pass; sometimes a fail, an error, no run or
    /// an answer of the wrong shape.
    pub fn hook_call(&self) -> Invocation {
        let mut s = self.0.lock().unwrap();
        let roll: f64 = s.rng.random();
        let call = if roll < 0.95 {
            Invocation::Answered(br#"{"status":"Succeeded","reason":"ok","checks":[]}"#.to_vec())
        } else if roll < 0.97 {
            Invocation::Answered(
                br#"{"status":"Failed","reason":"smoke test failed","checks":[]}"#.to_vec(),
            )
        } else if roll < 0.98 {
            Invocation::Raised("hook crashed".into())
        } else if roll < 0.99 {
            Invocation::NotRun("ResourceNotFoundException: no such function".into())
        } else {
            Invocation::Answered(b"\"yes\"".to_vec())
        };
        if !matches!(&call, Invocation::Answered(b) if b.starts_with(br#"{"status":"Succeeded""#)) {
            s.trace.push(format!("      hook answers {call:?}"));
        }
        call
    }
}
