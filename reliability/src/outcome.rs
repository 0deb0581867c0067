//! The result of one scenario: a pass/fail line with a figure.

use std::fmt;

/// What one scenario found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name, as on the command line.
    pub name: String,
    /// Whether every promise held.
    pub passed: bool,
    /// The measured figure, on one line.
    pub figure: String,
    /// Why it failed (or notes), one entry per line; printed indented below
    /// the pass/fail line.
    pub details: Vec<String>,
}

impl Outcome {
    /// A new outcome that passes until a check fails.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            figure: String::new(),
            details: Vec::new(),
        }
    }

    /// Records a check: when `ok` is false the scenario fails and `what`
    /// says why.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        if !ok {
            self.passed = false;
            self.details.push(format!("violated: {}", what.into()));
        }
        ok
    }

    /// Adds a note that does not change the verdict.
    pub fn note(&mut self, what: impl Into<String>) {
        self.details.push(format!("note: {}", what.into()));
    }

    /// An outcome for a scenario that could not run at all.
    pub fn error(name: impl Into<String>, error: &anyhow::Error) -> Self {
        let mut outcome = Self::new(name);
        outcome.passed = false;
        outcome.figure = "could not run".into();
        outcome.details.push(format!("error: {error:#}"));
        outcome
    }

    /// The outcome a scenario produced, or, when it could not run to the
    /// end, a failed outcome named `name` that carries the error.
    pub fn or_error(name: impl Into<String>, result: anyhow::Result<Self>) -> Self {
        result.unwrap_or_else(|error| Self::error(name, &error))
    }

    /// The same outcome, named for a run on another server (`valkey`): a
    /// trailing `-redis` is replaced by `-<server>`, and any other name gets
    /// `-<server>` appended, so that the runs of one scenario on Redis and
    /// on Valkey are separate verdict lines.
    #[must_use]
    pub fn on_server(mut self, server: &str) -> Self {
        let base = self.name.strip_suffix("-redis").unwrap_or(&self.name);
        self.name = format!("{base}-{server}");
        self
    }

    /// Appends `part` to the figure, separated by "; ".
    pub fn figure(&mut self, part: impl AsRef<str>) {
        if !self.figure.is_empty() {
            self.figure.push_str("; ");
        }
        self.figure.push_str(part.as_ref());
    }

    /// The one-line verdict, `PASS|FAIL <name>: <figure>`.
    pub fn line(&self) -> String {
        format!(
            "{} {}: {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.name,
            self.figure
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())?;
        for detail in &self.details {
            write!(f, "\n    {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_on_another_server_gets_its_own_name() {
        assert_eq!(
            Outcome::new("race-delete-update-redis")
                .on_server("valkey")
                .name,
            "race-delete-update-valkey"
        );
        assert_eq!(
            Outcome::new("bad-stored-values").on_server("valkey").name,
            "bad-stored-values-valkey"
        );
    }
}
