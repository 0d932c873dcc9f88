//! Running a model: a token [`sequence`] with its KV cache and attached images, and the
//! application-level [`session`] (chat template, images from files, streaming generation).

pub mod sequence;
pub mod session;
