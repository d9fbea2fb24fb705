//! One line for an error and its causes, as the binaries print it: each cause once. Many
//! errors already put their source in their own message (`open X: {source}`), so a cause
//! whose text is already in the line is not appended again.

use std::error::Error;

/// `e` and each of its sources not already part of the text, joined by `: `.
pub fn error_line(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("open /x: {0}")]
    struct Open(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("pull base@1")]
    struct Pull(#[source] Open);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(error_line(&Open(io())), "open /x: no such file");
        assert_eq!(
            error_line(&Pull(Open(io()))),
            "pull base@1: open /x: no such file"
        );
    }
}
