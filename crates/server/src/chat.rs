//! A conversation of several messages through the model's chat template.

use crate::api::{ChatMessage, MessageContent};
use crate::error::ApiError;
use minference_model::ChatTemplate;

/// The text of one message (text parts joined; other parts are refused).
fn content_text(m: &ChatMessage) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(MessageContent::Text(t)) => Ok(t.clone()),
        Some(MessageContent::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::bad_param(
                            "messages",
                            format!("content parts of type `{kind}` are not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Renders `messages` with `template`, ending with the assistant's turn opened.
pub fn render(template: &ChatTemplate, messages: &[ChatMessage]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param("messages", "`messages` must hold at least one message"));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("unknown role `{other}` (system, developer, user, assistant or tool)"),
                ))
            }
        };
        turns.push((role, content_text(m)?));
    }
    let has_system = turns.first().is_some_and(|t| t.0 == "system");
    Ok(match template {
        ChatTemplate::Raw => turns.iter().map(|t| t.1.as_str()).collect::<Vec<_>>().join("\n"),
        ChatTemplate::ChatMl { default_system } => {
            let mut s = String::new();
            if let (false, Some(sys)) = (has_system, default_system) {
                s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
            }
            for (role, text) in &turns {
                s.push_str(&format!("<|im_start|>{role}\n{text}<|im_end|>\n"));
            }
            s.push_str("<|im_start|>assistant\n");
            s
        }
        ChatTemplate::Llama3 { default_system } => {
            let turn =
                |role: &str, text: &str| format!("<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>");
            let mut s = String::from("<|begin_of_text|>");
            if let (false, Some(sys)) = (has_system, default_system) {
                s.push_str(&turn("system", sys));
            }
            for (role, text) in &turns {
                s.push_str(&turn(if *role == "tool" { "ipython" } else { role }, text));
            }
            s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, text: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: Some(MessageContent::Text(text.into())) }
    }

    #[test]
    fn one_user_message_renders_as_the_model_crate_does() {
        for t in [
            ChatTemplate::ChatMl { default_system: Some("You are SmolLM".into()) },
            ChatTemplate::ChatMl { default_system: None },
            ChatTemplate::Llama3 { default_system: None },
            ChatTemplate::Raw,
        ] {
            assert_eq!(render(&t, &[msg("user", "hi")]).ok(), Some(t.render("hi", None)));
            if t != ChatTemplate::Raw {
                let with_system = render(&t, &[msg("system", "S"), msg("user", "hi")]).ok();
                assert_eq!(with_system, Some(t.render("hi", Some("S"))));
            }
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        let t = ChatTemplate::Raw;
        assert!(render(&t, &[]).is_err());
        assert!(render(&t, &[msg("wizard", "x")]).is_err());
    }
}
