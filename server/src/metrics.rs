//! Counters for `GET /metrics`, in Prometheus' text format: requests by route and status,
//! tokens (prefilled, reused from a kept conversation, generated), images (encoded, from the
//! cache), generations (finished, cancelled by a disconnected client), queue state, and latency
//! histograms (time to first token, request duration).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Record one observation of `s` seconds.
    pub fn observe(&self, s: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((s.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

/// Every counter of the server.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt tokens run through the model (prefill).
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens taken from a kept conversation's KV cache instead.
    pub reused_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Images run through the vision tower.
    pub images_encoded: AtomicU64,
    /// Images found in the image cache.
    pub image_cache_hits: AtomicU64,
    /// Microseconds spent encoding images.
    pub image_encode_us: AtomicU64,
    /// Generations that ran to their end (stop token, stop string or length).
    pub generations_completed: AtomicU64,
    /// Generations stopped because the client went away.
    pub generations_cancelled: AtomicU64,
    /// Generations that ended with an error.
    pub generations_failed: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected_busy: AtomicU64,
    /// Generations running now.
    pub running: AtomicU64,
    /// Requests waiting for a slot now.
    pub queued: AtomicU64,
    /// Time from receiving a generation request to its first token.
    pub ttft: Histogram,
    /// Time from receiving a generation request to its end.
    pub duration: Histogram,
}

impl Metrics {
    /// Count a finished HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Add `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP mllama_http_requests_total HTTP requests by route and status.\n# TYPE mllama_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "mllama_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "mllama_prompt_tokens_total",
                "Prompt tokens prefilled.",
                &self.prompt_tokens,
            ),
            (
                "mllama_prompt_tokens_reused_total",
                "Prompt tokens reused from a kept conversation's KV cache.",
                &self.reused_tokens,
            ),
            (
                "mllama_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "mllama_images_encoded_total",
                "Images run through the vision tower.",
                &self.images_encoded,
            ),
            (
                "mllama_image_cache_hits_total",
                "Images found in the image cache.",
                &self.image_cache_hits,
            ),
            (
                "mllama_generations_completed_total",
                "Generations that ran to their end.",
                &self.generations_completed,
            ),
            (
                "mllama_generations_cancelled_total",
                "Generations stopped because the client disconnected.",
                &self.generations_cancelled,
            ),
            (
                "mllama_generations_failed_total",
                "Generations that ended with an error.",
                &self.generations_failed,
            ),
            (
                "mllama_requests_rejected_busy_total",
                "Requests refused with 503 because the queue was full.",
                &self.rejected_busy,
            ),
            (
                "mllama_image_encode_microseconds_total",
                "Time spent encoding images.",
                &self.image_encode_us,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        for (name, help, g) in [
            (
                "mllama_generations_running",
                "Generations running now.",
                &self.running,
            ),
            (
                "mllama_requests_queued",
                "Requests waiting for a generation slot.",
                &self.queued,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.load(Ordering::Relaxed)
            );
        }
        self.ttft.write(
            &mut out,
            "mllama_time_to_first_token_seconds",
            "From request to first generated token (queue, images and prefill included).",
        );
        self.duration.write(
            &mut out,
            "mllama_generation_duration_seconds",
            "From request to the end of its generation.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/api/chat", 200);
        m.request("/api/chat", 200);
        Metrics::add(&m.generated_tokens, 5);
        m.ttft.observe(0.02);
        let t = m.render();
        assert!(t.contains("mllama_http_requests_total{route=\"/api/chat\",status=\"200\"} 2"));
        assert!(t.contains("mllama_generated_tokens_total 5"));
        assert!(t.contains("mllama_time_to_first_token_seconds_bucket{le=\"0.01\"} 0"));
        assert!(t.contains("mllama_time_to_first_token_seconds_bucket{le=\"0.025\"} 1"));
        assert!(t.contains("mllama_time_to_first_token_seconds_count 1"));
    }
}
