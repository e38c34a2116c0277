#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wshub_testkit::check_hub_ops(std::time::Instant::now(), data));
