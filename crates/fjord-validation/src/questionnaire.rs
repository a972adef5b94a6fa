//! A QuestionnaireResponse against its Questionnaire: every answered item is one of the
//! questionnaire's (by `linkId`, at the same level), its answers are of the item's type, one
//! unless the item repeats, among the item's answer options where it lists them; a completed
//! response answers every required item (those shown only under `enableWhen` aside).

use serde_json::Value;

use crate::conformance::Conformance;
use crate::{Issue, IssueType, Severity};

/// The issues of `response` against `questionnaire`.
pub fn check_response(
    response: &Value,
    questionnaire: &Value,
    conformance: Option<&Conformance>,
) -> Vec<Issue> {
    let mut check = Check {
        issues: Vec::new(),
        completed: response["status"] == "completed",
        conformance,
    };
    check.level(
        items(&questionnaire["item"]),
        items(&response["item"]),
        "QuestionnaireResponse",
    );
    check.issues
}

struct Check<'c> {
    issues: Vec<Issue>,
    completed: bool,
    conformance: Option<&'c Conformance>,
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

impl Check<'_> {
    fn error(&mut self, code: IssueType, path: &str, message: String) {
        self.issues
            .push(Issue::new(Severity::Error, code, path, message));
    }

    /// The response's items at one level against the questionnaire's items there.
    fn level(&mut self, defined: &[Value], answered: &[Value], path: &str) {
        for (index, item) in answered.iter().enumerate() {
            let at = format!("{path}.item[{index}]");
            let link_id = item["linkId"].as_str().unwrap_or_default();
            let Some(definition) = defined.iter().find(|d| d["linkId"] == link_id) else {
                let message =
                    format!("linkId '{link_id}' is not an item of the questionnaire here");
                self.error(IssueType::Structure, &at, message);
                continue;
            };
            let repeats = definition["repeats"] == true;
            let same = answered.iter().filter(|i| i["linkId"] == link_id).count();
            if same > 1
                && !repeats
                && answered.iter().position(|i| i["linkId"] == link_id) == Some(index)
            {
                let message = format!("item '{link_id}' does not repeat, but is here {same} times");
                self.error(IssueType::Structure, &at, message);
            }
            self.item(definition, item, &at);
        }
        if !self.completed {
            return;
        }
        for definition in defined {
            let required = definition["required"] == true && !definition["enableWhen"].is_array();
            let link_id = definition["linkId"].as_str().unwrap_or_default();
            let present = answered.iter().any(|i| {
                i["linkId"] == link_id && (i["answer"].is_array() || i["item"].is_array())
            });
            if required && !present {
                let message = format!("the required item '{link_id}' is not answered");
                self.error(IssueType::Required, path, message);
            }
        }
    }

    fn item(&mut self, definition: &Value, item: &Value, at: &str) {
        let kind = definition["type"].as_str().unwrap_or_default();
        let answers = items(&item["answer"]);
        if matches!(kind, "group" | "display") && !answers.is_empty() {
            let message = format!("a {kind} item has no answers");
            self.error(IssueType::Structure, at, message);
        }
        if answers.len() > 1 && definition["repeats"] != true {
            let message = format!(
                "item '{}' takes one answer, not {}",
                definition["linkId"].as_str().unwrap_or_default(),
                answers.len()
            );
            self.error(IssueType::Structure, at, message);
        }
        for (index, answer) in answers.iter().enumerate() {
            let answer_at = format!("{at}.answer[{index}]");
            self.answer(definition, answer, &answer_at);
            // Questions may have items below their answers.
            self.level(
                items(&definition["item"]),
                items(&answer["item"]),
                &answer_at,
            );
        }
        self.level(items(&definition["item"]), items(&item["item"]), at);
    }

    fn answer(&mut self, definition: &Value, answer: &Value, at: &str) {
        let kind = definition["type"].as_str().unwrap_or_default();
        let Some((key, value)) = answer
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
        else {
            return;
        };
        let allowed: &[&str] = match kind {
            "boolean" => &["valueBoolean"],
            "decimal" => &["valueDecimal"],
            "integer" => &["valueInteger"],
            "date" => &["valueDate"],
            "dateTime" => &["valueDateTime"],
            "time" => &["valueTime"],
            "string" | "text" => &["valueString"],
            "url" => &["valueUri"],
            "choice" | "open-choice" => &[
                "valueCoding",
                "valueString",
                "valueInteger",
                "valueDate",
                "valueTime",
                "valueReference",
            ],
            "attachment" => &["valueAttachment"],
            "reference" => &["valueReference"],
            "quantity" => &["valueQuantity"],
            _ => return,
        };
        if !allowed.contains(&key.as_str()) {
            let message = format!(
                "item '{}' is a {kind}: {key} is not an answer to it",
                definition["linkId"].as_str().unwrap_or_default()
            );
            self.error(IssueType::Value, at, message);
            return;
        }
        let open = kind == "open-choice";
        if let Some(options) = definition["answerOption"].as_array() {
            let listed = options
                .iter()
                .any(|option| option.get(key).is_some_and(|o| same_answer(o, value)));
            let free_text = open && key == "valueString";
            if !(listed || free_text) {
                let message = format!("{value} is not one of the item's answer options");
                self.error(IssueType::CodeInvalid, at, message);
            }
        } else if let (Some(url), "valueCoding") =
            (definition["answerValueSet"].as_str(), key.as_str())
        {
            let expansion = self.conformance.and_then(|c| c.expand(url));
            let known = expansion.map(|e| {
                e.contains(
                    value["system"].as_str().unwrap_or_default(),
                    value["code"].as_str().unwrap_or_default(),
                )
            });
            if known == Some(false) && !open {
                let message = format!("{value} is not in the item's value set {url}");
                self.error(IssueType::CodeInvalid, at, message);
            }
        }
    }
}

/// A Coding answers an option with the same system and code; other values must be equal.
fn same_answer(option: &Value, answer: &Value) -> bool {
    match (option.get("code"), answer.get("code")) {
        (Some(code), Some(given)) => code == given && option.get("system") == answer.get("system"),
        _ => option == answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn questionnaire() -> Value {
        json!({
            "resourceType": "Questionnaire", "status": "active",
            "item": [
                { "linkId": "breath", "type": "boolean", "required": true },
                { "linkId": "colour", "type": "choice", "answerOption": [
                    { "valueCoding": { "system": "urn:colour", "code": "white" } },
                    { "valueCoding": { "system": "urn:colour", "code": "green" } },
                ] },
                { "linkId": "temperature", "type": "decimal", "enableWhen": [{ "question": "breath", "operator": "=", "answerBoolean": true }], "required": true },
                { "linkId": "symptoms", "type": "group", "item": [
                    { "linkId": "cough", "type": "string", "repeats": true },
                ] },
            ],
        })
    }

    fn codes(response: &Value) -> Vec<(String, IssueType)> {
        check_response(response, &questionnaire(), None)
            .into_iter()
            .map(|i| (i.expression, i.code))
            .collect()
    }

    #[test]
    fn answers_follow_the_questionnaire() {
        let good = json!({
            "resourceType": "QuestionnaireResponse", "status": "completed",
            "item": [
                { "linkId": "breath", "answer": [{ "valueBoolean": false }] },
                { "linkId": "colour", "answer": [{ "valueCoding": { "system": "urn:colour", "code": "green", "display": "Grønn" } }] },
                { "linkId": "symptoms", "item": [{ "linkId": "cough", "answer": [{ "valueString": "dry" }, { "valueString": "night" }] }] },
            ],
        });
        assert_eq!(codes(&good), []);

        let bad = json!({
            "resourceType": "QuestionnaireResponse", "status": "completed",
            "item": [
                { "linkId": "colour", "answer": [
                    { "valueCoding": { "system": "urn:colour", "code": "red" } },
                    { "valueString": "red" },
                ] },
                { "linkId": "unknown", "answer": [{ "valueString": "x" }] },
                { "linkId": "symptoms", "item": [{ "linkId": "cough", "answer": [{ "valueInteger": 3 }] }] },
            ],
        });
        assert_eq!(
            codes(&bad),
            [
                (
                    "QuestionnaireResponse.item[0]".to_owned(),
                    IssueType::Structure
                ),
                (
                    "QuestionnaireResponse.item[0].answer[0]".to_owned(),
                    IssueType::CodeInvalid
                ),
                (
                    "QuestionnaireResponse.item[0].answer[1]".to_owned(),
                    IssueType::CodeInvalid
                ),
                (
                    "QuestionnaireResponse.item[1]".to_owned(),
                    IssueType::Structure
                ),
                (
                    "QuestionnaireResponse.item[2].item[0].answer[0]".to_owned(),
                    IssueType::Value
                ),
                ("QuestionnaireResponse".to_owned(), IssueType::Required),
            ]
        );
        // In progress, a required item may still be missing.
        let mut in_progress = bad.clone();
        in_progress["status"] = "in-progress".into();
        assert!(!codes(&in_progress)
            .iter()
            .any(|(_, c)| *c == IssueType::Required));
    }
}
