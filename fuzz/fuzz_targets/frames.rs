#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wshub_core::fuzzing::check_frames(std::time::Instant::now(), data);
    wshub_fuzz::check_frames_differential(data);
});
