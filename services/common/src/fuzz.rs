//! Property-based fuzzing (proptest, stable Rust) with a time budget. A target runs
//! `PROPTEST_CASES` cases (proptest's default, 256: the bounded run of `.ci/run`), or, with
//! `COCON_FUZZ_SECS=600`, batches of cases from fresh seeds until the time is spent (the long
//! runs of `docs/security.md`). A failure names the seed that found it; `COCON_FUZZ_SEED`
//! replays it.

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

fn runner(cases: u32, seed: [u8; 32]) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

fn seed_from_env() -> Option<[u8; 32]> {
    let text = std::env::var("COCON_FUZZ_SEED").ok()?;
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Runs `test` on values of `strategy`; panics with the minimal failing value and its seed.
pub fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("COCON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let bounded_cases = Config::default().cases;
    let deadline = budget.map(|secs| Instant::now() + Duration::from_secs(secs));
    let mut total: u64 = 0;
    loop {
        let seed = seed_from_env().unwrap_or_else(rand::random);
        let cases = if deadline.is_some() { 5_000 } else { bounded_cases };
        if let Err(err) = runner(cases, seed).run(&strategy, &test) {
            panic!(
                "fuzz target {name} failed after {total} cases: {err}\nreplay it with COCON_FUZZ_SEED={}",
                hex::encode(seed)
            );
        }
        total += u64::from(cases);
        match deadline {
            Some(at) if Instant::now() < at => continue,
            _ => break,
        }
    }
    if let Some(secs) = budget {
        eprintln!("fuzz target {name}: {total} cases in {secs} s, no failure");
    }
}

/// JSON values whose object keys come from `keys` (a field name, an operator), up to a few
/// levels deep: what a parser of JSON queries or documents is fed.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(keys).prop_map(|k| Value::String(k.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![proptest::sample::select(keys).prop_map(str::to_string), ".{0,6}"],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}
