//! What reading a location costs: `cargo bench -p fleetcast-proto --bench location`.
//!
//! Every fix is read twice in the broker (the gateway's check on the connection thread,
//! the map's read on its own), so the reader's time per fix is paid twice per message.
//! Prints nanoseconds per read for the shapes that arrive: the simulator's (serde_json's
//! output, 14-digit coordinates), the load tester's (`bench/run.sh`'s `--payload-size 100`
//! adds nothing to it: it is 164 bytes already, with an unknown `tsu` key) and one
//! serde_json must read (an escape in the id).

use fleetcast_proto::location::Location;
use std::hint::black_box;
use std::time::Instant;

const READS: u32 = 2_000_000;
const NOW_MS: u64 = 1_700_000_000_500;

fn main() {
    let shapes = [
        (
            "simulator",
            r#"{"id":"drv-000042","lat":60.17012345678901,"lon":24.938379999999998,"heading":271.5,"speed":8.333333333333334,"accuracy":4.0,"status":"on_trip","seq":123456,"ts":1700000000000}"#,
        ),
        (
            "loadtest",
            r#"{"id":"lt-000000","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":4242,"ts":1700000000000,"tsu":1700000000000123}"#,
        ),
        (
            "serde_json (escape)",
            r#"{"id":"drv\u002d000042","lat":60.17012345678901,"lon":24.938379999999998,"heading":271.5,"speed":8.333333333333334,"accuracy":4.0,"status":"on_trip","seq":123456,"ts":1700000000000}"#,
        ),
    ];
    for (name, payload) in shapes {
        let id = if name.starts_with("loadtest") {
            "lt-000000"
        } else {
            "drv-000042"
        };
        let payload = payload.as_bytes();
        // The shape must be one the rules accept, or the figure is of a refusal.
        Location::read(id, payload, NOW_MS).expect("a valid fix");
        let mut best = f64::MAX;
        // Best of five: the machine is shared.
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..READS {
                let read = Location::read(black_box(id), black_box(payload), NOW_MS);
                black_box(read.is_ok());
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(READS));
        }
        println!("{name:22} {:4} B  {best:7.1} ns per read", payload.len());
    }
}
