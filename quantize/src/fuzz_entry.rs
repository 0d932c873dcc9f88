//! Body of the `safetensors` fuzz target, shared with `tests/fuzz_regressions.rs`.
//! Input framing: a 2-byte little-endian length L, then L bytes of index JSON (L = 0: no index,
//! the rest is `model.safetensors`), then the shard bytes (the file the index names, or
//! `model-00001-of-00001.safetensors`). Not part of the supported API.

use crate::checkpoint::Checkpoint;

/// Write the framed input as a checkpoint directory under `dir` and read every tensor's first row.
pub fn checkpoint(dir: &std::path::Path, data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let l = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    if l > rest.len() {
        return;
    }
    let (index, shard) = rest.split_at(l);
    if l == 0 {
        let _ = std::fs::write(dir.join("model.safetensors"), shard);
    } else {
        let _ = std::fs::write(dir.join("model.safetensors.index.json"), index);
        let _ = std::fs::write(dir.join("model-00001-of-00001.safetensors"), shard);
    }
    let Ok(ck) = Checkpoint::open(dir) else {
        return;
    };
    let names: Vec<String> = ck.names().map(str::to_owned).collect();
    for n in names {
        let Some(t) = ck.get(&n) else { continue };
        let row = t.shape.last().copied().unwrap_or(1).max(1);
        if t.n_elements() == 0 || row > 1 << 16 {
            continue;
        }
        let mut buf = vec![0f32; row];
        ck.read_rows_f32(t, row, 0, &mut buf);
    }
}
