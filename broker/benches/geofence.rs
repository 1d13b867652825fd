//! What geofence checking costs: `cargo bench -p fleetcast-broker --bench geofence`.
//!
//! 10,000 drivers wander over Helsinki (a 20 km box) against 0, 100 and 1,000 square
//! fences of 200-800 m, 30 fixes each; prints the time per fix and what a 10,000-driver
//! fleet at 1 Hz would cost in one core. The tracker alone: parsing and publishing are
//! outside it (the fleet benchmark in bench/RESULTS.md has the whole broker).

use fleetcast_broker::geofence::{Fence, Fix, Rules, Tracker};
use geo::{polygon, MultiPolygon};
use std::time::Instant;

const DRIVERS: usize = 10_000;
const ROUNDS: usize = 30;

/// xorshift64*: repeatable, no dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fences(n: usize, rng: &mut Rng) -> Vec<Fence> {
    (0..n)
        .map(|i| {
            let (lat, lon) = (60.10 + rng.unit() * 0.18, 24.80 + rng.unit() * 0.36);
            let side = 0.002 + rng.unit() * 0.006;
            let p = polygon![
                (x: lon, y: lat), (x: lon + side * 2.0, y: lat), (x: lon + side * 2.0, y: lat + side),
                (x: lon, y: lat + side), (x: lon, y: lat),
            ];
            Fence {
                name: format!("f{i}"),
                area: MultiPolygon(vec![p]),
            }
        })
        .collect()
}

fn main() {
    let ids: Vec<String> = (0..DRIVERS).map(|i| format!("drv-{i:06}")).collect();
    for n in [0, 100, 1_000] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut t = Tracker::new(Rules::default());
        for f in fences(n, &mut rng) {
            t.set(f);
        }
        let mut at: Vec<(f64, f64)> = (0..DRIVERS)
            .map(|_| (60.10 + rng.unit() * 0.18, 24.80 + rng.unit() * 0.36))
            .collect();
        let mut events = 0usize;
        let start = Instant::now();
        for round in 0..ROUNDS {
            for (i, pos) in at.iter_mut().enumerate() {
                // About 10 m a fix, in a random direction.
                pos.0 += (rng.unit() - 0.5) * 0.00018;
                pos.1 += (rng.unit() - 0.5) * 0.00036;
                let fix = Fix {
                    id: &ids[i],
                    lat: pos.0,
                    lon: pos.1,
                    ts: round as u64,
                };
                events += t.fix(fix).len();
            }
        }
        let took = start.elapsed();
        let fixes = (DRIVERS * ROUNDS) as f64;
        let ns = took.as_nanos() as f64 / fixes;
        let core = ns * DRIVERS as f64 / 1e9 * 100.0;
        println!(
            "{n:>5} fences: {ns:>7.0} ns per fix, {events} events; 10,000 drivers at 1 Hz = {core:.2}% of a core"
        );
    }
}
