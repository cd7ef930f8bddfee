//! The one rule for a test whose component is missing: it fails, naming the component.
//!
//! Only a local run may opt out, component by component, with
//! `HOMELAB_TEST_ALLOW_MISSING=azurite,kubectl` (or `all`). A test that then finds its component
//! missing is skipped: it says so on the terminal (not through the captured test output, which
//! hides it) and in the run's log, and `hack/test-summary.sh` counts it as skipped, not passed.
//! On CI (`CI=true`) the opt-out is refused, so a missing component always fails the run.

use std::fmt;
use std::io::Write;

/// Components a local run may do without: `azurite`, `kubectl` or `all`, comma-separated.
pub const ENV_ALLOW_MISSING: &str = "HOMELAB_TEST_ALLOW_MISSING";
/// The prefix of the line a skipped test writes; `hack/test-summary.sh` counts these lines.
pub const SKIPPED_PREFIX: &str = "SKIPPED ";

/// A component tests need that may be absent from a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Azurite's `azurite-blob` (hack/install-azurite.sh installs it).
    Azurite,
    /// A `kubectl` beside the control-plane binaries or on `PATH`.
    Kubectl,
}

impl Component {
    /// The name `HOMELAB_TEST_ALLOW_MISSING` lists it by.
    pub fn name(self) -> &'static str {
        match self {
            Component::Azurite => "azurite",
            Component::Kubectl => "kubectl",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Component::Azurite => "install it with `bash hack/install-azurite.sh`",
            Component::Kubectl => "build it with `bash hack/build-control-plane.sh`",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether `allow` (the value of [`ENV_ALLOW_MISSING`]) lets a test go without `component`.
fn allows(allow: &str, component: Component) -> bool {
    allow
        .split(',')
        .map(str::trim)
        .any(|name| name == "all" || name == component.name())
}

/// Whether this run may go without `component`: a local run (not CI) that listed it in
/// [`ENV_ALLOW_MISSING`].
pub fn opted_out(component: Component) -> bool {
    !on_ci()
        && allows(
            &std::env::var(ENV_ALLOW_MISSING).unwrap_or_default(),
            component,
        )
}

/// Called by test `test` when `component` is missing (`reason` says how it was looked for).
/// Returns, after recording the skip, only when a local run opted out of `component`; panics
/// with a message naming the component otherwise, and always on CI.
///
/// # Panics
///
/// Unless the run opted out of `component`; for use in tests.
pub fn missing(test: &str, component: Component, reason: &dyn fmt::Display) {
    let allow = std::env::var(ENV_ALLOW_MISSING).unwrap_or_default();
    let opted_out = allows(&allow, component);
    if opted_out && on_ci() {
        panic!(
            "{test}: {component} is missing ({reason}), and {ENV_ALLOW_MISSING}={allow} is not \
             honoured on CI: {}",
            component.install_hint()
        );
    }
    if !opted_out {
        panic!(
            "{test}: {component} is missing ({reason}): {}, or, for a local run only, set \
             {ENV_ALLOW_MISSING}={component} to skip the tests that need it",
            component.install_hint()
        );
    }
    // Straight to the process's stderr: libtest captures only the print macros' output.
    let line = format!("{SKIPPED_PREFIX}{test}: {component} is missing ({reason})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opt_out_names_components_or_all() {
        assert!(allows("azurite", Component::Azurite));
        assert!(allows("kubectl, azurite", Component::Azurite));
        assert!(allows("all", Component::Kubectl));
        assert!(!allows("", Component::Azurite));
        assert!(!allows("kubectl", Component::Azurite));
        assert!(!allows("azurite-blob", Component::Azurite));
    }
}
