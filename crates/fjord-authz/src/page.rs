//! The login page of a standalone launch: the user says who they are and picks a patient.
//! There is no password: this is a development server, and says so.

use crate::LoginPrompt;

/// A person the page offers: an id and what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// The page, posting back to `action` with the request's parameters and the choices.
pub fn login_page(
    action: &str,
    prompt: &LoginPrompt,
    patients: &[Choice],
    practitioners: &[Choice],
) -> String {
    let mut hidden = String::new();
    for (name, value) in prompt.request.pairs() {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(value)
        ));
    }
    let patient_field = if prompt.needs_patient {
        let mut options = String::new();
        for p in patients {
            options.push_str(&format!(
                "<option value=\"{}\">{}</option>\n",
                escape(&p.id),
                escape(&p.label)
            ));
        }
        format!(
            "<label for=\"patient\">Patient</label>\n<select id=\"patient\" name=\"patient\" \
             required>\n{options}</select>\n"
        )
    } else {
        String::new()
    };
    let mut users = String::from("<option value=\"\">(no user resource)</option>\n");
    for p in practitioners {
        users.push_str(&format!(
            "<option value=\"Practitioner/{}\">{}</option>\n",
            escape(&p.id),
            escape(&p.label)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Fjord development sign-in</title></head>\n<body>\n\
         <h1>Fjord development sign-in</h1>\n\
         <p>This is Fjord's development authorization server: anyone who reaches it may sign in \
         as anyone. Do not use it with real patients.</p>\n\
         <p><strong>{client}</strong> asks for: <code>{scope}</code></p>\n\
         <form method=\"post\" action=\"{action}\">\n{hidden}\
         <label for=\"fhir_user\">Sign in as</label>\n\
         <select id=\"fhir_user\" name=\"fhir_user\">\n{users}</select>\n\
         {patient_field}<button type=\"submit\" id=\"approve\">Approve</button>\n\
         </form>\n</body></html>\n",
        client = escape(&prompt.client_name),
        scope = escape(&prompt.scope),
        action = escape(action),
    )
}

/// The page that tells a user why a request was refused.
pub fn refusal_page(reason: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Authorization refused</title></head>\n<body><h1>Authorization refused</h1>\
         <p>{}</p></body></html>\n",
        escape(reason)
    )
}

/// Text safe in HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
