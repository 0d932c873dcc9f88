//! Chat prompts: the model's own Jinja chat template (from the GGUF) rendered with minijinja, as
//! HF's `apply_chat_template` does.
//!
//! [`Session`](crate::Session) does this for you; use [`ChatTemplate`] directly to see or
//! tokenize the exact prompt text.

use serde::Serialize;

use crate::Error;

/// Who wrote a message (serialized as `"system"`, `"user"`, `"assistant"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the whole conversation (first message only).
    System,
    /// The person asking.
    User,
    /// The model's answers.
    Assistant,
}

/// One piece of a message: text, or an image (rendered as `<|image|>`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    /// Plain text (`{"type": "text", "text": ...}`).
    Text {
        /// The text.
        text: String,
    },
    /// An image slot (`{"type": "image"}`); the image itself is attached separately, in order.
    Image,
}

/// A chat message in HF's format: `{"role": ..., "content": [{"type": "image"}, {"type": "text", "text": ...}]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its parts, in order.
    pub content: Vec<Part>,
}

impl Message {
    /// A message of plain text.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![Part::Text { text: text.into() }],
        }
    }

    /// Number of images in the message.
    pub fn n_images(&self) -> usize {
        self.content
            .iter()
            .filter(|p| matches!(p, Part::Image))
            .count()
    }
}

/// A user message from text and a number of images: where the text contains `<|image|>` markers
/// the images go there (in order); any further images go before the text. `image_marker` is the
/// marker string (`"<|image|>"`).
///
/// # Errors
///
/// [`Error::Conversation`] if the text has more markers than `n_images`.
///
/// ```
/// use mllama::text::chat::{user_message, Part};
///
/// # fn main() -> Result<(), mllama::Error> {
/// let m = user_message("Compare <|image|> with this.", 2, "<|image|>")?;
/// assert_eq!(m.content, vec![
///     Part::Image, // the image without a marker goes first
///     Part::Text { text: "Compare ".into() },
///     Part::Image,
///     Part::Text { text: " with this.".into() },
/// ]);
/// # Ok(())
/// # }
/// ```
pub fn user_message(text: &str, n_images: usize, image_marker: &str) -> Result<Message, Error> {
    let pieces: Vec<&str> = text.split(image_marker).collect();
    let markers = pieces.len() - 1;
    if markers > n_images {
        return Err(Error::Conversation(format!(
            "the prompt has {markers} {image_marker} markers but only {n_images} images were given"
        )));
    }
    let mut content = Vec::new();
    for _ in 0..n_images - markers {
        content.push(Part::Image);
    }
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            content.push(Part::Image);
        }
        if !p.is_empty() {
            content.push(Part::Text {
                text: p.to_string(),
            });
        }
    }
    Ok(Message {
        role: Role::User,
        content,
    })
}

/// A compiled chat template: HF's Jinja dialect (trim_blocks, lstrip_blocks, Python string
/// methods, `raise_exception`, `strftime_now`) rendered with minijinja.
///
/// ```
/// use mllama::text::chat::{ChatTemplate, Message, Role};
///
/// # fn main() -> Result<(), mllama::Error> {
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap(); // paths from the repository root
/// let model = mllama::Model::load("models/demo/mllama-demo-q4_0.gguf")?;
/// let tok = model.tokenizer()?;
/// let mut t = ChatTemplate::new(tok.chat_template().unwrap(), "<|begin_of_text|>")?;
/// t.date_string = Some("26 Jul 2024".into());
///
/// let prompt = t.render(&[Message::text(Role::User, "Hi!")], true)?;
/// assert!(prompt.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>"));
/// assert!(prompt.contains("Today Date: 26 Jul 2024"));
/// assert!(prompt.ends_with("Hi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
///
/// // The rendered text already starts with BOS: tokenize without adding another.
/// let ids = tok.encode(&prompt, false)?;
/// assert_eq!(ids[0], tok.bos_id().unwrap());
/// # Ok(())
/// # }
/// ```
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    /// `date_string` passed to the template (HF's fallback date when `None` and no clock).
    pub date_string: Option<String>,
    /// Pass each message's `content` as one string (its text parts joined) instead of HF's list
    /// of parts: what text-only templates expect (SmolLM2's ChatML template writes
    /// `message['content']` into the prompt, Llama 3.1's trims it). Default `false` (the list,
    /// as Llama 3.2 Vision's template reads it).
    pub string_content: bool,
}

/// A message as text-only templates see it: `{"role": ..., "content": "..."}`.
#[derive(Serialize)]
struct TextMessage {
    role: Role,
    content: String,
}

impl TextMessage {
    fn of(m: &Message) -> TextMessage {
        let mut content = String::new();
        for p in &m.content {
            if let Part::Text { text } = p {
                content.push_str(text);
            }
        }
        TextMessage {
            role: m.role,
            content,
        }
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

/// Today's date as `strftime("%d %b %Y")` (UTC), e.g. `29 Nov 2026`: what `strftime_now` gives
/// templates.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{d:02} {} {y}", MONTHS[(m - 1) as usize])
}

impl ChatTemplate {
    /// Compile `source` (a Jinja chat template as HF writes them). `bos` is the `bos_token`
    /// string passed to the template.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] if the template does not compile.
    ///
    /// ```
    /// use mllama::text::chat::{ChatTemplate, Message, Role};
    ///
    /// # fn main() -> Result<(), mllama::Error> {
    /// let src = "{{ bos_token }}{% for m in messages %}\
    ///            [{{ m.role }}] {{ m.content[0].text }}\n{% endfor %}";
    /// let t = ChatTemplate::new(src, "<s>")?;
    /// let text = t.render(&[Message::text(Role::User, "Hi")], false)?;
    /// assert_eq!(text, "<s>[user] Hi\n");
    ///
    /// let err = ChatTemplate::new("{% if %}", "<s>").err().unwrap();
    /// assert!(matches!(err, mllama::Error::Template(_)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(source: &str, bos: &str) -> Result<Self, Error> {
        let mut env = minijinja::Environment::new();
        // HF renders chat templates with trim_blocks and lstrip_blocks.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            if fmt == "%d %b %Y" {
                today()
            } else {
                // Only the Llama 3 format is needed; anything else gets the same date.
                today()
            }
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                Error::Template(format!("the model's chat template does not compile: {e}"))
            })?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            date_string: None,
            string_content: false,
        })
    }

    /// Render `messages`, ending with the assistant header when `add_generation_prompt`.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] if rendering fails, including the template's own
    /// `raise_exception(...)` (e.g. Llama 3.2 Vision refuses a system message together with
    /// images); the message is the template's.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(format!("chat template: {e}")))?;
        let messages = if self.string_content {
            let text: Vec<TextMessage> = messages.iter().map(TextMessage::of).collect();
            minijinja::Value::from(minijinja::value::Serde(text))
        } else {
            minijinja::Value::from(minijinja::value::Serde(messages))
        };
        let ctx = match &self.date_string {
            Some(d) => minijinja::context! {
                messages => messages,
                bos_token => self.bos.as_str(),
                add_generation_prompt => add_generation_prompt,
                date_string => d.as_str(),
            },
            None => minijinja::context! {
                messages => messages,
                bos_token => self.bos.as_str(),
                add_generation_prompt => add_generation_prompt,
            },
        };
        t.render(ctx).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(d) = e.detail() {
                msg = d.to_string();
            }
            Error::Template(format!("chat template: {msg}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_message_places_images() {
        let m = user_message("What is this?", 1, "<|image|>").unwrap();
        assert_eq!(
            m.content,
            vec![
                Part::Image,
                Part::Text {
                    text: "What is this?".into()
                }
            ]
        );
        let m = user_message("Compare <|image|> with <|image|>.", 2, "<|image|>").unwrap();
        assert_eq!(
            m.content,
            vec![
                Part::Text {
                    text: "Compare ".into()
                },
                Part::Image,
                Part::Text {
                    text: " with ".into()
                },
                Part::Image,
                Part::Text { text: ".".into() }
            ]
        );
        let e = user_message("<|image|><|image|>", 1, "<|image|>").unwrap_err();
        assert!(matches!(e, Error::Conversation(_)), "{e:?}");
        assert_eq!(user_message("hi", 0, "<|image|>").unwrap().content.len(), 1);
    }

    #[test]
    fn today_looks_like_a_date() {
        let d = today();
        let parts: Vec<&str> = d.split(' ').collect();
        assert_eq!(parts.len(), 3, "{d}");
        assert_eq!(parts[0].len(), 2);
        assert!(parts[2].parse::<i32>().unwrap() >= 2024);
    }
}
