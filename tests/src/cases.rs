//! Many small cases against one node: each runs even when an earlier one failed, and
//! the test fails at the end with the list of every case that did.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Named cases and the failures among them.
#[derive(Debug, Default)]
pub struct Cases {
    failures: Vec<String>,
    n_cases: usize,
}

impl Cases {
    pub fn new() -> Cases {
        Cases::default()
    }

    /// Runs one case; a panic inside it is recorded (and printed by the panic hook)
    /// rather than ending the test.
    pub fn run(&mut self, name: &str, case: impl FnOnce()) {
        self.n_cases += 1;
        eprintln!("case: {name}");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(case)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned());
            self.failures.push(format!("{name}: {message}"));
        }
    }

    /// Panics listing every failed case, if any failed.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n- {}",
            self.failures.len(),
            self.n_cases,
            self.failures.join("\n- ")
        );
    }
}
