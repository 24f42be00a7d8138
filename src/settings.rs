//! Function settings from the environment (template.yaml sets them): a
//! missing or malformed one is an error that names it.

#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct SettingError {
    pub name: &'static str,
    pub problem: String,
}

pub fn setting(name: &'static str) -> Result<String, SettingError> {
    std::env::var(name).map_err(|_| SettingError {
        name,
        problem: "is not set".into(),
    })
}

pub fn number_setting(name: &'static str, default: u64) -> Result<u64, SettingError> {
    number(name, std::env::var(name).ok(), default)
}

/// `value` as a whole number, `default` when absent.
pub fn number(
    name: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<u64, SettingError> {
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| SettingError {
            name,
            problem: format!("{text:?} is not a whole number"),
        }),
    }
}
