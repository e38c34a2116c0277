#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wshub_testkit::check_frames(std::time::Instant::now(), data);
    wshub_testkit::check_frames_differential(data);
});
