//! Read-only maps of files the store does not own (import sources), safe
//! against the file shrinking while it is mapped.
//!
//! Import hashes a source through a map, as `b3sum` does: reading through
//! `pread` instead costs a copy of every byte, a third of import time. But a
//! mapped file that another process truncates turns the next read of a lost
//! page into SIGBUS, which would kill the whole node. So each [`SourceMap`]
//! registers its address range, and a SIGBUS handler (installed once, chaining
//! to the one before it for every other address) maps a zero page over a
//! lost page of a registered range and marks that map as faulted. The read
//! goes on with zeros; the import checks [`SourceMap::faulted`] after each
//! window and fails with an error naming the file, so no wrong bytes are ever
//! committed. The map is unregistered before it is unmapped.

use std::{
    fs::File,
    io,
    ops::Range,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        OnceLock,
    },
};

/// How many source maps can be registered at once (concurrent imports);
/// an import that finds no free slot reads with `pread` instead.
const SLOTS: usize = 32;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

static SLOT_TABLE: [Slot; SLOTS] =
    [const { Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), faulted: AtomicBool::new(false) } }; SLOTS];
/// The SIGBUS action before ours, to chain to; set once, before ours is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Whether our handler is in place.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// A read-only map of a whole file whose lost pages read as zeros and are
/// reported by [`SourceMap::faulted`] instead of raising SIGBUS.
pub(crate) struct SourceMap {
    map: memmap2::Mmap,
    slot: usize,
}

impl SourceMap {
    /// Maps the first `len` bytes of `file` (`len` > 0). `None` if no guard
    /// slot is free or the handler could not be installed (read the file
    /// with `pread` then); an error if the map itself fails.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Option<SourceMap>> {
        if !*INSTALLED.get_or_init(install) {
            return Ok(None);
        }
        // SAFETY: a read-only map; the file may change under it, which is
        // what the registration below makes safe (lost pages read as zero and
        // are reported). Its bytes are only hashed and copied, never trusted:
        // a changed file gives a wrong hash or a reported fault.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        let start = map.as_ptr() as usize;
        for (i, slot) in SLOT_TABLE.iter().enumerate() {
            if slot.start.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                slot.faulted.store(false, Ordering::Relaxed);
                slot.end.store(start + len, Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Ok(Some(SourceMap { map, slot: i }));
            }
        }
        Ok(None)
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// True if a page could not be read (the file shrank) since the map was made.
    pub(crate) fn faulted(&self) -> bool {
        SLOT_TABLE[self.slot].faulted.load(Ordering::Acquire)
    }

    /// Maps the pages of `range` in at once (so a write from them does not
    /// fault page by page). Best effort: a lost page still reads as zeros.
    pub(crate) fn populate(&self, range: Range<usize>) {
        // SAFETY: advice on a range of this map; MADV_POPULATE_READ (Linux
        // 5.14) only faults pages in, and fails harmlessly where unsupported.
        unsafe {
            libc::madvise(
                self.map.as_ptr().add(range.start) as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_POPULATE_READ,
            );
        }
    }

    /// Drops the pages of `range` from this process (they stay in the page
    /// cache), so resident memory stays bounded whatever the file's size.
    pub(crate) fn release(&self, range: Range<usize>) {
        release(&self.map, range);
    }
}

/// Drops the pages of `range` of a read-only file map from this process
/// (they stay in the page cache). Callers release a range only after every
/// read of it has finished.
pub(crate) fn release(map: &memmap2::Mmap, range: Range<usize>) {
    // SAFETY: MADV_DONTNEED on a read-only file map: a later read of the
    // range faults the page cache back in, so no slice can see lost data.
    let _ =
        unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.end - range.start) };
}

impl Drop for SourceMap {
    fn drop(&mut self) {
        // Unregistered before `map` is unmapped (fields drop after this).
        let slot = &SLOT_TABLE[self.slot];
        slot.start.store(usize::MAX, Ordering::Release);
        slot.end.store(0, Ordering::Release);
        slot.start.store(0, Ordering::Release);
    }
}

fn install() -> bool {
    // SAFETY: plain sigaction calls on zeroed (valid) structs.
    unsafe {
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
            return false;
        }
        let _ = PREVIOUS.set(previous);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
    }
}

/// Maps a zero page over a lost page of a registered source map; any other
/// SIGBUS goes to the previous handler (or the default action).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: called by the kernel with a valid siginfo; only atomics and
    // async-signal-safe system calls are used.
    unsafe {
        let addr = (*info).si_addr() as usize;
        for slot in &SLOT_TABLE {
            let start = slot.start.load(Ordering::Acquire);
            if start == 0 || start == usize::MAX || addr < start || addr >= slot.end.load(Ordering::Acquire) {
                continue;
            }
            let page = addr & !(page_size() - 1);
            let zero = libc::mmap(
                page as *mut libc::c_void,
                page_size(),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zero != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
        }
        chain(sig, info, context);
    }
}

unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    match PREVIOUS.get().map(|p| (p.sa_sigaction, p.sa_flags)) {
        Some((f, flags)) if f != libc::SIG_DFL && f != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(f) };
                f(sig, info, context);
            } else {
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(f) };
                f(sig);
            }
        }
        // Default action: restore it and return; the faulting access runs
        // again and the process dies of SIGBUS as it would have.
        _ => unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        },
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf is async-signal-safe.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_truncated_source_reads_zeros_and_reports_the_fault() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 64 * 1024]).unwrap();
        let map = SourceMap::new(&f, 64 * 1024).unwrap().expect("a free slot");
        assert_eq!(map.bytes()[40_000], 7);
        assert!(!map.faulted());
        f.set_len(8192).unwrap();
        let tail: u64 = map.bytes()[16 * 1024..].iter().map(|&b| b as u64).sum();
        assert_eq!(tail, 0, "lost pages read as zeros");
        assert!(map.faulted());
        assert_eq!(map.bytes()[100], 7, "pages still in the file are intact");
    }

    #[test]
    fn slots_are_reused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        for _ in 0..3 * SLOTS {
            let m = SourceMap::new(&f, 4096).unwrap().expect("a free slot");
            assert!(!m.faulted());
        }
    }
}
