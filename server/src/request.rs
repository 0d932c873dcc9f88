//! What both APIs ask for, in one form: the model, the conversation (or a raw prompt) with image
//! bytes, sampling settings, the token budget and stop strings. The API modules parse their JSON
//! into a [`Job`]; this module also checks the generation options common to both.

use std::sync::Arc;
use std::time::Instant;

use mllama::SamplingParams;
use serde_json::Value;

use crate::error::ApiError;
use crate::registry::ServedModel;

/// Who says a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A system message (first only).
    System,
    /// The user.
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One message: text (with `<|image|>` markers where images go, else images first) and images.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Who says it.
    pub role: Role,
    /// The text.
    pub text: String,
    /// Image file bytes, in order.
    pub images: Vec<Vec<u8>>,
}

/// The prompt of a generation.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// A conversation rendered with the model's chat template.
    Chat(Vec<Msg>),
    /// Text sent as is (special tokens written out), with images for its `<|image|>` tokens.
    Raw {
        /// The prompt text.
        text: String,
        /// Image file bytes.
        images: Vec<Vec<u8>>,
    },
}

/// A generation to run.
pub struct Job {
    /// The model.
    pub model: Arc<ServedModel>,
    /// Context window (`None`: the server's default).
    pub ctx: Option<usize>,
    /// What to answer.
    pub prompt: Prompt,
    /// Sampling.
    pub params: SamplingParams,
    /// Most tokens to generate (`usize::MAX`: until the context is full).
    pub max_tokens: usize,
    /// Stop strings: the answer ends before the first.
    pub stop: Vec<String>,
    /// When the request arrived.
    pub received: Instant,
}

/// Generation settings as both APIs name them (Ollama's `options`, OpenAI's top-level fields);
/// `None` where the request is silent.
#[derive(Clone, Debug, Default)]
pub struct GenOptions {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Top-k.
    pub top_k: Option<i64>,
    /// Top-p.
    pub top_p: Option<f64>,
    /// Min-p.
    pub min_p: Option<f64>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f64>,
    /// Tokens the penalty looks back at (-1: the whole context).
    pub repeat_last_n: Option<i64>,
    /// RNG seed (negative: random).
    pub seed: Option<i64>,
    /// Most tokens to generate (-1: no limit, -2: fill the context).
    pub num_predict: Option<i64>,
    /// Context window.
    pub num_ctx: Option<i64>,
    /// Stop strings.
    pub stop: Vec<String>,
}

/// Most stop strings a request may give, and their longest length in bytes.
const MAX_STOPS: usize = 16;
const MAX_STOP_LEN: usize = 1000;

fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A number field, or a 400 naming it.
pub fn number(obj: &Value, key: &str, prefix: &str) -> Result<Option<f64>, ApiError> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_value",
                    format!("{prefix}{key} must be a number, got {v}"),
                )
            }),
    }
}

/// An integer field, or a 400 naming it.
pub fn integer(obj: &Value, key: &str, prefix: &str) -> Result<Option<i64>, ApiError> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9e15)
                    .map(|x| x as i64)
            })
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_value",
                    format!("{prefix}{key} must be an integer, got {v}"),
                )
            }),
    }
}

/// Stop strings: a string or an array of strings.
pub fn stops(v: Option<&Value>, what: &str) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_value",
                        format!("{what} must hold strings, got {x}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("{what} must be a string or an array of strings, got {other}"),
            ))
        }
    };
    if list.len() > MAX_STOPS || list.iter().any(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("{what}: at most {MAX_STOPS} stop strings of at most {MAX_STOP_LEN} bytes"),
        ));
    }
    Ok(list)
}

impl GenOptions {
    /// Ollama's `options` object (`prefix` names it in messages, e.g. `options.`).
    pub fn from_ollama(o: &Value, prefix: &str) -> Result<GenOptions, ApiError> {
        if !o.is_object() && !o.is_null() {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("options must be an object, got {o}"),
            ));
        }
        Ok(GenOptions {
            temperature: number(o, "temperature", prefix)?,
            top_k: integer(o, "top_k", prefix)?,
            top_p: number(o, "top_p", prefix)?,
            min_p: number(o, "min_p", prefix)?,
            repeat_penalty: number(o, "repeat_penalty", prefix)?,
            repeat_last_n: integer(o, "repeat_last_n", prefix)?,
            seed: integer(o, "seed", prefix)?,
            num_predict: integer(o, "num_predict", prefix)?,
            num_ctx: integer(o, "num_ctx", prefix)?,
            stop: stops(o.get("stop"), &format!("{prefix}stop"))?,
        })
    }

    /// Sampling settings: the model's generation defaults, overridden by these options (as
    /// `mllama run` does with its flags), checked by the library.
    pub fn sampling(&self, model: &ServedModel) -> Result<SamplingParams, ApiError> {
        let g = &model.model.cfg.generation;
        let mut p = SamplingParams::from_model(g);
        let bad = |name: &str, why: String| {
            ApiError::bad_request("invalid_value", format!("{name} {why}"))
        };
        if let Some(t) = self.temperature {
            p.temperature = t as f32;
            if t > 0.0 && p.top_k == 0 && self.top_k.is_none() {
                p.top_k = g.top_k.unwrap_or(50);
            }
        }
        if let Some(k) = self.top_k {
            p.top_k =
                usize::try_from(k).map_err(|_| bad("top_k", format!("must be ≥ 0, got {k}")))?;
        }
        if let Some(x) = self.top_p {
            p.top_p = x as f32;
        }
        if let Some(x) = self.min_p {
            p.min_p = x as f32;
        }
        if let Some(x) = self.repeat_penalty {
            p.repeat_penalty = x as f32;
        }
        match self.repeat_last_n {
            Some(-1) => p.repeat_last_n = usize::MAX,
            Some(n) => {
                p.repeat_last_n = usize::try_from(n)
                    .map_err(|_| bad("repeat_last_n", format!("must be -1 or ≥ 0, got {n}")))?
            }
            None => {}
        }
        p.seed = self.seed.and_then(|s| u64::try_from(s).ok());
        // The library's message names the CLI flag; put the request field first.
        p.validate().map_err(|e| match e {
            mllama::Error::BadArgument { name, why } => {
                bad(name, format!("is out of range ({why})"))
            }
            other => other.into(),
        })?;
        Ok(p)
    }

    /// The token budget from `num_predict` (-1 and -2: until the context is full).
    pub fn max_tokens(&self) -> Result<usize, ApiError> {
        match self.num_predict {
            None | Some(-1) | Some(-2) => Ok(usize::MAX),
            Some(n) => usize::try_from(n).map_err(|_| {
                ApiError::bad_request(
                    "invalid_value",
                    format!("num_predict must be -1, -2 or ≥ 0, got {n}"),
                )
            }),
        }
    }

    /// The context window from `num_ctx`.
    pub fn ctx(&self) -> Result<Option<usize>, ApiError> {
        match self.num_ctx {
            None => Ok(None),
            Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Some(n) => Err(ApiError::bad_request(
                "invalid_value",
                format!("num_ctx must be ≥ 1, got {n}"),
            )),
        }
    }
}

/// The role of a message as both APIs name it (`developer` is OpenAI's newer `system`).
pub fn role(s: &str, what: &str) -> Result<Role, ApiError> {
    match s {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(ApiError::bad_request(
            "invalid_value",
            format!("{what}: role '{other}' is not supported (system, user or assistant)"),
        )),
    }
}

/// Refuse more images than the server allows in one request.
pub fn check_image_count(n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_images",
            format!("{n} images in one request; this server takes at most {max} (--max-images)"),
        ));
    }
    Ok(())
}
