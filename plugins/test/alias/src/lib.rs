//! A hostile transform with a hand-written export (no SDK, no generated
//! export code): it answers `count` records whose `data` strings all point at
//! one buffer of `kib` KiB in its memory. The canonical ABI allows that, and
//! reading such an answer string by string would copy the buffer once per
//! record: 4 MiB of guest memory become 400 GB of host memory. The host must
//! refuse it from the sizes alone.
//!
//! The first input record's key is `COUNTxKIB` (default `100000x4096`).

// The contract's types and the transform world's component type; the export
// itself is written by hand below.
wit_bindgen::generate!({
    path: "../../../wit",
    world: "causeway:plugin/transform-plugin@0.1.0",
});

causeway_sdk::__embed_manifest!("\"transform\"");

/// The canonical ABI's layout of `record` on wasm32: stream (ptr, len) at 0,
/// key at 8, op at 16, data at 20, source-timestamp (option<s64>) at 32.
const RECORD_SIZE: usize = 48;

/// `result<list<record>, plugin-error>`: the case at 0; the payload at 8
/// (plugin-error holds a u64), here the list's pointer and length.
#[repr(C, align(8))]
struct ReturnArea([u8; 16]);

static mut RETURN_AREA: ReturnArea = ReturnArea([0; 16]);

fn put(buffer: &mut [u8], at: usize, value: u32) {
    buffer[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `COUNTxKIB` from the first input record's key.
///
/// # Safety
/// `batch` and `len` are the export's arguments: the host's lowered list.
unsafe fn shape(batch: *const u8, len: usize) -> (usize, usize) {
    let default = (100_000, 4096);
    if len == 0 {
        return default;
    }
    // SAFETY: the host lowered `len` records at `batch`; a key is a valid
    // (pointer, length) pair into this memory.
    let key = unsafe {
        let record = std::slice::from_raw_parts(batch, RECORD_SIZE);
        let ptr = u32::from_le_bytes([record[8], record[9], record[10], record[11]]) as usize;
        let len = u32::from_le_bytes([record[12], record[13], record[14], record[15]]) as usize;
        std::slice::from_raw_parts(ptr as *const u8, len)
    };
    let key = std::str::from_utf8(key).unwrap_or("");
    match key.split_once('x') {
        Some((count, kib)) => (
            count.parse().unwrap_or(default.0),
            kib.parse().unwrap_or(default.1),
        ),
        None => default,
    }
}

/// The transform export, by hand.
///
/// # Safety
/// Called by the component's canonical lift with the lowered batch.
#[cfg(target_arch = "wasm32")]
#[unsafe(export_name = "causeway:plugin/transform@0.1.0#transform")]
unsafe extern "C" fn transform(batch: *const u8, len: usize) -> *const u8 {
    // SAFETY: the arguments come from the canonical ABI.
    let (count, kib) = unsafe { shape(batch, len) };
    let shared: &'static [u8] = Vec::leak(vec![b'x'; kib * 1024]);
    let stream: &'static [u8] = b"s";
    let key: &'static [u8] = b"k";
    let records: &'static mut [u8] = Vec::leak(vec![0u8; count * RECORD_SIZE]);
    for record in records.chunks_exact_mut(RECORD_SIZE) {
        put(record, 0, stream.as_ptr() as u32);
        put(record, 4, stream.len() as u32);
        put(record, 8, key.as_ptr() as u32);
        put(record, 12, key.len() as u32);
        // op 16: upsert (0); source-timestamp 32: none (0).
        put(record, 20, shared.as_ptr() as u32);
        put(record, 24, shared.len() as u32);
    }
    // SAFETY: one call at a time (wasm is single-threaded here); the area
    // is read by the host before the next call.
    unsafe {
        let area = &mut *std::ptr::addr_of_mut!(RETURN_AREA);
        area.0 = [0; 16];
        put(&mut area.0, 8, records.as_ptr() as u32);
        put(&mut area.0, 12, count as u32);
        area.0.as_ptr()
    }
}
