//! Windows registry: `hivexregedit --export` text as it is parsed, and a
//! hive's header and transaction logs as their state is read.
#![no_main]

use ebs2azure::fixup::hive::{parse_reg, state};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_reg(&String::from_utf8_lossy(data));
    let (hive, log) = data.split_at(data.len() / 2);
    let _ = state(hive, &[log]);
});
