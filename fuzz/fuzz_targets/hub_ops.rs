#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wshub_core::fuzzing::check_hub_ops(std::time::Instant::now(), data));
