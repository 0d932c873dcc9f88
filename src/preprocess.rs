//! Image preprocessing (owned by the preprocessing work; placeholder).
