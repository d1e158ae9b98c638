//! Chat templates. Real templates are Jinja; we recognise the ChatML family (SmolLM2, Qwen) and
//! render it directly rather than embedding a template engine.

#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` turns; `default_system` is inserted when the
    /// caller gives none, as the model's own template does.
    ChatMl { default_system: Option<String> },
    /// Llama 3: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` turns after
    /// `<|begin_of_text|>`.
    Llama3 { default_system: Option<String> },
    /// No known template: the user text is used as is.
    Raw,
}

impl ChatTemplate {
    /// Recognises the template from its Jinja source (and the vocabulary, for files without one).
    pub fn detect(jinja: &str, has_token: impl Fn(&str) -> bool) -> Self {
        if jinja.contains("<|im_start|>") || (jinja.is_empty() && has_token("<|im_start|>")) {
            let default_system = default_system_of(jinja);
            ChatTemplate::ChatMl { default_system }
        } else if jinja.contains("<|start_header_id|>") || (jinja.is_empty() && has_token("<|start_header_id|>")) {
            ChatTemplate::Llama3 { default_system: None }
        } else {
            ChatTemplate::Raw
        }
    }

    pub fn render(&self, user: &str, system: Option<&str>) -> String {
        match self {
            ChatTemplate::Raw => user.to_string(),
            ChatTemplate::ChatMl { default_system } => {
                let mut s = String::new();
                if let Some(sys) = system.or(default_system.as_deref()) {
                    s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                }
                s.push_str(&format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"));
                s
            }
            ChatTemplate::Llama3 { default_system } => {
                let turn =
                    |role: &str, text: &str| format!("<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>");
                let mut s = String::from("<|begin_of_text|>");
                if let Some(sys) = system.or(default_system.as_deref()) {
                    s.push_str(&turn("system", sys));
                }
                s.push_str(&turn("user", user));
                s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                s
            }
        }
    }
}

/// The literal system prompt a ChatML template inserts when the conversation has none: the text
/// between `<|im_start|>system\n` and `<|im_end|>` inside a string literal of the template.
fn default_system_of(jinja: &str) -> Option<String> {
    let marker = "<|im_start|>system\n";
    let start = jinja.find(marker)? + marker.len();
    let rest = &jinja[start..];
    let end = rest.find("<|im_end|>")?;
    let text = &rest[..end];
    // A template that splices the caller's message here has no literal default.
    if text.contains("{{") || text.contains("{%") || text.contains('\'') || text.contains('"') {
        return None;
    }
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm_template_renders_default_system_prompt() {
        let jinja = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n'}}";
        let t = ChatTemplate::detect(jinja, |_| false);
        assert_eq!(t, ChatTemplate::ChatMl { default_system: Some("You are SmolLM".into()) });
        assert_eq!(
            t.render("hi", None),
            "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(t.render("hi", Some("S")).starts_with("<|im_start|>system\nS<|im_end|>"));
    }

    #[test]
    fn llama3_template_is_recognised() {
        let t = ChatTemplate::detect("{{ '<|start_header_id|>' + message['role'] }}", |_| false);
        assert_eq!(
            t.render("hi", None),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn unknown_template_is_raw() {
        assert_eq!(ChatTemplate::detect("{{ bos_token }}", |_| false).render("x", None), "x");
    }
}
