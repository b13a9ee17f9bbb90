//! The plugin's memory allocator: small blocks from per-size free lists.
//!
//! A call moves thousands of short strings in and out of the guest: the host
//! asks `cabi_realloc` for each string it lowers, the guest frees them after
//! the call, and the mapping in between allocates a few more per record. The
//! default allocator (wasi-libc's dlmalloc) takes several nested calls and a
//! search for each, and in the sandbox every call and loop pays a deadline
//! check. Here a small block is a pop from, or a push onto, the free list of
//! its size class: freed blocks serve the next call's records without
//! touching dlmalloc. Large or over-aligned blocks still go to it.
//!
//! Freed small blocks stay on their lists for the instance's life (wasm
//! memory never shrinks anyway): an instance holds as many of each size as
//! it once held live at once, and no more.
//!
//! A wasm32-wasip2 component has no threads, so the state is a plain global;
//! the SDK installs it only there, and only with its `allocator` feature (on
//! by default: turn it off to bring your own `#[global_allocator]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Size classes: 16, 32, … 2048 bytes.
const CLASSES: usize = 8;
/// log2 of the smallest class.
const MIN_SHIFT: u32 = 4;
/// The largest block served from a free list.
const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// Every small block is aligned this much (a class is a multiple of it).
const ALIGN: usize = 1 << MIN_SHIFT;
/// The first chunk taken from dlmalloc to carve blocks from: a small call's
/// blocks fit in it, so a fresh instance grows its memory no more than with
/// dlmalloc alone (a 64 KiB first chunk made a fresh call of one record 65%
/// slower: a page more to grow and fault in).
const FIRST_CHUNK: usize = 4 << 10;
/// Each further chunk is twice the last, up to this.
const MAX_CHUNK: usize = 64 << 10;

struct State {
    /// The head of each class's list of freed blocks (each holds the next).
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
    /// The size of the next chunk.
    chunk: usize,
}

/// The allocator the SDK installs in wasm builds, over a `backing`
/// allocator (the system's: dlmalloc) for chunks and large blocks.
pub struct SizeClasses<B = System> {
    state: UnsafeCell<State>,
    backing: B,
}

// SAFETY: without the atomics feature a wasm module has no threads: no two
// calls into the allocator can overlap.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// An allocator over the system's, with nothing carved yet.
    pub const fn new() -> SizeClasses {
        SizeClasses::over(System)
    }
}

impl<B> SizeClasses<B> {
    /// An allocator over `backing`, with nothing carved yet.
    pub const fn over(backing: B) -> SizeClasses<B> {
        SizeClasses {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
                chunk: FIRST_CHUNK,
            }),
            backing,
        }
    }
}

/// The class of a small layout, or `None` for one dlmalloc serves.
#[inline]
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(ALIGN);
    Some((usize::BITS - (size - 1).leading_zeros() - MIN_SHIFT) as usize)
}

/// The size of a class's blocks.
#[inline]
fn class_size(class: usize) -> usize {
    ALIGN << class
}

impl State {
    #[inline]
    unsafe fn alloc(&mut self, class: usize, backing: &impl GlobalAlloc) -> *mut u8 {
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a freed block holds the next free block's address.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        unsafe { self.carve(class, backing) }
    }

    #[cold]
    unsafe fn carve(&mut self, class: usize, backing: &impl GlobalAlloc) -> *mut u8 {
        let size = class_size(class);
        if (self.end as usize) - (self.next as usize) < size {
            let chunk_size = self.chunk;
            // SAFETY: both sizes are non-zero and ALIGN a power of two.
            let chunk =
                unsafe { backing.alloc(Layout::from_size_align_unchecked(chunk_size, ALIGN)) };
            if chunk.is_null() {
                // Near the memory limit a whole chunk may not fit where this
                // one block still does: it joins its class's list when freed.
                return unsafe { backing.alloc(Layout::from_size_align_unchecked(size, ALIGN)) };
            }
            // The old chunk's tail (smaller than this block) is left unused.
            self.next = chunk;
            self.end = unsafe { chunk.add(chunk_size) };
            self.chunk = (chunk_size * 2).min(MAX_CHUNK);
        }
        let block = self.next;
        self.next = unsafe { block.add(size) };
        block
    }

    #[inline]
    unsafe fn free(&mut self, block: *mut u8, class: usize) {
        // SAFETY: the block is at least ALIGN bytes and ours again.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClasses<B> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: single-threaded (see `Sync` above).
            Some(c) => unsafe { (*self.state.get()).alloc(c, &self.backing) },
            None => unsafe { self.backing.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            Some(_) => {
                let block = unsafe { self.alloc(layout) };
                if !block.is_null() {
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block
            }
            None => unsafe { self.backing.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(layout) {
            Some(c) => unsafe { (*self.state.get()).free(block, c) },
            None => unsafe { self.backing.dealloc(block, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is a valid size for this alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            (Some(old), Some(c)) if old == c => block,
            (None, None) => unsafe { self.backing.realloc(block, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_fall_into_the_smallest_class_that_holds_them() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(100, 4)), Some(3));
        assert_eq!(class(layout(MAX_SMALL, 1)), Some(CLASSES - 1));
        assert_eq!(class_size(CLASSES - 1), MAX_SMALL);
        // Too large or too aligned: dlmalloc's.
        assert_eq!(class(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn a_freed_block_serves_the_next_allocation_of_its_class() {
        let a = SizeClasses::new();
        unsafe {
            let first = a.alloc(layout(24, 8));
            let second = a.alloc(layout(30, 8));
            assert_ne!(first, second);
            assert_eq!(first as usize % ALIGN, 0);
            assert_eq!(second as usize % ALIGN, 0);
            a.dealloc(first, layout(24, 8));
            // Same class (32 bytes): the freed block comes back.
            assert_eq!(a.alloc(layout(20, 1)), first);
            // Another class does not take it.
            let other = a.alloc(layout(10, 1));
            assert_ne!(other, first);
        }
    }

    #[test]
    fn realloc_keeps_the_block_within_its_class_and_the_contents_across_classes() {
        let a = SizeClasses::new();
        unsafe {
            let block = a.alloc(layout(40, 1));
            for i in 0..40 {
                block.add(i).write(i as u8);
            }
            // 40 and 64 bytes are both in the 64-byte class.
            assert_eq!(a.realloc(block, layout(40, 1), 64), block);
            // Up into a larger class, then beyond the small classes, then back.
            let grown = a.realloc(block, layout(64, 1), 1000);
            let large = a.realloc(grown, layout(1000, 1), 10_000);
            let small = a.realloc(large, layout(10_000, 1), 40);
            for i in 0..40 {
                assert_eq!(small.add(i).read(), i as u8, "byte {i}");
            }
            a.dealloc(small, layout(40, 1));
        }
    }

    /// A backing allocator that records the sizes it gives, and refuses
    /// what is larger than `room` (as dlmalloc does near the plugin's memory
    /// limit).
    struct Recording {
        room: usize,
        sizes: std::cell::RefCell<Vec<usize>>,
    }

    impl Recording {
        fn with_room(room: usize) -> Recording {
            Recording {
                room,
                sizes: Default::default(),
            }
        }
    }

    unsafe impl GlobalAlloc for Recording {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.size() > self.room {
                return ptr::null_mut();
            }
            self.sizes.borrow_mut().push(layout.size());
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            unsafe { System.dealloc(block, layout) }
        }
    }

    #[test]
    fn chunks_start_small_and_double_up_to_the_largest() {
        let a = SizeClasses::over(Recording::with_room(usize::MAX));
        let mut blocks = Vec::new();
        unsafe {
            // A small call's blocks fit in the first chunk.
            for _ in 0..8 {
                blocks.push((a.alloc(layout(200, 8)), layout(200, 8)));
            }
            assert_eq!(*a.backing.sizes.borrow(), [FIRST_CHUNK]);
            for _ in 0..100 {
                blocks.push((a.alloc(layout(MAX_SMALL, 8)), layout(MAX_SMALL, 8)));
            }
            let sizes = a.backing.sizes.borrow().clone();
            assert_eq!(
                sizes[..6],
                [4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 64 << 10]
            );
            assert!(sizes.iter().all(|&s| s <= MAX_CHUNK));
            for (block, l) in blocks {
                a.dealloc(block, l);
            }
        }
    }

    #[test]
    fn without_room_for_a_chunk_a_block_is_still_served_and_then_reused() {
        // Room for a block, not for a chunk.
        let a = SizeClasses::over(Recording::with_room(MAX_SMALL));
        unsafe {
            let block = a.alloc(layout(100, 8));
            assert!(!block.is_null());
            assert_eq!(block as usize % ALIGN, 0);
            // The block is as large as its class: it may serve any request
            // of the class once it is on the list.
            assert_eq!(*a.backing.sizes.borrow(), [class_size(3)]);
            a.dealloc(block, layout(100, 8));
            assert_eq!(a.alloc(layout(128, 16)), block);
            assert_eq!(a.backing.sizes.borrow().len(), 1);
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let a = SizeClasses::new();
        unsafe {
            let block = a.alloc(layout(48, 8));
            block.write_bytes(0xAB, 48);
            a.dealloc(block, layout(48, 8));
            let again = a.alloc_zeroed(layout(48, 8));
            assert_eq!(again, block);
            assert!((0..48).all(|i| again.add(i).read() == 0));
        }
    }

    /// Many blocks of mixed sizes live at once, some freed and reallocated in
    /// between: no two live blocks overlap, and each keeps what was written.
    #[test]
    fn live_blocks_never_overlap_and_keep_their_contents() {
        let a = SizeClasses::new();
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize
        };
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        unsafe {
            for step in 0..20_000 {
                let pick = next();
                if live.len() > 200 || (pick % 3 == 0 && !live.is_empty()) {
                    let (block, l, fill) = live.swap_remove(pick % live.len());
                    assert!((0..l.size()).all(|i| block.add(i).read() == fill));
                    if pick % 2 == 0 {
                        a.dealloc(block, l);
                    } else {
                        let size = 1 + next() % 3000;
                        let moved = a.realloc(block, l, size);
                        let kept = l.size().min(size);
                        assert!((0..kept).all(|i| moved.add(i).read() == fill));
                        let l = layout(size, l.align());
                        moved.write_bytes(fill, size);
                        live.push((moved, l, fill));
                    }
                } else {
                    let l = layout(1 + next() % 3000, 1 << (next() % 7));
                    let block = a.alloc(l);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % l.align(), 0);
                    let fill = step as u8;
                    block.write_bytes(fill, l.size());
                    live.push((block, l, fill));
                }
            }
            let mut spans: Vec<(usize, usize)> = live
                .iter()
                .map(|(b, l, _)| (*b as usize, *b as usize + l.size()))
                .collect();
            spans.sort();
            assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
            for (block, l, fill) in live {
                assert!((0..l.size()).all(|i| block.add(i).read() == fill));
                a.dealloc(block, l);
            }
        }
    }
}
