//! Choosing the next token from logits: greedy, or sampling with HF's order of processors
//! (repetition penalty → temperature → top-k → top-p → min-p) and a seeded RNG, so the same seed
//! gives the same text. No allocation per token once the sampler has seen the vocabulary size.

use crate::Error;

/// Generation defaults from the checkpoint's `generation_config.json` (in
/// GGUF: `<arch>.generation.*` keys; `None` where the file is silent). Turn them into sampling settings
/// with [`SamplingParams::from_model`](crate::SamplingParams::from_model).
#[derive(Clone, Debug, Default)]
pub struct GenerationDefaults {
    /// Whether to sample (`false`: greedy).
    pub do_sample: Option<bool>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus (top-p) probability mass.
    pub top_p: Option<f32>,
    /// Top-k candidates (only positive values are kept).
    pub top_k: Option<usize>,
    /// Token ids that end generation (`[128001, 128008, 128009]` for Llama 3.2 Vision; empty if
    /// absent).
    pub eos_ids: Vec<u32>,
}

/// Sampling settings. `temperature == 0` means greedy; the [`Default`] is greedy with every
/// filter off. Processors apply in HF's order: repetition penalty → temperature → top-k → top-p →
/// min-p. Checked by [`SamplingParams::validate`] when a generation starts.
///
/// ```
/// use mllama::SamplingParams;
///
/// // Greedy (the default): always the most likely token.
/// let greedy = SamplingParams::default();
/// assert_eq!(greedy.temperature, 0.0);
///
/// // Llama 3.2 Vision Instruct's published settings, reproducible with a seed.
/// let sampled =
///     SamplingParams { temperature: 0.6, top_p: 0.9, seed: Some(7), ..Default::default() };
/// assert!(sampled.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by this before sampling; 0 means greedy (argmax, no RNG); must be
    /// finite and ≥ 0.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all); in (0, 1].
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0: none); in [0, 1].
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens by this (1: off);
    /// applies to greedy decoding too; > 0.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at (prompt included).
    pub repeat_last_n: usize,
    /// RNG seed: the same seed, settings and prompt give the same text. `None` picks one from the
    /// clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// Greedy decoding.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// The model's generation defaults (HF's `GenerationConfig` defaults where the file is silent:
    /// top-k 50 when sampling). Greedy when the file says `do_sample = false` or gives no positive
    /// temperature.
    ///
    /// ```
    /// use mllama::{Model, SamplingParams};
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
    /// let model = Model::load("models/demo/mllama-demo-q4_0.gguf")?;
    /// // The demo's generation_config.json says do_sample = false: greedy.
    /// let p = SamplingParams::from_model(&model.cfg.generation);
    /// assert_eq!((p.temperature, p.top_p, p.top_k), (0.0, 1.0, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_model(g: &GenerationDefaults) -> Self {
        if g.do_sample == Some(false) {
            return SamplingParams::default();
        }
        match g.temperature {
            Some(t) if t > 0.0 => SamplingParams {
                temperature: t,
                top_k: g.top_k.unwrap_or(50),
                top_p: g.top_p.unwrap_or(1.0),
                ..Default::default()
            },
            _ => SamplingParams::default(),
        }
    }

    /// Refuse values that make no sense, naming the CLI flag in the message.
    ///
    /// # Errors
    ///
    /// [`Error::BadArgument`] (its `name` the field) if `temperature` is negative or not finite,
    /// `top_p` is outside (0, 1], `min_p` is outside [0, 1], or `repeat_penalty` is not a finite
    /// number > 0.
    ///
    /// ```
    /// use mllama::SamplingParams;
    ///
    /// let bad = SamplingParams { top_p: 0.0, ..Default::default() };
    /// let err = bad.validate().unwrap_err();
    /// assert!(matches!(err, mllama::Error::BadArgument { name: "top_p", .. }));
    /// assert_eq!(err.to_string(), "--top-p 0: must be in (0, 1]");
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |name, m: String| Err(Error::bad_argument(name, m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                format!("--temperature {}: must be a number ≥ 0", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(
                "top_p",
                format!("--top-p {}: must be in (0, 1]", self.top_p),
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(
                "min_p",
                format!("--min-p {}: must be in [0, 1]", self.min_p),
            );
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(
                "repeat_penalty",
                format!(
                    "--repeat-penalty {}: must be a number > 0",
                    self.repeat_penalty
                ),
            );
        }
        Ok(())
    }
}

/// xoshiro256** seeded through splitmix64.
#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sampler: settings, RNG state and reusable buffers.
/// [`Session::generate`](crate::Session::generate) makes one per generation; use it directly with
/// a [`Sequence`](crate::engine::sequence::Sequence).
///
/// ```
/// use mllama::text::sampling::Sampler;
/// use mllama::SamplingParams;
///
/// # fn main() -> Result<(), mllama::Error> {
/// let logits = [0.1, 3.0, 0.2, 2.9];
/// let mut greedy = Sampler::new(SamplingParams::default())?;
/// assert_eq!(greedy.sample(&logits, &[]), 1);
///
/// let p = SamplingParams { temperature: 1.0, top_k: 2, seed: Some(1), ..Default::default() };
/// let mut s = Sampler::new(p)?;
/// let t = s.sample(&logits, &[]);
/// assert!(t == 1 || t == 3); // only the two most likely tokens can come out
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Sampler {
    /// The settings (validated).
    pub params: SamplingParams,
    rng: Rng,
    cand: Vec<(f32, u32)>,
    logits: Vec<f32>,
    seen: Vec<u32>,
}

impl Sampler {
    /// A sampler with `params`, its RNG seeded from `params.seed` (or the clock).
    ///
    /// # Errors
    ///
    /// [`Error::BadArgument`] if the params fail [`SamplingParams::validate`].
    pub fn new(params: SamplingParams) -> Result<Self, Error> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        Ok(Sampler {
            params,
            rng: Rng::new(seed),
            cand: Vec::new(),
            logits: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// Pick the next token from `logits` (`[V]`, one value per token id), given the tokens so far
    /// (for the repetition penalty; ids beyond the logits are ignored).
    ///
    /// # Panics
    ///
    /// If `logits` is empty while sampling (temperature > 0).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        let l = &mut self.logits;
        if p.repeat_penalty != 1.0 {
            // Once per distinct token of the window, as HF does.
            let start = history.len().saturating_sub(p.repeat_last_n);
            self.seen.clear();
            for &t in &history[start..] {
                if self.seen.contains(&t) {
                    continue;
                }
                self.seen.push(t);
                if let Some(v) = l.get_mut(t as usize) {
                    *v = if *v > 0.0 {
                        *v / p.repeat_penalty
                    } else {
                        *v * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return crate::text::sampling::argmax(l) as u32;
        }
        // Temperature, then candidates sorted by logit (only the top k when k is set).
        self.cand.clear();
        self.cand.extend(
            l.iter()
                .enumerate()
                .map(|(i, &v)| (v / p.temperature, i as u32)),
        );
        let by_logit = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if p.top_k > 0 && p.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            self.cand.truncate(p.top_k);
        }
        self.cand.sort_unstable_by(by_logit);
        // Softmax over the candidates.
        let m = self.cand[0].0;
        let mut z = 0f64;
        for c in self.cand.iter_mut() {
            c.0 = ((c.0 - m) as f64).exp() as f32;
            z += c.0 as f64;
        }
        // Top-p: the smallest prefix whose mass reaches top_p (at least one token).
        let mut keep = self.cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0f64;
            for (i, c) in self.cand.iter().enumerate() {
                acc += c.0 as f64 / z;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        // Min-p: relative to the most likely token.
        if p.min_p > 0.0 {
            let floor = self.cand[0].0 * p.min_p;
            keep = keep.min(self.cand.iter().take_while(|c| c.0 >= floor).count().max(1));
        }
        let kept = &self.cand[..keep];
        let total: f64 = kept.iter().map(|c| c.0 as f64).sum();
        let mut u = self.rng.uniform() * total;
        for c in kept {
            u -= c.0 as f64;
            if u < 0.0 {
                return c.1;
            }
        }
        kept[keep - 1].1
    }
}

/// Index of the largest value (first on ties), as `argmax` in PyTorch. NaNs are never chosen
/// unless at index 0; an empty slice gives 0.
///
/// ```
/// assert_eq!(mllama::text::sampling::argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
/// ```
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        let l = logits();
        assert_eq!(
            s.sample(&l, &[]) as usize,
            crate::text::sampling::argmax(&l)
        );
    }

    #[test]
    fn same_seed_same_tokens_and_filters_hold() {
        let p = SamplingParams {
            temperature: 0.8,
            top_k: 20,
            top_p: 0.9,
            seed: Some(42),
            ..Default::default()
        };
        let l = logits();
        let mut a = Sampler::new(p.clone()).unwrap();
        let mut b = Sampler::new(p).unwrap();
        let xa: Vec<u32> = (0..50).map(|_| a.sample(&l, &[])).collect();
        let xb: Vec<u32> = (0..50).map(|_| b.sample(&l, &[])).collect();
        assert_eq!(xa, xb);
        // Every sampled token is among the 20 largest logits.
        let mut order: Vec<usize> = (0..l.len()).collect();
        order.sort_by(|&i, &j| l[j].total_cmp(&l[i]));
        for t in xa {
            assert!(order[..20].contains(&(t as usize)));
        }
        // Several distinct tokens at temperature 0.8.
        let mut c = Sampler::new(SamplingParams {
            temperature: 5.0,
            seed: Some(1),
            ..Default::default()
        })
        .unwrap();
        let distinct: std::collections::HashSet<u32> =
            (0..100).map(|_| c.sample(&l, &[])).collect();
        assert!(distinct.len() > 10);
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut l = vec![0.0f32; 10];
        l[3] = 2.0;
        l[4] = 1.9;
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&l, &[]), 3);
        assert_eq!(s.sample(&l, &[3, 3, 3]), 4);
    }

    #[test]
    fn invalid_values_are_refused() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                min_p: 2.0,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ] {
            let e = Sampler::new(p).err().unwrap();
            assert!(matches!(e, Error::BadArgument { .. }), "{e:?}");
        }
    }
}
