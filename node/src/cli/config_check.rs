//! `edgenode config check FILE`: the file read by the node's own parser and checked by
//! `Config::validate`, without starting anything, so an operator (or a provisioning
//! script) learns of a typo before a restart does.

use std::path::Path;

use anyhow::Result;

use edgenode::config::{Config, ConfigError};

use super::{Exit, EXIT_CANNOT_TELL, EXIT_NO};

/// `config check --help`, and README's "Operating a node".
pub const HELP_AFTER: &str = "\
Exit status:
  0  the file is valid (prints `ok: FILE` and the name, listen address and data dir it gives)
  1  it is not: the error on stderr names the key and why
  2  it cannot be read (missing, or no permission)";

pub fn check(path: &Path) -> Result<()> {
    let config = Config::load(Some(path)).map_err(|error| {
        let code = if matches!(error, ConfigError::Read { .. }) { EXIT_CANNOT_TELL } else { EXIT_NO };
        Exit::new(code, error.to_string())
    })?;
    config.validate().map_err(|error| {
        let reason = match error {
            ConfigError::Invalid(reason) => reason,
            other => other.to_string(),
        };
        Exit::new(EXIT_NO, format!("config file {} is not valid: {reason}", path.display()))
    })?;
    println!("ok: {}", path.display());
    for (label, value) in [
        ("name", config.name.clone()),
        ("listen", config.listen.to_string()),
        ("data dir", config.data_dir.display().to_string()),
    ] {
        println!("  {label:<8}  {value}");
    }
    Ok(())
}
