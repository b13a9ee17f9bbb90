//! `map-fullname`'s mapping behind an experimental contract: the batch crosses
//! the boundary as one buffer, read in place, and the answer is written into
//! one buffer (see `wit/packed.wit`). It runs map-fullname's own contact
//! code (`contact.rs`, included from that crate), so benches/packed.rs
//! measures the contract, not a different mapping; the benchmark also runs
//! [`map`] natively, to tell the sandboxed code's cost from the boundary's.

pub mod codec;
#[path = "../../../map-fullname/src/contact.rs"]
#[allow(dead_code)] // `Subscriber::to_json`: map-fullname's, this writes in place
mod contact;

use codec::{Reader, View, Writer};
use contact::{Contact, map_contact};

/// map-fullname's default target stream.
const TARGET: &str = "subscribers";

/// Maps an encoded batch into an encoded batch, as map-fullname maps records.
pub fn map(batch: &[u8]) -> Result<Vec<u8>, String> {
    let mut records = Reader::new(batch)?;
    let mut out = Writer::with_capacity(batch.len());
    while let Some(record) = records.next_record()? {
        if record.delete {
            out.push(View {
                stream: TARGET,
                ..record
            });
            continue;
        }
        let contact: Contact = serde_json::from_str(record.data)
            .map_err(|e| format!("record {}: data is not a contact: {e}", record.key))?;
        if let Some(subscriber) = map_contact(&contact) {
            let Ok(()) = out.push_with(TARGET, record.key, false, record.source_timestamp, |buf| {
                subscriber.write_json(buf);
                Ok::<(), std::convert::Infallible>(())
            });
        }
    }
    Ok(out.finish())
}

/// The component's exports: only in the wasm build.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::sync::Mutex;

    wit_bindgen::generate!({ path: "wit", world: "packed-transform" });

    // Linked for its global allocator, which every SDK plugin gets: the
    // contracts compare with the same allocator on both sides.
    use causeway_sdk as _;

    /// The batch `keep` was given, for `map-kept`.
    static KEPT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Packed;

    impl exports::causeway_experiment::packed::transform::Guest for Packed {
        fn transform(batch: Vec<u8>) -> Result<Vec<u8>, String> {
            super::map(&batch)
        }

        fn keep(batch: Vec<u8>) {
            if let Ok(mut kept) = KEPT.lock() {
                *kept = batch;
            }
        }

        fn map_kept() -> Result<u32, String> {
            let kept = KEPT.lock().map_err(|e| e.to_string())?;
            let out = super::map(&kept)?;
            Ok(super::Reader::new(&out)?.remaining())
        }
    }

    export!(Packed);
}
