//! How fast the simulator runs: simulated seconds per wall second for 5 members under
//! load (4 clients) with every fault, on one core. A measurement, printed, not asserted
//! (machines are noisy): `cargo test --release --features sim --test sim_speed -- --nocapture`.
#![cfg(feature = "sim")]

use std::time::Instant;

use keel_sim_tests::chaos::{run_seed, Scenario};

#[test]
fn five_members_under_faults_simulated_seconds_per_wall_second() {
    let seeds: Vec<u64> = (0..40)
        .filter(|s| Scenario::standard(*s).members == 5)
        .collect();
    let started = Instant::now();
    let mut sim_ms = 0;
    let mut ops = 0;
    for &seed in &seeds {
        let r = run_seed(seed, &Scenario::standard(seed));
        assert!(r.passed(), "{r}");
        assert_eq!(r.scenario, "standard");
        sim_ms += r.sim_ms;
        ops += r.ops;
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "5 members, every fault, one core: {} seeds, {:.0} simulated s in {wall:.1} wall s = \
         {:.0}x real time, {:.0} seeds/min, {ops} client operations",
        seeds.len(),
        sim_ms as f64 / 1000.0,
        sim_ms as f64 / 1000.0 / wall,
        seeds.len() as f64 / wall * 60.0
    );
}
