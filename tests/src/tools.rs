//! External tools some tests use to check our output (tmux, promtool,
//! b3sum): where one is missing the test says so and skips that check,
//! unless `BLIXARD_TOOLS_REQUIRED` is set (CI sets it, and installs them),
//! so a check cannot silently stop running.

use std::process::{Command, Stdio};

/// True if `tool` runs (`tool --version`). If not: prints that `test`
/// skips it and returns false, or panics when `BLIXARD_TOOLS_REQUIRED` is
/// set. `install` says how to get it.
pub fn available(test: &str, tool: &str, install: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok() {
        return true;
    }
    if std::env::var_os("BLIXARD_TOOLS_REQUIRED").is_some() {
        panic!("{test}: BLIXARD_TOOLS_REQUIRED is set but `{tool}` is not installed ({install})");
    }
    eprintln!("SKIPPED {test}: `{tool}` is not installed ({install})");
    false
}
