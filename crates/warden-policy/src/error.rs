//! Validation errors that name the field, say what is wrong and what is allowed.

use std::fmt;

/// One problem with one field of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, as written in a policy file: `resources.memory`.
    pub field: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
}

/// Every problem found in a policy; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub errors: Vec<FieldError>,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            errors: vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

/// Collects field errors while validating, so one run reports them all.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub(crate) fn finish(self) -> Result<(), PolicyError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PolicyError { errors: self.0 })
        }
    }
}
