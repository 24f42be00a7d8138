//! How big what people send may be. A DynamoDB item holds at most 400 KB
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>);
//! a deployment's spec travels in its state item and in every hook event,
//! and an execution carries its whole definition. What is over a bound is
//! refused when it is sent, with the field and the bound named: never
//! written, to fail later in a worker.

/// A reason, a comment: a sentence or a paragraph.
pub const MAX_TEXT_CHARS: usize = 1_000;
/// A deployment spec as JSON (longer smoke-test suites go in S3: `smoke_tests_from`).
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// A pipeline definition as sent (YAML or JSON).
pub const MAX_DEFINITION_BYTES: usize = 100 * 1024;
/// An operator API request body: room for any of the above, and no more.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Refuses a text field longer than `MAX_TEXT_CHARS`.
pub fn text(field: &str, value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "{field} is {chars} characters long: the most is {MAX_TEXT_CHARS}"
        ));
    }
    Ok(())
}

/// Refuses `what` if it is longer than `max` bytes.
pub fn bytes(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("{what} is {len} bytes: the most is {max}"));
    }
    Ok(())
}

/// `text` cut to `MAX_TEXT_CHARS`, marked as cut: for outside text that is
/// only shown (a commit message), which must not fail what carries it.
pub fn shortened(text: &str) -> String {
    shortened_to(text, MAX_TEXT_CHARS)
}

/// `text` cut to `max` characters, marked as cut (one more character).
pub fn shortened_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_field_and_the_limit() {
        assert_eq!(text("reason", &"é".repeat(MAX_TEXT_CHARS)), Ok(()));
        assert_eq!(
            text("reason", &"é".repeat(MAX_TEXT_CHARS + 1)),
            Err("reason is 1001 characters long: the most is 1000".into())
        );
        assert_eq!(bytes("the body", 10, 10), Ok(()));
        assert_eq!(
            bytes("the body", 11, 10),
            Err("the body is 11 bytes: the most is 10".into())
        );
    }

    #[test]
    fn shortened_text_keeps_whole_characters_and_says_it_was_cut() {
        assert_eq!(shortened("fix"), "fix");
        let long = "😀".repeat(MAX_TEXT_CHARS + 5);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(cut.ends_with("😀…"));
    }
}
