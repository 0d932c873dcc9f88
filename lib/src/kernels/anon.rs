//! Anonymous memory for data streamed on every token (repacked weights, the read probe's buffer,
//! synthetic models), advised for transparent huge pages.
//!
//! Where `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` (many distributions), heap
//! memory gets 4 KiB pages: one TLB entry and one page walk per 4 KiB read. Weights memory-mapped
//! from a file on a file system with large folios (ext4, XFS on recent kernels) are mapped with
//! 2 MiB entries already. On the 2-core dev box, reading a repacked 1 GB Q4_K matrix on two
//! threads went from 27.9–29.1 to 31.1–33.4 GB/s with huge pages (`examples/kq_speed`).

/// Zeroed, page-aligned anonymous memory of `len` bytes (at least one byte), advised for huge
/// pages on Linux unless `MLLAMA_NO_HUGEPAGES` is set (for comparisons).
pub fn huge_zeroed(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(len.max(1))?;
    #[cfg(target_os = "linux")]
    if std::env::var_os("MLLAMA_NO_HUGEPAGES").is_none() {
        // Only advice: where it is refused the memory works the same with small pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Ok(map)
}
