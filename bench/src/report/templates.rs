//! The report's prose: one Markdown template per section under
//! `templates/`, compiled into the binary and filled with minijinja.
//!
//! The sections need more than substitution: a section that was not run
//! says so instead of its paragraphs, the Redis and local sections repeat a
//! heading and a table per operation, and some sentences appear only when a
//! figure calls for them. A hand-written engine would have to grow
//! conditionals and loops, so the report uses minijinja (no unsafe code, no
//! dependencies with the features used here) with its default syntax, which reads as
//! Markdown with `{{ placeholders }}` and `{% if %}` lines.
//!
//! The division of work: Rust computes and formats every number and builds
//! every table (see `format`); a template holds only sentences, headings
//! and where the tables go. Each template renders its section ending with
//! one newline, and the report puts a blank line after each section.

use anyhow::{Context, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// Every section's template, by the name the sections render it by.
const TEMPLATES: [(&str, &str); 10] = [
    ("header.md", include_str!("templates/header.md")),
    ("targets.md", include_str!("templates/targets.md")),
    ("redis.md", include_str!("templates/redis.md")),
    ("local.md", include_str!("templates/local.md")),
    ("memory.md", include_str!("templates/memory.md")),
    ("codec.md", include_str!("templates/codec.md")),
    ("gateway.md", include_str!("templates/gateway.md")),
    ("owned.md", include_str!("templates/owned.md")),
    ("layer.md", include_str!("templates/layer.md")),
    ("loadavg.md", include_str!("templates/loadavg.md")),
];

/// The compiled templates.
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every template; an error here is a syntax error in one of
    /// them, which the tests catch before a run does.
    pub(crate) fn new() -> Result<Self> {
        let mut env = Environment::new();
        // A block tag on a line of its own leaves no blank line behind, so
        // `{% if %}` lines can stand where they read best.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .context("the template syntax is invalid")?;
        env.set_syntax(syntax);
        // Markdown needs no escaping, and a misspelt placeholder must fail
        // the render rather than leave a gap in the report.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .with_context(|| format!("template {name} does not compile"))?;
        }
        Ok(Self { env })
    }

    /// Renders the template `name` with `context`.
    pub(crate) fn render(&self, name: &str, context: Value) -> Result<String> {
        self.env
            .get_template(name)
            .and_then(|template| template.render(context))
            .with_context(|| format!("cannot render template {name}"))
    }

    /// Renders a one-line template kept beside the data it describes (a
    /// target's name or measured column).
    pub(crate) fn render_line(&self, source: &str, context: Value) -> Result<String> {
        self.env
            .render_str(source, context)
            .with_context(|| format!("cannot render {source:?}"))
    }
}
