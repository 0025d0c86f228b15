//! ListSnapshotBlocks / ListChangedBlocks answers (JSON, as the SDK would
//! hand their numbers over) through the client's checks of sizes and
//! indexes: any answer is taken or refused, never a panic.
#![no_main]

use ebs2azure::source::ebs::{check_index, check_sizes};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A JSON number as the SDK's i32 field holds it (absent when it does not fit).
fn int32(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let block_size = int32(&page["BlockSize"]).unwrap_or(0);
    let volume = page["VolumeSize"].as_i64().unwrap_or(0);
    let Ok((bs, gib)) = check_sizes(block_size, volume, 0) else {
        return;
    };
    let blocks = page["Blocks"]
        .as_array()
        .or_else(|| page["ChangedBlocks"].as_array());
    let mut last = None;
    for b in blocks.into_iter().flatten().take(10_000) {
        match check_index(int32(&b["BlockIndex"]), last) {
            Ok(i) => {
                assert!(last.is_none_or(|l| l < i));
                let _ = i.checked_mul(u64::from(bs)).map(|o| o < gib << 30);
                last = Some(i);
            }
            Err(_) => break,
        }
    }
});
