//! The `/model` first-line command.
//!
//! A user may start their last message with `/model backend,model` (or `/model model`) to
//! pick a backend and model by hand, as chat front ends that cannot set `model` do. The
//! line is stripped before the prompt goes upstream, so the model never sees it.

use thiserror::Error;

/// What the command asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCommand {
    /// `/model backend,model`: both chosen explicitly.
    BackendModel {
        /// Backend name.
        backend: String,
        /// Model name (catalogue name or an upstream name passed as is).
        model: String,
    },
    /// `/model model`: resolved like a requested model.
    Model(String),
}

/// A parsed command and where the rest of the message starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    /// The command.
    pub command: ModelCommand,
    /// Byte offset in the message text where the prompt continues after the command line.
    pub rest_offset: usize,
}

/// A `/model` line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// Nothing after `/model`.
    #[error("the /model command needs an argument: `/model backend,model` or `/model model`")]
    Empty,
    /// One side of the comma is blank.
    #[error("malformed /model command {0:?}: expected `/model backend,model`")]
    Malformed(String),
}

/// Parses a `/model` command on the first line of `text`.
///
/// Returns `Ok(None)` when the text does not start with one (including words that merely
/// begin with `/model`, such as `/models`).
pub fn parse(text: &str) -> Result<Option<ParsedCommand>, CommandError> {
    let Some(after) = text.strip_prefix("/model") else {
        return Ok(None);
    };
    let line_end = after.find('\n').unwrap_or(after.len());
    let line = after[..line_end].trim_end_matches('\r');
    if !line.is_empty() && !line.starts_with([' ', '\t']) {
        return Ok(None);
    }
    let rest_offset = "/model".len() + (line_end + 1).min(after.len());
    let arg = line.trim();
    if arg.is_empty() {
        return Err(CommandError::Empty);
    }
    let command = match arg.split_once(',') {
        Some((backend, model)) => {
            let (backend, model) = (backend.trim(), model.trim());
            if backend.is_empty() || model.is_empty() || model.contains(',') {
                return Err(CommandError::Malformed(arg.to_owned()));
            }
            ModelCommand::BackendModel {
                backend: backend.to_owned(),
                model: model.to_owned(),
            }
        }
        None => ModelCommand::Model(arg.to_owned()),
    };
    Ok(Some(ParsedCommand {
        command,
        rest_offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(backend: &str, model: &str) -> ModelCommand {
        ModelCommand::BackendModel {
            backend: backend.into(),
            model: model.into(),
        }
    }

    #[test]
    fn backend_and_model_with_prompt_following() {
        let text = "/model beta, gpt-x \nWhat is 2+2?";
        let p = parse(text).unwrap().unwrap();
        assert_eq!(p.command, bm("beta", "gpt-x"));
        assert_eq!(&text[p.rest_offset..], "What is 2+2?");
    }

    #[test]
    fn crlf_and_command_only_messages() {
        let text = "/model alpha,echo\r\nhi";
        let p = parse(text).unwrap().unwrap();
        assert_eq!(&text[p.rest_offset..], "hi");
        let only = "/model alpha,echo";
        let p = parse(only).unwrap().unwrap();
        assert_eq!(&only[p.rest_offset..], "");
    }

    #[test]
    fn model_only() {
        let p = parse("/model mini\nhello").unwrap().unwrap();
        assert_eq!(p.command, ModelCommand::Model("mini".into()));
    }

    #[test]
    fn not_a_command() {
        assert_eq!(parse("hello /model a,b").unwrap(), None);
        assert_eq!(parse("/models are great").unwrap(), None);
        assert_eq!(parse(" /model a,b").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn malformed_commands_are_errors() {
        assert_eq!(parse("/model\nhi"), Err(CommandError::Empty));
        assert_eq!(parse("/model   "), Err(CommandError::Empty));
        assert!(matches!(
            parse("/model ,x"),
            Err(CommandError::Malformed(_))
        ));
        assert!(matches!(
            parse("/model a,"),
            Err(CommandError::Malformed(_))
        ));
        assert!(matches!(
            parse("/model a,b,c"),
            Err(CommandError::Malformed(_))
        ));
    }
}
