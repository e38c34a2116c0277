#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wshub_testkit::check_broker_bytes(std::time::Instant::now(), data));
