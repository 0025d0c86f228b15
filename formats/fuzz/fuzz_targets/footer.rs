//! Footer parsing and re-serialisation on arbitrary bytes.
#![no_main]

use diskformats::vhd::Footer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = [0u8; 512];
    let n = data.len().min(512);
    b[..n].copy_from_slice(&data[..n]);
    if let Ok(f) = Footer::parse_ignoring_checksum(&b) {
        let again = Footer::parse(&f.to_bytes()).expect("our own footer parses");
        assert_eq!(again.current_size, f.current_size);
    }
    let _ = Footer::parse(&b);
});
