//! WAV repair runs on whatever a crash (or a disk) left: it never panics, and a file it says it
//! repaired is then valid.
#![no_main]
use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use media::recording::{RepairOutcome, repair};

fuzz_target!(|data: &[u8]| {
    let mut file = Cursor::new(data.to_vec());
    if let Ok(RepairOutcome::Repaired { .. }) = repair(&mut file) {
        file.set_position(0);
        assert!(matches!(
            repair(&mut file),
            Ok(RepairOutcome::AlreadyValid { .. })
        ));
    }
});
