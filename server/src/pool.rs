//! Kept conversations: sessions (with their KV caches) of recent requests, so that a client
//! that resends the whole conversation each turn gets the session whose history matches it
//! best, and only the new tokens are prefilled (the library reuses the longest matching token
//! prefix). Bounded: the least recently used session goes when the pool is full.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use mllama::Session;

use crate::request::{Msg, Prompt, Role};

/// What a kept session holds, message by message: a hash of each message (role, text, image
/// bytes), or the raw prompt text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    messages: Vec<u64>,
    raw: Option<String>,
}

fn hash_msg(role: Role, text: &str, images: &[Vec<u8>]) -> u64 {
    let mut h = DefaultHasher::new();
    (role, text, images).hash(&mut h);
    h.finish()
}

impl History {
    /// The history of a prompt followed by the model's `answer`.
    pub fn of(prompt: &Prompt, answer: &str) -> History {
        match prompt {
            Prompt::Chat(msgs) => {
                let mut messages: Vec<u64> = msgs
                    .iter()
                    .map(|m: &Msg| hash_msg(m.role, &m.text, &m.images))
                    .collect();
                messages.push(hash_msg(Role::Assistant, answer, &[]));
                History {
                    messages,
                    raw: None,
                }
            }
            Prompt::Raw { text, .. } => History {
                messages: Vec::new(),
                raw: Some(format!("{text}{answer}")),
            },
        }
    }

    /// How well a kept history fits a new prompt: messages in common from the start (chat), or
    /// bytes in common (raw); 0 for none.
    fn score(&self, want: &History) -> usize {
        match (&self.raw, &want.raw) {
            (Some(a), Some(b)) => a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count(),
            (None, None) => self
                .messages
                .iter()
                .zip(&want.messages)
                .take_while(|(a, b)| a == b)
                .count(),
            _ => 0,
        }
    }
}

struct Kept {
    model: String,
    ctx: usize,
    history: History,
    session: Session,
    stamp: u64,
}

/// The kept sessions.
pub struct SessionPool {
    kept: Mutex<(Vec<Kept>, u64)>,
    cap: usize,
}

impl SessionPool {
    /// A pool keeping at most `cap` idle sessions (0: none).
    pub fn new(cap: usize) -> Self {
        SessionPool {
            kept: Mutex::new((Vec::new(), 0)),
            cap,
        }
    }

    /// Take the kept session of `model` with context `ctx` whose history shares the most with
    /// `want` (at least one message or byte), if any.
    pub fn take(&self, model: &str, ctx: usize, want: &History) -> Option<Session> {
        let mut g = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let best =
            g.0.iter()
                .enumerate()
                .filter(|(_, k)| k.model == model && k.ctx == ctx)
                .map(|(i, k)| (k.history.score(want), i))
                .filter(|(s, _)| *s > 0)
                .max()?;
        Some(g.0.swap_remove(best.1).session)
    }

    /// Keep a session after a generation, dropping the least recently used beyond the cap.
    pub fn put(&self, model: &str, history: History, session: Session) {
        if self.cap == 0 {
            return;
        }
        let ctx = session.context_size();
        let mut g = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let stamp = g.1;
        g.0.push(Kept {
            model: model.to_string(),
            ctx,
            history,
            session,
            stamp,
        });
        while g.0.len() > self.cap {
            let oldest =
                g.0.iter()
                    .enumerate()
                    .min_by_key(|(_, k)| k.stamp)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
            g.0.swap_remove(oldest);
        }
    }

    /// Drop every kept session (their memory is needed).
    pub fn clear(&self) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }

    /// Sessions kept now.
    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(texts: &[&str]) -> Prompt {
        let roles = [Role::User, Role::Assistant];
        Prompt::Chat(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| Msg {
                    role: roles[i % 2],
                    text: t.to_string(),
                    images: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn follow_up_matches_the_answered_history() {
        let kept = History::of(&chat(&["hi"]), "hello");
        let next = History::of(&chat(&["hi", "hello", "more"]), "");
        let other = History::of(&chat(&["bye"]), "");
        assert_eq!(kept.score(&next), 2);
        assert_eq!(kept.score(&other), 0);
        let raw = History::of(
            &Prompt::Raw {
                text: "abc".into(),
                images: vec![],
            },
            "def",
        );
        let raw2 = History::of(
            &Prompt::Raw {
                text: "abcdefg".into(),
                images: vec![],
            },
            "",
        );
        assert_eq!(raw.score(&raw2), 6);
        assert_eq!(raw.score(&next), 0);
    }
}
