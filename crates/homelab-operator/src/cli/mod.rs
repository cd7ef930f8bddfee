//! Subcommands other than `run`.

pub mod render;
