//! Get Page Ranges answers (XML) as the page blob client reads them, then
//! the checks a listing passes before it is trusted, and the merge.
#![no_main]

use ebs2azure::azure::page_blob::{check_listing, merge, parse_page_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((ranges, _next)) = parse_page_list(xml) {
        let size = ranges.last().map_or(0, |r| r.end);
        if check_listing(&ranges, size).is_ok() {
            let merged = merge(ranges.clone());
            assert!(merged.windows(2).all(|w| w[0].end < w[1].start));
        }
    }
});
