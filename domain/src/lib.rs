//! The pure core: configs, schedules and state machines. No I/O here.

pub mod analysis;
pub mod config;
pub mod deployment;
pub mod execution;
pub mod hooks;
pub mod limits;
pub mod names;
pub mod pipeline;
pub mod smoke;

/// At most `max_bytes` of `text`, cut at a character boundary: outside input
/// shown in a message or an id may be any UTF-8.
pub fn clip(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_never_splits_a_character() {
        assert_eq!(super::clip("abcdef", 3), "abc");
        assert_eq!(super::clip("ab", 7), "ab");
        assert_eq!(super::clip("aé😀", 2), "a");
        assert_eq!(super::clip("aé😀", 4), "aé");
        assert_eq!(super::clip("aé😀", 7), "aé😀");
    }
}
