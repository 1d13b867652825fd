//! Arbitrary bytes through everything the gateway parses and checks from a client
//! (`fleetcast_broker::gateway::decode::decode_stream`). Run with
//! `cargo fuzz run frames corpus seeds` (see fuzz/README.md).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The default packet limit, and a tiny one so the size checks are reached too.
    let _ = fleetcast_broker::gateway::decode::decode_stream(data, 131_072);
    let _ = fleetcast_broker::gateway::decode::decode_stream(data, 64);
});
