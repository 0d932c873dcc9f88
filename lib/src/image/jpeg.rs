//! A JPEG decoder whose output is bit-exact with libjpeg-turbo's default decompression, which is what
//! Pillow (and therefore HF's image processor) uses.
//!
//! The `image` crate decodes JPEG with `zune-jpeg`, which differs from libjpeg-turbo by up to ~9
//! levels per channel on chroma-subsampled photos (different IDCT rounding, chroma upsampling and
//! YCbCr conversion). That is larger than the preprocessing tolerance, so this module reproduces
//! libjpeg-turbo's default path instead (written from the JPEG standard and the behaviour documented
//! in libjpeg's sources, not copied):
//!
//! * baseline, extended-sequential and progressive Huffman-coded 8-bit JPEGs with 1, 3 or 4
//!   components, any integral sampling factors, restart intervals, interleaved or not;
//! * the accurate integer inverse DCT (`JDCT_ISLOW`: 13-bit constants, 2 extra bits in the first
//!   pass, the same descaling and the same range-limit table);
//! * "fancy" (triangle-filter) chroma upsampling for 2:1 horizontal and/or vertical factors, with
//!   edge replication at the component's real width and height, and pixel replication for other
//!   integral factors (libjpeg's choices with `do_fancy_upsampling = TRUE`);
//! * YCbCr -> RGB with libjpeg's 16-bit fixed-point tables, colour space guessed from the JFIF / Adobe
//!   markers and component ids as libjpeg does; CMYK / YCCK decoded and converted to RGB the way
//!   Pillow does (`CMYK;I` raw mode then Pillow's `cmyk2rgb`).
//!
//! Not supported (an error is returned): arithmetic coding, lossless and hierarchical JPEG,
//! 12/16-bit samples, 2-component images, files that need the standard Huffman tables because they
//! define none (Motion-JPEG frames). Progressive files whose scans leave low-frequency coefficients
//! incomplete would be block-smoothed by libjpeg; we do not smooth (complete files are unaffected).
//!
//! Corrupt entropy data is decoded like libjpeg does (bad codes decode as zero, a marker in the middle
//! of a scan ends it with zero-filled coefficients); a file that ends before the image data does is
//! refused, as Pillow refuses it ("image file is truncated"). No input can make it panic.

use super::format::{check_dimensions, Format, Rgb8};
use super::ImageLimits;
use rayon::prelude::*;

/// Zigzag index -> natural (row-major) index, with 16 extra entries that absorb run-length overruns
/// in corrupt data (libjpeg does the same so that a bad run stores into coefficient 63).
const NATURAL_ORDER: [usize; 80] = {
    let mut t = [63usize; 80];
    // Build the zigzag order by walking the anti-diagonals.
    let mut i = 0;
    let mut s = 0;
    while s < 15 {
        let mut k = 0;
        while k <= s {
            // Even diagonals go up-right (row decreasing), odd ones down-left.
            let (r, c) = if s % 2 == 0 { (s - k, k) } else { (k, s - k) };
            if r < 8 && c < 8 {
                t[i] = r * 8 + c;
                i += 1;
            }
            k += 1;
        }
        s += 1;
    }
    t
};

/// Maximum number of scans we accept (a normal progressive file has about 10); protects against
/// files that repeat tiny scans to burn CPU.
const MAX_SCANS: usize = 256;

fn corrupt(msg: impl std::fmt::Display) -> String {
    format!("corrupt or truncated JPEG: {msg}")
}
fn unsupported(msg: impl std::fmt::Display) -> String {
    format!("unsupported JPEG: {msg}")
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
}

/// Walk the marker segments up to the first SOF and return its (width, height).
pub(crate) fn header_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let mut pos = 2;
    loop {
        if *b.get(pos)? != 0xFF {
            return None;
        }
        while *b.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        let m = *b.get(pos + 1)?;
        match m {
            0xD0..=0xD7 | 0x01 => pos += 2,
            0xC0..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC => {
                let h = be16(b, pos + 5)? as u32;
                let w = be16(b, pos + 7)? as u32;
                return Some((w, h));
            }
            0xDA | 0xD9 => return None,
            _ => pos += 2 + be16(b, pos + 2)?,
        }
    }
}

/// A Huffman decoding table: a 9-bit lookahead table plus the canonical-code limits for longer codes.
#[derive(Clone)]
struct Huffman {
    /// For each 9-bit prefix: `(code length << 8) | symbol`, or 0 when the code is longer.
    lookup: Box<[u16; 512]>,
    /// Largest code of each length (`-1` when none), index 1..=16; `maxcode[17]` is a sentinel.
    maxcode: [i32; 18],
    /// `values` index of the first code of each length minus that code.
    valoffset: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Result<Huffman, String> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > 256 || total != values.len() {
            return Err(corrupt("bad Huffman table"));
        }
        let mut lookup = Box::new([0u16; 512]);
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            valoffset[len] = k as i32 - code as i32;
            for _ in 0..n {
                if code >= (1u32 << len) {
                    return Err(corrupt("bad Huffman table"));
                }
                if len <= 9 {
                    let shift = 9 - len;
                    let base = (code << shift) as usize;
                    for e in lookup[base..base + (1 << shift)].iter_mut() {
                        *e = ((len as u16) << 8) | values[k] as u16;
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len] = code as i32 - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman {
            lookup,
            maxcode,
            valoffset,
            values: values.to_vec(),
        })
    }
}

/// Reads entropy-coded bits, removing stuffed zero bytes and stopping at markers (after which it
/// supplies zero bits, as libjpeg does).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    nbits: u32,
    /// A marker (or the end of the data) stopped the reader; zeros are supplied from now on.
    stopped: bool,
    /// Number of zero bytes supplied after stopping.
    fake_bytes: u64,
    /// The data ended (as opposed to a marker stopping the reader).
    eof: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> BitReader<'a> {
        BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
            stopped: false,
            fake_bytes: 0,
            eof: false,
        }
    }

    #[inline]
    fn next_byte(&mut self) -> u8 {
        if !self.stopped {
            if let Some(&b) = self.data.get(self.pos) {
                if b != 0xFF {
                    self.pos += 1;
                    return b;
                }
                // 0xFF: a stuffed data byte if followed by 0x00, fill bytes if followed by 0xFF,
                // otherwise a marker.
                let mut p = self.pos + 1;
                while self.data.get(p) == Some(&0xFF) {
                    p += 1;
                }
                match self.data.get(p) {
                    Some(&0x00) => {
                        self.pos = p + 1;
                        return 0xFF;
                    }
                    // Leave `pos` on the marker's last 0xFF prefix.
                    Some(_) => self.pos = p - 1,
                    None => {
                        self.pos = self.data.len();
                        self.eof = true;
                    }
                }
            } else {
                self.eof = true;
            }
            self.stopped = true;
        }
        self.fake_bytes += 1;
        0
    }

    #[inline]
    fn fill(&mut self) {
        while self.nbits <= 56 {
            let b = self.next_byte() as u64;
            self.buf |= b << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.nbits < n {
            self.fill();
        }
        (self.buf >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.nbits -= n;
    }

    #[inline]
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    #[inline]
    fn bit(&mut self) -> bool {
        self.bits(1) != 0
    }

    /// Decode one Huffman symbol; a code that matches nothing decodes as 0 (libjpeg's behaviour).
    #[inline]
    fn decode(&mut self, h: &Huffman) -> u8 {
        let look = self.peek(9);
        let e = h.lookup[look as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            return e as u8;
        }
        let code16 = self.peek(16) as i32;
        for len in 10..=16usize {
            let code = code16 >> (16 - len);
            if code <= h.maxcode[len] {
                self.consume(len as u32);
                let idx = (code + h.valoffset[len]) as usize;
                return h.values.get(idx).copied().unwrap_or(0);
            }
        }
        // Bad code: skip 16 bits' worth of garbage as libjpeg effectively does and return 0.
        self.consume(16);
        0
    }

    /// `RECEIVE` + `EXTEND`: read `s` bits and sign-extend as a JPEG magnitude category.
    #[inline]
    fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let s = s.min(16);
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) {
            v + ((-1i32) << s) + 1
        } else {
            v
        }
    }

    /// True if more bits were consumed than the data held and the data simply ended (no marker).
    fn overran_end(&self) -> bool {
        self.eof && self.fake_bytes * 8 > self.nbits as u64
    }

    /// Handle a restart marker: drop buffered bits, skip to the next marker and consume it if it is
    /// an RSTn.
    fn restart(&mut self) {
        self.buf = 0;
        self.nbits = 0;
        self.fake_bytes = 0;
        let mut p = self.pos;
        // Find the next marker (skipping garbage, as libjpeg's next_marker does).
        loop {
            match self.data.get(p) {
                None => break,
                Some(&0xFF) => {
                    let mut q = p + 1;
                    while self.data.get(q) == Some(&0xFF) {
                        q += 1;
                    }
                    match self.data.get(q) {
                        Some(&0) => p = q + 1,
                        Some(&m) if (0xD0..=0xD7).contains(&m) => {
                            p = q + 1;
                            break;
                        }
                        _ => {
                            p = q.saturating_sub(1);
                            break;
                        }
                    }
                }
                Some(_) => p += 1,
            }
        }
        self.pos = p;
        self.stopped = false;
        self.eof = false;
    }
}

/// One image component of the frame.
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table latched at the component's first scan (natural order), as `i16` like
    /// libjpeg-turbo's SIMD-build multiplier table.
    quant: Option<[i16; 64]>,
    /// Coefficient blocks per row / rows of blocks, padded to whole MCUs.
    bw: usize,
    bh: usize,
    /// Real blocks per row / rows for non-interleaved scans.
    bw_real: usize,
    bh_real: usize,
    /// Sample width / height of the component (`ceil(W * h / hmax)`).
    dw: usize,
    dh: usize,
    coefs: Vec<[i16; 64]>,
    dc_pred: i32,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    comps: Vec<Component>,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

struct Scan {
    comps: Vec<usize>,
    dc_tables: Vec<usize>,
    ac_tables: Vec<usize>,
    ss: usize,
    se: usize,
    ah: u32,
    al: u32,
}

/// Decode a JPEG to RGB8 exactly as Pillow (libjpeg-turbo) + `convert("RGB")` would.
///
/// The stages: marker segments (tables, frame header) and the entropy-coded scans into the
/// coefficient blocks ([`Decoder::read`]); the end-of-file checks and the colour space
/// ([`Decoder::finish`]); the inverse DCT of every block into sample planes ([`idct_all`]);
/// chroma upsampling and colour conversion to RGB ([`upsample_and_convert`]).
pub(crate) fn decode(data: &[u8], limits: &ImageLimits) -> Result<Rgb8, String> {
    let mut decoder = Decoder::new(data);
    decoder.read(limits)?;
    let (frame, color) = decoder.finish()?;
    let planes = idct_all(&frame);
    let rgb = upsample_and_convert(&frame, &planes, color)?;
    Ok(Rgb8 {
        width: frame.width as u32,
        height: frame.height as u32,
        data: rgb,
    })
}

/// What the marker segments read so far define: tables, the frame (with its coefficients), and
/// what decides the colour space and the end-of-file checks.
struct Decoder<'d> {
    data: &'d [u8],
    /// Read position in `data`.
    pos: usize,
    /// Quantisation tables (natural order).
    qtables: [Option<[u16; 64]>; 4],
    dc_tables: [Option<Huffman>; 4],
    ac_tables: [Option<Huffman>; 4],
    /// MCUs between restart markers (0: none).
    restart_interval: usize,
    frame: Option<Frame>,
    saw_jfif: bool,
    adobe_transform: Option<u8>,
    scans: usize,
    saw_eoi: bool,
    /// Whether the only scan so far held every component.
    single_scan_all_comps: bool,
}

impl<'d> Decoder<'d> {
    fn new(data: &'d [u8]) -> Self {
        Decoder {
            data,
            pos: 2, // after SOI
            qtables: [None; 4],
            dc_tables: [None, None, None, None],
            ac_tables: [None, None, None, None],
            restart_interval: 0,
            frame: None,
            saw_jfif: false,
            adobe_transform: None,
            scans: 0,
            saw_eoi: false,
            single_scan_all_comps: false,
        }
    }

    /// Read marker segments up to EOI (or the end of the data), decoding every scan.
    fn read(&mut self, limits: &ImageLimits) -> Result<(), String> {
        while let Some(m) = self.next_marker() {
            match m {
                0xD8 => return Err(corrupt("unexpected second start-of-image marker")),
                0xD9 => {
                    self.saw_eoi = true;
                    return Ok(());
                }
                0xD0..=0xD7 | 0x01 => continue, // no segment
                _ => {}
            }
            let seg = self.segment(m)?;
            self.apply(m, seg, limits)?;
        }
        Ok(())
    }

    /// The next marker code, skipping any garbage (libjpeg warns and skips too); `None` at the end
    /// of the data.
    fn next_marker(&mut self) -> Option<u8> {
        loop {
            match *self.data.get(self.pos)? {
                0xFF => {
                    let mut q = self.pos + 1;
                    while self.data.get(q) == Some(&0xFF) {
                        q += 1;
                    }
                    let mk = *self.data.get(q)?;
                    self.pos = q + 1;
                    if mk != 0 {
                        return Some(mk);
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// The segment of marker `m` (after its length field); the position moves past it.
    fn segment(&mut self, m: u8) -> Result<&'d [u8], String> {
        let (data, pos) = (self.data, self.pos);
        let len = be16(data, pos).ok_or_else(|| corrupt("file ends inside a marker"))?;
        if len < 2 || pos + len > data.len() {
            return Err(corrupt(format!(
                "marker 0x{m:02X} segment runs past the end of the file"
            )));
        }
        self.pos += len;
        Ok(&data[pos + 2..pos + len])
    }

    /// Act on one marker segment.
    fn apply(&mut self, m: u8, seg: &[u8], limits: &ImageLimits) -> Result<(), String> {
        match m {
            0xE0 if seg.len() >= 14 && seg.starts_with(b"JFIF\0") => self.saw_jfif = true,
            0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => {
                self.adobe_transform = Some(seg[11]);
            }
            0xDB => self.define_quant_tables(seg)?,
            0xC4 => self.define_huffman_tables(seg)?,
            0xDD => {
                self.restart_interval = be16(seg, 0).ok_or_else(|| corrupt("short DRI marker"))?;
            }
            0xC0..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC => {
                if self.frame.is_some() {
                    return Err(unsupported("more than one frame"));
                }
                match m {
                    0xC0..=0xC2 => {}
                    0xC3 | 0xC7 | 0xCB | 0xCF => return Err(unsupported("lossless JPEG")),
                    0xC9..=0xCB | 0xCD..=0xCF => return Err(unsupported("arithmetic-coded JPEG")),
                    _ => return Err(unsupported("hierarchical JPEG")),
                }
                self.frame = Some(parse_frame(seg, m == 0xC2, limits)?);
            }
            0xDA => self.scan(seg)?,
            0xDC => return Err(unsupported("DNL marker (height defined after the scan)")),
            _ => {} // APPn, COM and others: skipped.
        }
        Ok(())
    }

    /// DQT: one or more quantisation tables (8- or 16-bit, zigzag order in the file).
    fn define_quant_tables(&mut self, seg: &[u8]) -> Result<(), String> {
        let mut p = 0;
        while p < seg.len() {
            let pq = seg[p] >> 4;
            let tq = (seg[p] & 15) as usize;
            p += 1;
            if tq > 3 || pq > 1 {
                return Err(corrupt("bad quantisation table"));
            }
            let n = if pq == 0 { 64 } else { 128 };
            let t = seg
                .get(p..p + n)
                .ok_or_else(|| corrupt("short quantisation table"))?;
            let mut q = [0u16; 64];
            for (i, &nat) in NATURAL_ORDER[..64].iter().enumerate() {
                q[nat] = if pq == 0 {
                    t[i] as u16
                } else {
                    u16::from_be_bytes([t[2 * i], t[2 * i + 1]])
                };
            }
            self.qtables[tq] = Some(q);
            p += n;
        }
        Ok(())
    }

    /// DHT: one or more Huffman tables (16 code-length counts, then the symbols).
    fn define_huffman_tables(&mut self, seg: &[u8]) -> Result<(), String> {
        let mut p = 0;
        while p < seg.len() {
            let tc = seg[p] >> 4;
            let th = (seg[p] & 15) as usize;
            if tc > 1 || th > 3 {
                return Err(corrupt("bad Huffman table"));
            }
            let counts: [u8; 16] = seg
                .get(p + 1..p + 17)
                .ok_or_else(|| corrupt("short Huffman table"))?
                .try_into()
                .expect("16 bytes");
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let vals = seg
                .get(p + 17..p + 17 + total)
                .ok_or_else(|| corrupt("short Huffman table"))?;
            let h = Huffman::new(&counts, vals)?;
            if tc == 0 {
                self.dc_tables[th] = Some(h);
            } else {
                self.ac_tables[th] = Some(h);
            }
            p += 17 + total;
        }
        Ok(())
    }

    /// SOS: latch the scan components' quantisation tables, then decode the entropy-coded data
    /// that follows the header into the frame's coefficients.
    fn scan(&mut self, seg: &[u8]) -> Result<(), String> {
        let f = self
            .frame
            .as_mut()
            .ok_or_else(|| corrupt("scan before the frame header"))?;
        self.scans += 1;
        if self.scans > MAX_SCANS {
            return Err(unsupported(format!("more than {MAX_SCANS} scans")));
        }
        let scan = parse_scan(seg, f)?;
        for &ci in &scan.comps {
            let c = &mut f.comps[ci];
            if c.quant.is_none() {
                let q = self.qtables[c.tq].ok_or_else(|| {
                    corrupt(format!("quantisation table {} is not defined", c.tq))
                })?;
                c.quant = Some(q.map(|v| v as i16));
            }
        }
        self.single_scan_all_comps = self.scans == 1 && scan.comps.len() == f.comps.len();
        let mut reader = BitReader::new(self.data, self.pos);
        let (dc, ac, ri) = (&self.dc_tables, &self.ac_tables, self.restart_interval);
        decode_scan(f, &scan, dc, ac, ri, &mut reader)?;
        if reader.overran_end() {
            return Err(corrupt("the file ends in the middle of the image data"));
        }
        self.pos = reader.pos;
        Ok(())
    }

    /// After the last marker: the frame, checked complete, and its colour space.
    fn finish(self) -> Result<(Frame, ColorSpace), String> {
        let frame = self
            .frame
            .ok_or_else(|| corrupt("no frame header (SOF) found"))?;
        if self.scans == 0 {
            return Err(corrupt("no image data (SOS) found"));
        }
        // Pillow accepts a missing EOI only for a single-scan image whose data is complete (a scan
        // that ran out of data was refused above); multi-scan images are read to EOI before any
        // output and fail as truncated.
        if !self.saw_eoi && !self.single_scan_all_comps {
            return Err(corrupt("the file ends before the end-of-image marker"));
        }
        // A component that no scan contained stays all-zero (mid-grey), as in libjpeg.
        let color = color_space(&frame, self.saw_jfif, self.adobe_transform)?;
        Ok((frame, color))
    }
}

/// The colour space libjpeg guesses from the component count, the JFIF / Adobe markers and the
/// component ids.
fn color_space(
    frame: &Frame,
    saw_jfif: bool,
    adobe_transform: Option<u8>,
) -> Result<ColorSpace, String> {
    Ok(match frame.comps.len() {
        1 => ColorSpace::Gray,
        3 => {
            let ids = [frame.comps[0].id, frame.comps[1].id, frame.comps[2].id];
            match adobe_transform {
                _ if saw_jfif => ColorSpace::YCbCr,
                Some(0) => ColorSpace::Rgb,
                Some(_) => ColorSpace::YCbCr,
                None if ids == [b'R', b'G', b'B'] => ColorSpace::Rgb,
                None => ColorSpace::YCbCr,
            }
        }
        4 => match adobe_transform {
            Some(0) | None => ColorSpace::Cmyk,
            Some(_) => ColorSpace::Ycck,
        },
        n => return Err(unsupported(format!("{n} colour components"))),
    })
}

fn parse_frame(seg: &[u8], progressive: bool, limits: &ImageLimits) -> Result<Frame, String> {
    if seg.len() < 6 {
        return Err(corrupt("short frame header"));
    }
    if seg[0] != 8 {
        return Err(unsupported(format!("{}-bit samples", seg[0])));
    }
    let height = u16::from_be_bytes([seg[1], seg[2]]) as usize;
    let width = u16::from_be_bytes([seg[3], seg[4]]) as usize;
    if height == 0 {
        return Err(unsupported("height given by a DNL marker"));
    }
    check_dimensions(Format::Jpeg, width as u32, height as u32, limits)?;
    let n = seg[5] as usize;
    if !(n == 1 || n == 3 || n == 4) {
        return Err(unsupported(format!("{n} colour components")));
    }
    if seg.len() < 6 + 3 * n {
        return Err(corrupt("short frame header"));
    }
    let mut comps = Vec::with_capacity(n);
    for i in 0..n {
        let c = &seg[6 + 3 * i..9 + 3 * i];
        let (h, v) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
            return Err(corrupt("bad component sampling factors or table"));
        }
        comps.push(Component {
            id: c[0],
            h,
            v,
            tq: c[2] as usize,
            quant: None,
            bw: 0,
            bh: 0,
            bw_real: 0,
            bh_real: 0,
            dw: 0,
            dh: 0,
            coefs: Vec::new(),
            dc_pred: 0,
        });
    }
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    let mcux = width.div_ceil(8 * hmax);
    let mcuy = height.div_ceil(8 * vmax);
    // Memory: coefficients (128 bytes per block) + sample planes (64 per block) + RGB output.
    let mut need: u64 = width as u64 * height as u64 * 3;
    for c in comps.iter_mut() {
        if hmax % c.h != 0 || vmax % c.v != 0 {
            return Err(unsupported("non-integral chroma sampling ratio"));
        }
        c.bw = mcux * c.h;
        c.bh = mcuy * c.v;
        c.dw = (width * c.h).div_ceil(hmax);
        c.dh = (height * c.v).div_ceil(vmax);
        c.bw_real = c.dw.div_ceil(8);
        c.bh_real = c.dh.div_ceil(8);
        need += (c.bw * c.bh) as u64 * (128 + 64);
    }
    if need > limits.max_alloc {
        return Err(format!(
            "decoding this JPEG needs about {need} bytes, more than the {} byte allocation limit (raise with --max-image-pixels, ImageLimits::max_alloc)",
            limits.max_alloc
        ));
    }
    for c in comps.iter_mut() {
        c.coefs = vec![[0i16; 64]; c.bw * c.bh];
    }
    Ok(Frame {
        width,
        height,
        progressive,
        comps,
        hmax,
        vmax,
        mcux,
        mcuy,
    })
}

fn parse_scan(seg: &[u8], f: &Frame) -> Result<Scan, String> {
    let ns = *seg.first().ok_or_else(|| corrupt("short scan header"))? as usize;
    if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
        return Err(corrupt("bad scan header"));
    }
    let mut comps = Vec::with_capacity(ns);
    let mut dct = Vec::with_capacity(ns);
    let mut act = Vec::with_capacity(ns);
    for i in 0..ns {
        let id = seg[1 + 2 * i];
        let t = seg[2 + 2 * i];
        let ci = f
            .comps
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| corrupt(format!("scan refers to unknown component {id}")))?;
        if comps.contains(&ci) {
            return Err(corrupt("component repeated in a scan"));
        }
        comps.push(ci);
        dct.push((t >> 4) as usize & 3);
        act.push((t & 15) as usize & 3);
    }
    let p = 1 + 2 * ns;
    let (ss, se) = (seg[p] as usize, seg[p + 1] as usize);
    let (ah, al) = ((seg[p + 2] >> 4) as u32, (seg[p + 2] & 15) as u32);
    if ns > 1 {
        let blocks: usize = comps.iter().map(|&c| f.comps[c].h * f.comps[c].v).sum();
        if blocks > 10 {
            return Err(corrupt("too many blocks in an MCU"));
        }
    }
    if f.progressive {
        let bad = if ss == 0 {
            se != 0
        } else {
            se < ss || se > 63 || ns != 1
        };
        if bad || al > 13 || (ah != 0 && ah != al + 1) {
            return Err(corrupt("bad progressive scan parameters"));
        }
    }
    Ok(Scan {
        comps,
        dc_tables: dct,
        ac_tables: act,
        ss,
        se,
        ah,
        al,
    })
}

fn table<'t>(
    tables: &'t [Option<Huffman>; 4],
    i: usize,
    what: &str,
) -> Result<&'t Huffman, String> {
    tables[i]
        .as_ref()
        .ok_or_else(|| unsupported(format!("{what} Huffman table {i} is not defined")))
}

#[derive(Clone, Copy, PartialEq)]
enum ScanKind {
    Sequential,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

/// Per-scan decoding state.
struct ScanState<'t> {
    kind: ScanKind,
    /// DC / AC table of each scan component (`None` when that scan kind does not use it).
    dcs: Vec<Option<&'t Huffman>>,
    acs: Vec<Option<&'t Huffman>>,
    ss: usize,
    se: usize,
    al: u32,
    eobrun: u32,
}

impl ScanState<'_> {
    /// Decode one block of the scan component with scan-local index `si`.
    fn block(&mut self, r: &mut BitReader, block: &mut [i16; 64], dc_pred: &mut i32, si: usize) {
        match self.kind {
            ScanKind::Sequential => self.sequential(r, block, dc_pred, si),
            ScanKind::DcFirst => self.dc_first(r, block, dc_pred, si),
            ScanKind::DcRefine => self.dc_refine(r, block),
            ScanKind::AcFirst => self.ac_first(r, block, si),
            ScanKind::AcRefine => self.ac_refine(r, block, si),
        }
    }

    /// Baseline/sequential: the DC difference, then run-length AC codes to the end of block.
    fn sequential(
        &mut self,
        r: &mut BitReader,
        block: &mut [i16; 64],
        dc_pred: &mut i32,
        si: usize,
    ) {
        let (Some(dc), Some(ac)) = (self.dcs[si], self.acs[si]) else {
            return;
        };
        let s = r.decode(dc) as u32;
        *dc_pred = dc_pred.wrapping_add(r.receive_extend(s));
        block[0] = *dc_pred as i16;
        let mut k = 1usize;
        while k < 64 {
            let rs = r.decode(ac);
            let run = (rs >> 4) as usize;
            let s = (rs & 15) as u32;
            if s != 0 {
                k += run;
                block[NATURAL_ORDER[k]] = r.receive_extend(s) as i16;
            } else {
                if run != 15 {
                    break;
                }
                k += 15;
            }
            k += 1;
        }
    }

    /// Progressive DC, first scan: the DC difference, shifted by the approximation bit.
    fn dc_first(&mut self, r: &mut BitReader, block: &mut [i16; 64], dc_pred: &mut i32, si: usize) {
        let al = self.al;
        let Some(dc) = self.dcs[si] else { return };
        let s = r.decode(dc) as u32;
        *dc_pred = dc_pred.wrapping_add(r.receive_extend(s));
        block[0] = ((*dc_pred as u32) << al) as i16;
    }

    /// Progressive DC refinement: one more bit of the DC coefficient.
    fn dc_refine(&mut self, r: &mut BitReader, block: &mut [i16; 64]) {
        let al = self.al;
        if r.bit() {
            block[0] |= (1u32 << al) as i16;
        }
    }

    /// Progressive AC, first scan of the band `ss..=se` (with end-of-band runs).
    fn ac_first(&mut self, r: &mut BitReader, block: &mut [i16; 64], si: usize) {
        let (ss, se, al) = (self.ss, self.se, self.al);
        if self.eobrun > 0 {
            self.eobrun -= 1;
            return;
        }
        let Some(ac) = self.acs[si] else { return };
        let mut k = ss;
        while k <= se {
            let rs = r.decode(ac);
            let run = (rs >> 4) as u32;
            let s = (rs & 15) as u32;
            if s != 0 {
                k += run as usize;
                let v = r.receive_extend(s);
                block[NATURAL_ORDER[k]] = ((v as u32) << al) as i16;
            } else {
                if run != 15 {
                    self.eobrun = (1 << run) + r.bits(run) - 1;
                    break;
                }
                k += 15;
            }
            k += 1;
        }
    }

    /// Progressive AC refinement of the band `ss..=se`: new ±1 coefficients and correction bits.
    fn ac_refine(&mut self, r: &mut BitReader, block: &mut [i16; 64], si: usize) {
        let (ss, se, al) = (self.ss, self.se, self.al);
        let Some(ac) = self.acs[si] else { return };
        let p1 = (1i32 << al) as i16;
        let m1 = ((-1i32) << al) as i16;
        // Append a correction bit to an already non-zero coefficient.
        let refine = |r: &mut BitReader, c: &mut i16| {
            if r.bit() && (*c & p1) == 0 {
                *c = if *c >= 0 {
                    c.wrapping_add(p1)
                } else {
                    c.wrapping_add(m1)
                };
            }
        };
        let mut k = ss;
        if self.eobrun == 0 {
            while k <= se {
                let rs = r.decode(ac);
                let mut run = (rs >> 4) as i32;
                let s = (rs & 15) as u32;
                let mut val: i16 = 0;
                if s != 0 {
                    val = if r.bit() { p1 } else { m1 };
                } else if run != 15 {
                    self.eobrun = (1 << run) + r.bits(run as u32);
                    break;
                }
                // Skip `run` zero coefficients, refining the non-zero ones passed over.
                loop {
                    let c = &mut block[NATURAL_ORDER[k]];
                    if *c != 0 {
                        refine(r, c);
                    } else {
                        run -= 1;
                        if run < 0 {
                            break;
                        }
                    }
                    k += 1;
                    if k > se {
                        break;
                    }
                }
                if s != 0 {
                    block[NATURAL_ORDER[k]] = val;
                }
                k += 1;
            }
        }
        if self.eobrun > 0 {
            while k <= se {
                let c = &mut block[NATURAL_ORDER[k]];
                if *c != 0 {
                    refine(r, c);
                }
                k += 1;
            }
            self.eobrun -= 1;
        }
    }
}

/// Decode the entropy-coded data of one scan into the coefficient buffers.
fn decode_scan(
    f: &mut Frame,
    scan: &Scan,
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    restart_interval: usize,
    r: &mut BitReader,
) -> Result<(), String> {
    let kind = if !f.progressive {
        ScanKind::Sequential
    } else if scan.ss == 0 {
        if scan.ah == 0 {
            ScanKind::DcFirst
        } else {
            ScanKind::DcRefine
        }
    } else if scan.ah == 0 {
        ScanKind::AcFirst
    } else {
        ScanKind::AcRefine
    };
    // Resolve the tables this scan uses up front (libjpeg fails at scan start when one is missing).
    let mut st = ScanState {
        kind,
        dcs: Vec::new(),
        acs: Vec::new(),
        ss: scan.ss,
        se: scan.se,
        al: scan.al,
        eobrun: 0,
    };
    for i in 0..scan.comps.len() {
        st.dcs.push(match kind {
            ScanKind::Sequential | ScanKind::DcFirst => {
                Some(table(dc_tables, scan.dc_tables[i], "DC")?)
            }
            _ => None,
        });
        st.acs.push(match kind {
            ScanKind::Sequential | ScanKind::AcFirst | ScanKind::AcRefine => {
                Some(table(ac_tables, scan.ac_tables[i], "AC")?)
            }
            _ => None,
        });
    }
    for &ci in &scan.comps {
        f.comps[ci].dc_pred = 0;
    }
    let mut mcus_left = restart_interval;
    // Called before every MCU: handles restart markers (reset predictors and the EOB run).
    let mut before_mcu = |r: &mut BitReader, f: &mut Frame, st: &mut ScanState| {
        if restart_interval == 0 {
            return;
        }
        if mcus_left == 0 {
            r.restart();
            for &ci in &scan.comps {
                f.comps[ci].dc_pred = 0;
            }
            st.eobrun = 0;
            mcus_left = restart_interval;
        }
        mcus_left -= 1;
    };
    if scan.comps.len() == 1 {
        // Non-interleaved: the component's real blocks in raster order.
        let ci = scan.comps[0];
        let (bw_real, bh_real, bw) = (f.comps[ci].bw_real, f.comps[ci].bh_real, f.comps[ci].bw);
        for by in 0..bh_real {
            for bx in 0..bw_real {
                before_mcu(r, f, &mut st);
                let c = &mut f.comps[ci];
                st.block(r, &mut c.coefs[by * bw + bx], &mut c.dc_pred, 0);
            }
        }
    } else {
        for my in 0..f.mcuy {
            for mx in 0..f.mcux {
                before_mcu(r, f, &mut st);
                for (si, &ci) in scan.comps.iter().enumerate() {
                    let c = &mut f.comps[ci];
                    for y in 0..c.v {
                        for x in 0..c.h {
                            let bi = (my * c.v + y) * c.bw + mx * c.h + x;
                            st.block(r, &mut c.coefs[bi], &mut c.dc_pred, si);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// libjpeg's post-IDCT range-limit table, indexed by `value & 1023`: values in -512..=511 map to
/// `clamp(value + 128, 0, 255)`; larger magnitudes wrap (only reachable with corrupt data).
const RANGE_LIMIT: [u8; 1024] = {
    let mut t = [0u8; 1024];
    let mut i = 0;
    while i < 1024 {
        t[i] = if i < 128 {
            (i + 128) as u8
        } else if i < 512 {
            255
        } else if i < 896 {
            0
        } else {
            (i - 896) as u8
        };
        i += 1;
    }
    t
};

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline(always)]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// The 1-D IDCT kernel shared by both passes (Loeffler-Ligtenberg-Moschytz with 12 multiplies, as in
/// libjpeg's `jidctint.c`). Returns the 8 outputs before descaling.
#[inline(always)]
fn idct_1d(i: [i64; 8]) -> [i64; 8] {
    // Even part.
    let (z2, z3) = (i[2], i[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (i[0] + i[4]) << CONST_BITS;
    let tmp1 = (i[0] - i[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    // Odd part.
    let (t0, t1, t2, t3) = (i[7], i[5], i[3], i[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    let t0 = t0 * FIX_0_298631336;
    let t1 = t1 * FIX_2_053119869;
    let t2 = t2 * FIX_3_072711026;
    let t3 = t3 * FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    let t0 = t0 + z1 + z3;
    let t1 = t1 + z2 + z4;
    let t2 = t2 + z2 + z3;
    let t3 = t3 + z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Dequantise and inverse-DCT one block into `out` (8 rows of `stride` bytes), exactly as libjpeg's
/// `jpeg_idct_islow`.
fn idct_islow(coef: &[i16; 64], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    for col in 0..8 {
        let deq = |r: usize| coef[r * 8 + col] as i64 * quant[r * 8 + col] as i64;
        if (1..8).all(|r| coef[r * 8 + col] == 0) {
            let dc = (deq(0) << PASS1_BITS) as i32;
            for r in 0..8 {
                ws[r * 8 + col] = dc;
            }
            continue;
        }
        let o = idct_1d([
            deq(0),
            deq(1),
            deq(2),
            deq(3),
            deq(4),
            deq(5),
            deq(6),
            deq(7),
        ]);
        for r in 0..8 {
            ws[r * 8 + col] = descale(o[r], CONST_BITS - PASS1_BITS) as i32;
        }
    }
    for row in 0..8 {
        let w = &ws[row * 8..row * 8 + 8];
        let line = &mut out[row * stride..row * stride + 8];
        if w[1..].iter().all(|&v| v == 0) {
            let v = RANGE_LIMIT[(descale(w[0] as i64, PASS1_BITS + 3) & 1023) as usize];
            line.fill(v);
            continue;
        }
        let o = idct_1d([
            w[0] as i64,
            w[1] as i64,
            w[2] as i64,
            w[3] as i64,
            w[4] as i64,
            w[5] as i64,
            w[6] as i64,
            w[7] as i64,
        ]);
        for (x, &v) in o.iter().enumerate() {
            line[x] = RANGE_LIMIT[(descale(v, CONST_BITS + PASS1_BITS + 3) & 1023) as usize];
        }
    }
}

/// A component's decoded samples: `bw * 8` by `bh * 8`, row-major.
struct Plane {
    stride: usize,
    data: Vec<u8>,
}

fn idct_all(f: &Frame) -> Vec<Plane> {
    f.comps
        .iter()
        .map(|c| {
            let stride = c.bw * 8;
            let mut data = vec![0u8; stride * c.bh * 8];
            let quant = c.quant.unwrap_or([0; 64]);
            data.par_chunks_mut(stride * 8)
                .enumerate()
                .for_each(|(by, rows)| {
                    for bx in 0..c.bw {
                        let coef = &c.coefs[by * c.bw + bx];
                        idct_islow(coef, &quant, &mut rows[bx * 8..], stride);
                    }
                });
            Plane { stride, data }
        })
        .collect()
}

/// How one component is brought to full resolution (libjpeg's `jinit_upsampler` choices).
#[derive(Clone, Copy)]
enum Upsample {
    Full,
    H2V1Fancy,
    H1V2Fancy,
    H2V2Fancy,
    /// Pixel replication by integral factors (also libjpeg's non-fancy h2v1 / h2v2 cases).
    Replicate(usize, usize),
}

/// Produce full-resolution row `y` of component `c` into `out` (`width` samples).
fn upsample_row(c: &Component, p: &Plane, mode: Upsample, y: usize, width: usize, out: &mut [u8]) {
    let row = |r: usize| &p.data[r * p.stride..r * p.stride + c.dw];
    let dw = c.dw;
    match mode {
        Upsample::Full => out[..width].copy_from_slice(&row(y)[..width]),
        Upsample::Replicate(hx, vx) => {
            let src = row(y / vx);
            for (x, o) in out[..width].iter_mut().enumerate() {
                *o = src[(x / hx).min(dw - 1)];
            }
        }
        Upsample::H2V1Fancy => {
            let src = row(y);
            for (x, o) in out[..width].iter_mut().enumerate() {
                let i = x / 2;
                let cur = src[i] as u32 * 3;
                *o = if x % 2 == 0 {
                    let prev = src[i.saturating_sub(1)] as u32;
                    ((cur + prev + 1) >> 2) as u8
                } else {
                    let next = src[(i + 1).min(dw - 1)] as u32;
                    ((cur + next + 2) >> 2) as u8
                };
            }
        }
        Upsample::H1V2Fancy => {
            let r = y / 2;
            let (nb, bias) = if y.is_multiple_of(2) {
                (r.saturating_sub(1), 1)
            } else {
                ((r + 1).min(c.dh - 1), 2)
            };
            let (s0, s1) = (row(r), row(nb));
            for (x, o) in out[..width].iter_mut().enumerate() {
                *o = ((s0[x] as u32 * 3 + s1[x] as u32 + bias) >> 2) as u8;
            }
        }
        Upsample::H2V2Fancy => {
            let r = y / 2;
            let nb = if y.is_multiple_of(2) {
                r.saturating_sub(1)
            } else {
                (r + 1).min(c.dh - 1)
            };
            let (s0, s1) = (row(r), row(nb));
            let colsum = |i: usize| s0[i] as u32 * 3 + s1[i] as u32;
            for (x, o) in out[..width].iter_mut().enumerate() {
                let i = x / 2;
                let cur = colsum(i) * 3;
                *o = if x % 2 == 0 {
                    ((cur + colsum(i.saturating_sub(1)) + 8) >> 4) as u8
                } else {
                    ((cur + colsum((i + 1).min(dw - 1)) + 7) >> 4) as u8
                };
            }
        }
    }
}

/// libjpeg's YCbCr -> RGB tables (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    fn new() -> YccTables {
        const SCALEBITS: u32 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64;
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256usize {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    #[inline(always)]
    fn convert(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = y as i32;
        let (cb, cr) = (cb as usize, cr as usize);
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16) as i32),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

/// Pillow's `cmyk2rgb` applied to the `CMYK;I`-unpacked (inverted) libjpeg output.
#[inline]
fn pil_cmyk_inverted_to_rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = k as i32; // 255 - (255 - k)
    let conv = |v: u8| {
        let inv = 255 - v as i32;
        let t = inv * nk + 128;
        let muldiv = ((t >> 8) + t) >> 8;
        (nk - muldiv).clamp(0, 255) as u8
    };
    [conv(c), conv(m), conv(y)]
}

fn upsample_and_convert(f: &Frame, planes: &[Plane], color: ColorSpace) -> Result<Vec<u8>, String> {
    let modes: Vec<Upsample> = f
        .comps
        .iter()
        .map(|c| {
            let (hx, vx) = (f.hmax / c.h, f.vmax / c.v);
            match (hx, vx) {
                (1, 1) => Upsample::Full,
                (2, 1) if c.dw > 2 => Upsample::H2V1Fancy,
                (1, 2) => Upsample::H1V2Fancy,
                (2, 2) if c.dw > 2 => Upsample::H2V2Fancy,
                _ => Upsample::Replicate(hx, vx),
            }
        })
        .collect();
    let width = f.width;
    let ycc = YccTables::new();
    let mut out = vec![0u8; width * f.height * 3];
    out.par_chunks_mut(width * 3 * 8).enumerate().for_each_init(
        || vec![vec![0u8; width]; f.comps.len()],
        |rows, (chunk, block)| {
            for (i, line) in block.chunks_exact_mut(width * 3).enumerate() {
                let y = chunk * 8 + i;
                for (ci, c) in f.comps.iter().enumerate() {
                    upsample_row(c, &planes[ci], modes[ci], y, width, &mut rows[ci]);
                }
                match color {
                    ColorSpace::Gray => {
                        for (px, &v) in line.chunks_exact_mut(3).zip(&rows[0]) {
                            px.fill(v);
                        }
                    }
                    ColorSpace::Rgb => {
                        for (x, px) in line.chunks_exact_mut(3).enumerate() {
                            px.copy_from_slice(&[rows[0][x], rows[1][x], rows[2][x]]);
                        }
                    }
                    ColorSpace::YCbCr => {
                        for (x, px) in line.chunks_exact_mut(3).enumerate() {
                            px.copy_from_slice(&ycc.convert(rows[0][x], rows[1][x], rows[2][x]));
                        }
                    }
                    ColorSpace::Cmyk | ColorSpace::Ycck => {
                        for (x, px) in line.chunks_exact_mut(3).enumerate() {
                            let (c, m, yy) = if color == ColorSpace::Ycck {
                                // libjpeg's ycck_cmyk_convert: CMY = 255 - RGB(YCbCr).
                                let [r, g, b] = ycc.convert(rows[0][x], rows[1][x], rows[2][x]);
                                (255 - r, 255 - g, 255 - b)
                            } else {
                                (rows[0][x], rows[1][x], rows[2][x])
                            };
                            px.copy_from_slice(&pil_cmyk_inverted_to_rgb(c, m, yy, rows[3][x]));
                        }
                    }
                }
            }
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_is_the_jpeg_zigzag() {
        let first = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5];
        assert_eq!(&NATURAL_ORDER[..16], &first);
        let last = [53, 60, 61, 54, 47, 55, 62, 63];
        assert_eq!(&NATURAL_ORDER[56..64], &last);
        assert!(NATURAL_ORDER[64..].iter().all(|&v| v == 63));
        let mut seen = [false; 64];
        for &v in &NATURAL_ORDER[..64] {
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn range_limit_table() {
        let at = |x: i64| RANGE_LIMIT[(x & 1023) as usize];
        assert_eq!(at(0), 128);
        assert_eq!(at(-128), 0);
        assert_eq!(at(127), 255);
        assert_eq!(at(-1), 127);
        assert_eq!(at(511), 255);
        assert_eq!(at(-512), 0);
    }

    #[test]
    fn dc_only_block_is_flat() {
        let mut coef = [0i16; 64];
        coef[0] = 10;
        let quant = [4i16; 64];
        let mut out = [0u8; 64];
        idct_islow(&coef, &quant, &mut out, 8);
        // 10 * 4 / 8 = 5 above the 128 centre.
        assert!(out.iter().all(|&v| v == 133), "{out:?}");
    }
}
