//! Anonymous memory for data streamed on every token (repacked weights, the read probe's buffer,
//! synthetic models), advised for transparent huge pages.
//!
//! Where `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` (many distributions), heap
//! memory gets 4 KiB pages: one TLB entry and one page walk per 4 KiB read. Weights memory-mapped
//! from a file on a file system with large folios (ext4, XFS on recent kernels) are mapped with
//! 2 MiB entries already. On the 2-core dev box, reading a repacked 1 GB Q4_K matrix on two
//! threads went from 27.9–29.1 to 31.1–33.4 GB/s with huge pages (`examples/kq_speed`).

/// Huge page size the buffers are aligned to.
const HUGE: usize = 2 << 20;

/// Zeroed anonymous memory of `len` bytes (at least one byte) starting on a 2 MiB boundary,
/// advised for huge pages on Linux unless `MLLAMA_NO_HUGEPAGES` is set (for comparisons).
///
/// Only the 2 MiB-aligned stretches of a mapping can be huge pages, and a plain anonymous map
/// starts wherever the kernel puts it: a 3 MB matrix could get none, a 26 MB one lose up to two.
/// Buffers of at least 2 MiB are therefore mapped 2 MiB longer and used from the first aligned
/// byte (the slack is never touched, so it costs address space only). On the 2-core Xeon VM the
/// 3B-shaped Q4_0 file's repacked copies got 2.44 GB of huge pages instead of 1.99
/// (`AnonHugePages`), and decoded 14.71 / 14.53 against 14.38 / 14.32 tokens/s (interleaved).
pub fn huge_zeroed(len: usize) -> std::io::Result<HugeBuf> {
    let len = len.max(1);
    let slack = if len >= HUGE { HUGE } else { 0 };
    let map = memmap2::MmapMut::map_anon(len + slack)?;
    let off = (map.as_ptr() as usize).next_multiple_of(slack.max(1)) - map.as_ptr() as usize;
    #[cfg(target_os = "linux")]
    if std::env::var_os("MLLAMA_NO_HUGEPAGES").is_none() {
        // Only advice: where it is refused the memory works the same with small pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Ok(HugeBuf { map, off, len })
}

/// Memory from [`huge_zeroed`]: `len` bytes at offset `off` of the mapping.
pub struct HugeBuf {
    map: memmap2::MmapMut,
    off: usize,
    len: usize,
}

impl HugeBuf {
    /// Give the pages lying wholly inside bytes `start..start + len` back to the system
    /// (`madvise(DONTNEED)`: they read back as zeros).
    ///
    /// # Safety
    /// Nothing reads those bytes expecting their old contents again.
    pub unsafe fn release_range(&self, start: usize, len: usize) -> std::io::Result<()> {
        assert!(
            start + len <= self.len,
            "HugeBuf::release_range out of bounds"
        );
        // SAFETY: inside the mapping (asserted); the caller guarantees nobody needs the bytes.
        unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.off + start,
                len,
            )
        }
    }
}

impl std::ops::Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.off..self.off + self.len]
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf({} bytes)", self.len)
    }
}
